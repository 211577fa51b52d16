"""The simulation script (what simulated leads do and when) and the simulated leads' addresses."""

from __future__ import annotations

import base64
import math
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from leadflow.content.fields import Duration, Strict
from leadflow.content.yamlfile import YamlFile
from leadflow.intake.ingest import PHONE_PATTERN, LeadIn
from leadflow.messaging.push_subscriptions import PushSubscriptionIn

SIMULATED_DOMAIN = "simulation.test"


class ScriptEvent(Strict):
    at: Duration
    type: str
    properties: dict[str, Any] = Field(default_factory=dict)
    dates: dict[str, Duration] = Field(
        default_factory=dict,
        description="properties holding the simulation's start plus this long, as ISO 8601 (a webinar's date)",
    )
    share: float = Field(default=1.0, ge=0, le=1, description="the share of leads that do it")
    leads: list[int] | None = Field(default=None, description="only these leads (numbered from 1)")

    def properties_at(self, start: datetime) -> dict[str, Any]:
        return {
            **self.properties,
            **{name: (start + after).isoformat() for name, after in self.dates.items()},
        }

    def done_by(self, number: int, leads: int) -> bool:
        if self.leads is not None:
            return number in self.leads
        return number <= math.floor(leads * self.share + 0.5)


def _lead_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A simulated lead's fields: properties, plus `phone` (E.164) and `push` (true: a browser subscribed)."""
    phone, push = fields.get("phone"), fields.get("push")
    if phone is not None and not (isinstance(phone, str) and re.match(PHONE_PATTERN, phone)):
        raise ValueError(f"phone {phone!r} is not an E.164 number such as +14155550100")
    if push is not None and not isinstance(push, bool):
        raise ValueError(f"push must be true or false, not {push!r}")
    return fields


class Script(Strict):
    lead: Annotated[dict[str, Any], AfterValidator(_lead_fields)] = Field(default_factory=dict)
    lead_overrides: dict[int, Annotated[dict[str, Any], AfterValidator(_lead_fields)]] = Field(
        default_factory=dict, description="fields of single leads, by number"
    )
    horizon: Duration = timedelta(days=30)
    events: list[ScriptEvent] = Field(min_length=1)

    def lead_in(self, number: int, email: str) -> tuple[LeadIn, bool]:
        """Lead `number` as it starts, and whether its browser is subscribed to push."""
        fields = {**self.lead, **self.lead_overrides.get(number, {})}
        phone, push = fields.pop("phone", None), bool(fields.pop("push", False))
        return LeadIn(email=email, phone=phone, properties=fields), push


def load_script(path: Path) -> Script:
    """The script in `path`, or ContentErrors naming its file:line mistakes."""
    return YamlFile(path).parse(Script)  # JSON is YAML too


def simulated_subscription(email: str) -> PushSubscriptionIn:
    """A stand-in browser subscription (push consent with it): simulations never configure web push, so the
    push step is reached and skipped, like SMS."""
    keys = {
        "p256dh": base64.urlsafe_b64encode(b"\x04" + bytes(64)).rstrip(b"=").decode(),
        "auth": base64.urlsafe_b64encode(bytes(16)).rstrip(b"=").decode(),
    }
    endpoint = f"https://push.{SIMULATED_DOMAIN}/{email.partition('@')[0]}"
    return PushSubscriptionIn.model_validate(
        {"email": email, "subscription": {"endpoint": endpoint, "keys": keys}}
    )


def simulated_email(number: int) -> str:
    """Each simulated lead works for its own company: one shared account would make the whole simulation one
    hot account (every lead rescoring every colleague), which no real campaign looks like."""
    return f"lead{number:04d}@lead{number:04d}.{SIMULATED_DOMAIN}"
