"""sending.yaml: the send-time policy's content (quiet hours, frequency caps)."""

from __future__ import annotations

from datetime import time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from leadflow.content.fields import Strict
from leadflow.sequences.model import ClockTime


class FrequencyCap(Strict):
    per_day: int | None = Field(default=None, ge=1)  # rolling 24 hours
    per_week: int | None = Field(default=None, ge=1)  # rolling 7 days


class QuietHours(Strict):
    start: ClockTime = time(21, 0)
    end: ClockTime = time(8, 0)
    # Texts and notifications wake people; an email waits in the inbox, so it is not held by default.
    channels: list[Literal["email", "sms", "push"]] = Field(default_factory=lambda: ["sms", "push"])  # type: ignore[arg-type]


def _default_caps() -> dict[Literal["email", "sms", "push"], FrequencyCap]:
    return {
        "email": FrequencyCap(per_day=2, per_week=6),
        "sms": FrequencyCap(per_day=1, per_week=2),
        "push": FrequencyCap(per_day=2, per_week=5),
    }


class SendingPolicy(Strict):
    """sending.yaml: when any message of any sequence may go out; the one send-time policy. These defaults
    hold for what the file leaves out (no file: all of them); `quiet_hours: null` and `frequency_caps: {}`
    turn those off, and a `frequency_caps` given replaces the default caps whole."""

    default_timezone: str = "UTC"
    quiet_hours: QuietHours | None = QuietHours()
    frequency_caps: dict[Literal["email", "sms", "push"], FrequencyCap] = Field(default_factory=_default_caps)

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        if known_zone(name) is None:
            raise ValueError(f"unknown timezone {name!r} (use an IANA name like Europe/Paris)")
        return name


def known_zone(name: Any) -> ZoneInfo | None:
    """The IANA timezone called `name`, or None for anything else (a lead's property may hold anything)."""
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None
