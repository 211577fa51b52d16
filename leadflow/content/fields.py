"""Field types every content file shares (identifiers, durations, mailboxes) and the strict base model."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer

EVENT_TYPE = r"^[a-z][a-z0-9_]*$"
IDENTIFIER = r"^[a-z][a-z0-9_-]*$"
_MAILBOX = re.compile(r"^([^<>@\n]*<[^<>@\s]+@[^<>@\s]+>|[^<>@\s]+@[^<>@\s]+)$")
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """'30m', '3d', '2w' as a marketer writes them; seconds as numbers; other forms left to pydantic."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    if isinstance(value, str) and not value.upper().startswith("P"):
        raise ValueError(f"duration {value!r} is not like 30m, 12h, 3d or 2w")
    return value


def _mailbox(value: str) -> str:
    if not _MAILBOX.match(value.strip()):
        raise ValueError(f"{value!r} is not an address like ada@example.com or Ada <ada@example.com>")
    return value.strip()


Mailbox = Annotated[str, AfterValidator(_mailbox)]

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda delta: f"{int(delta.total_seconds())}s", return_type=str),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
