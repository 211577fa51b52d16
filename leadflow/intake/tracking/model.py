"""sites.yaml: the tracking snippet's public site keys, allowed origins and rate limits."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from leadflow.content.fields import EVENT_TYPE, IDENTIFIER, Strict

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
    double_opt_in: bool = Field(
        default=False,
        description="the snippet's identify never creates or links a lead: the site confirms the address "
        "itself and then calls POST /v1/identify",
    )
    events: list[Annotated[str, Field(pattern=EVENT_TYPE)]] = Field(
        default_factory=list, description="event types the site may send besides the snippet's own"
    )
    flush_seconds: float = Field(default=5.0, ge=0.5, le=60)
    identify_on_form_abandon: bool = Field(
        default=False,
        description="a tracked form left with a valid email typed in identifies the visitor with it "
        "(never without consent, never under Do-Not-Track or Global Privacy Control)",
    )
    service_worker: str = Field(
        default="/leadflow-sw.js",
        pattern=r"^/?[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)*\.js$",
        description="where the site's own origin serves the push service worker (a file whose one line is "
        "importScripts of Leadflow's /t/sw.js); a path, relative to the page unless it starts with /",
    )
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
    # Event types your own servers post to /v1/events (a CRM, the product): `leadflow check` then knows
    # something produces them, and does not warn about rules on them.
    server_events: list[Annotated[str, Field(pattern=EVENT_TYPE)]] = Field(default_factory=list)
