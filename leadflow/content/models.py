"""The marketer's language: scoring model, segments, sequences and the sales team, as validated models."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    model_validator,
)

from leadflow.content.conditions import PropertyFilter, PropertyTest

EVENT_TYPE = r"^[a-z][a-z0-9_]*$"
IDENTIFIER = r"^[a-z][a-z0-9_-]*$"
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """'30m', '3d', '2w' as a marketer writes them; seconds as numbers; other forms left to pydantic."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    if isinstance(value, str) and not value.upper().startswith("P"):
        raise ValueError(f"duration {value!r} is not like 30m, 12h, 3d or 2w")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda delta: f"{int(delta.total_seconds())}s", return_type=str),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- scoring -------------------------------------------------------------------------------------


class FitRule(PropertyTest):
    """Points for who the lead is: one property compared with the ideal customer profile."""

    rule: str
    property: str
    points: int


class BehaviorRule(Strict):
    """Points for what the lead did: each matching event, capped by `max` when given."""

    rule: str
    event: str = Field(pattern=EVENT_TYPE)
    where: PropertyFilter = Field(default_factory=dict)
    points: int
    max: int | None = Field(default=None, description="cap on this rule's total (absolute value)")


class Thresholds(Strict):
    mql: int
    sql: int

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.sql <= self.mql:
            raise ValueError(f"the sql threshold ({self.sql}) must be above the mql threshold ({self.mql})")
        return self


class ScoringModel(Strict):
    thresholds: Thresholds
    fit: list[FitRule] = Field(default_factory=list)
    behavior: list[BehaviorRule] = Field(default_factory=list)
    version: str = ""  # filled by the loader: a hash of the file


# --- segments ------------------------------------------------------------------------------------


class EventTrigger(Strict):
    event: str = Field(pattern=EVENT_TYPE)
    where: PropertyFilter = Field(default_factory=dict)


class Segment(Strict):
    id: str = Field(pattern=IDENTIFIER)
    name: str
    description: str = ""
    entry: EventTrigger


# --- sequences -----------------------------------------------------------------------------------


class SendAction(Strict):
    channel: Literal["email"]
    template: str


class SendStep(Strict):
    send: SendAction


class WaitStep(Strict):
    wait: Duration


STEP_KINDS = {"send": "SendStep", "wait": "WaitStep"}


def _step_kind(step: Any) -> str | None:
    """A step is known by its one key (`send:`, `wait:`), so a mistake inside it is reported for that kind."""
    keys = step.keys() if isinstance(step, dict) else [name for name in STEP_KINDS if hasattr(step, name)]
    return next((STEP_KINDS[key] for key in keys if key in STEP_KINDS), None)


Step = Annotated[
    Annotated[SendStep, Tag("SendStep")] | Annotated[WaitStep, Tag("WaitStep")],
    Discriminator(
        _step_kind,
        custom_error_type="unknown_step",
        custom_error_message=f"a step is one of: {', '.join(STEP_KINDS)}",
    ),
]


class Sequence(Strict):
    """A nurture sequence. The worker runs the snapshot taken at enrollment, never the file as it is now."""

    id: str = Field(pattern=IDENTIFIER)
    name: str
    segment: str
    goal: EventTrigger | None = None
    steps: list[Step] = Field(min_length=1)
    version: str = ""  # filled by the loader: a hash of the file


# --- sales ---------------------------------------------------------------------------------------


class Salesperson(Strict):
    name: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    team: str = "sales"
    available: bool = True


class SalesTeam(Strict):
    salespeople: list[Salesperson] = Field(min_length=1)


# --- websites (the tracking snippet's public site keys) ------------------------------------------

# A site's allowed origin: scheme://host[:port], where `*` stands for one DNS label or a port.
ORIGIN_PATTERN = r"^https?://(\*\.)?[A-Za-z0-9.-]+(:(\d+|\*))?$"
SITE_KEY = r"^pk_[A-Za-z0-9_]{8,64}$"


def _check_origin(origin: str) -> str:
    if not re.match(ORIGIN_PATTERN, origin):
        raise ValueError(
            f"origin {origin!r} is not like https://www.example.com, https://*.example.com "
            "or http://127.0.0.1:* (scheme, host and optional port; no path)"
        )
    return origin


Origin = Annotated[str, AfterValidator(_check_origin)]


class RateLimit(Strict):
    """A token bucket: `per_minute` requests a minute on average, up to `burst` at once."""

    per_minute: int = Field(gt=0)
    burst: int = Field(gt=0)


class Site(Strict):
    """A website that may send tracking events with its public key; a public key can never read data."""

    id: str = Field(pattern=IDENTIFIER)
    key: str = Field(pattern=SITE_KEY, description="public: it is pasted into the site's pages")
    name: str = ""
    origins: list[Origin] = Field(min_length=1)
    consent: Literal["required", "not_required"] = "not_required"
    honor_do_not_track: bool = True
    events: list[Annotated[str, Field(pattern=EVENT_TYPE)]] = Field(
        default_factory=list, description="event types the site may send besides the snippet's own"
    )
    flush_seconds: float = Field(default=5.0, ge=0.5, le=60)
    per_ip: RateLimit = RateLimit(per_minute=120, burst=60)
    per_key: RateLimit = RateLimit(per_minute=12_000, burst=2_000)

    def allows_origin(self, origin: str) -> bool:
        return any(_origin_regex(pattern).fullmatch(origin) for pattern in self.origins)


def _origin_regex(pattern: str) -> re.Pattern[str]:
    # `*.` is one DNS label (never a dot: *.example.com does not match evil.com.example.org), `:*` any port.
    escaped = re.escape(pattern).replace(r"\*\.", r"[A-Za-z0-9-]+\.").replace(r":\*", r":[0-9]+")
    return re.compile(escaped, re.IGNORECASE)


class Sites(Strict):
    sites: list[Site] = Field(default_factory=list)
