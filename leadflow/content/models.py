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
    channel: Literal["email", "sms", "push"]
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
    sender: Mailbox | None = Field(default=None, description="the From of its emails")
    reply_to: Mailbox | None = None
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
