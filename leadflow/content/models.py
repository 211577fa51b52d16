"""The marketer's language: scoring model, segments, sequences and the sales team, as validated models."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import time, timedelta
from typing import Annotated, Any, Literal, Union, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    field_validator,
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


# --- rules: segments' entry and exit, sequences' branches ------------------------------------------


class EventTrigger(Strict):
    """An event of this type whose properties pass `where`."""

    event: str = Field(pattern=EVENT_TYPE)
    where: PropertyFilter = Field(default_factory=dict)


class CountSpec(EventTrigger):
    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)
    within: Duration | None = None  # the sliding window ending now; none: all of the lead's history

    @model_validator(mode="after")
    def _bounded(self) -> CountSpec:
        if self.at_least is None and self.at_most is None:
            raise ValueError("a count needs at_least or at_most")
        if self.at_least is not None and self.at_most is not None and self.at_most < self.at_least:
            raise ValueError(
                f"at_most ({self.at_most}) is below at_least ({self.at_least}): it can never match"
            )
        return self


class AbsenceSpec(Strict):
    after: EventTrigger
    missing: EventTrigger
    within: Duration
    same: list[str] = Field(default_factory=list, description="properties the follow-up must share")


class EventRule(EventTrigger):
    """In a segment: one of the events that just arrived. In a branch: an event seen since enrollment."""


class CountRule(Strict):
    count: CountSpec


class AbsenceRule(Strict):
    """A trigger not followed by the expected event within the window; decided by a durable timer."""

    absence: AbsenceSpec


class PropertyRule(PropertyTest):
    property: str


class ScoreRule(Strict):
    score: PropertyTest | int  # a number means "at least"


Temperature = Literal["cold", "warm", "hot"]
StageName = Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified"]
TEMPERATURES: tuple[str, ...] = get_args(Temperature)
STAGES: tuple[str, ...] = get_args(StageName)


class TemperatureRule(Strict):
    temperature: PropertyTest | Temperature


class StageRule(Strict):
    stage: PropertyTest | StageName


class AllRule(Strict):
    all: list[Rule] = Field(min_length=1)


class AnyRule(Strict):
    any: list[Rule] = Field(min_length=1)


class NotRule(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    not_: Rule = Field(alias="not")


RULE_KINDS = {
    "event": "EventRule",
    "count": "CountRule",
    "absence": "AbsenceRule",
    "property": "PropertyRule",
    "score": "ScoreRule",
    "temperature": "TemperatureRule",
    "stage": "StageRule",
    "all": "AllRule",
    "any": "AnyRule",
    "not": "NotRule",
}
_RULE_ATTRIBUTES = {"not_": "not"}


def _kind_by_key(kinds: dict[str, str], aliases: dict[str, str]) -> Any:
    """A rule or step is known by its key (`count:`, `send:`), so a mistake inside it is reported for that
    kind; a parsed model (a snapshot re-validated) is known by its class."""

    def kind(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            return type(value).__name__ if type(value).__name__ in kinds.values() else None
        if isinstance(value, dict):
            keys = [aliases.get(key, key) for key in value]
            return next((kinds[key] for key in keys if key in kinds), None)
        return None

    return kind


def _union(kinds: dict[str, str], members: dict[str, Any], what: str) -> Any:
    return Annotated[
        Union[tuple(Annotated[members[name], Tag(name)] for name in kinds.values())],  # noqa: UP007
        Discriminator(
            _kind_by_key(kinds, _RULE_ATTRIBUTES),
            custom_error_type=f"unknown_{what}",
            custom_error_message=f"a {what} is one of: {', '.join(kinds)}",
        ),
    ]


Rule = _union(
    RULE_KINDS,
    {
        "EventRule": EventRule,
        "CountRule": CountRule,
        "AbsenceRule": AbsenceRule,
        "PropertyRule": PropertyRule,
        "ScoreRule": ScoreRule,
        "TemperatureRule": TemperatureRule,
        "StageRule": StageRule,
        "AllRule": AllRule,
        "AnyRule": AnyRule,
        "NotRule": NotRule,
    },
    "rule",
)
for _model in (AllRule, AnyRule, NotRule):
    _model.model_rebuild()


# --- segments ------------------------------------------------------------------------------------


class Segment(Strict):
    """Who is in it. Entry and exit are evaluated each time the lead's events arrive (and when an absence
    window closes); a lead without an `exit` rule stays a member once it entered."""

    id: str = Field(pattern=IDENTIFIER)
    name: str
    description: str = ""
    entry: Rule
    exit: Rule | None = None


# --- sequences -----------------------------------------------------------------------------------

CHANNELS = ("email", "sms", "push")


class SendAction(Strict):
    channel: Literal["email", "sms", "push"]
    template: str


class SendStep(Strict):
    send: SendAction


class WaitStep(Strict):
    wait: Duration


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _clock_time(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML reads 9:00 as sexagesimal 540
        return time(value // 60, value % 60) if 0 <= value < 24 * 60 else value
    if isinstance(value, str) and (match := _CLOCK.match(value.strip())):
        return time(int(match[1]), int(match[2]))
    if isinstance(value, str):
        raise ValueError(f"time {value!r} is not like 09:00 or 17:30")
    return value


ClockTime = Annotated[
    time, BeforeValidator(_clock_time), PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str)
]


class SendWindow(Strict):
    """A local window (in the lead's `timezone` property, else the sending policy's default timezone)."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: list(WEEKDAYS), min_length=1
    )
    start: ClockTime = time(9, 0)
    end: ClockTime = time(17, 0)

    @model_validator(mode="before")
    @classmethod
    def _weekdays(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("days") in ("weekdays", "weekend", "every day"):
            named = {"weekdays": WEEKDAYS[:5], "weekend": WEEKDAYS[5:], "every day": WEEKDAYS}
            data = {**data, "days": list(named[data["days"]])}
        return data

    @model_validator(mode="after")
    def _opens(self) -> SendWindow:
        if self.start == self.end:
            raise ValueError(
                "the window's start and end are equal: it never opens (a night window is 21:00 to 06:00)"
            )
        return self


class WaitUntilStep(Strict):
    wait_until: SendWindow


class Branch(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    if_: Rule = Field(alias="if")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")


class BranchStep(Strict):
    branch: Branch


class Variant(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    weight: float = Field(gt=0)
    steps: list[Step] = Field(default_factory=list)


class SplitStep(Strict):
    split: list[Variant] = Field(min_length=2)

    @model_validator(mode="after")
    def _distinct(self) -> SplitStep:
        names = [variant.name for variant in self.split]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {', '.join(names)}")
        return self


class GoalStep(Strict):
    """From here on this event ends the sequence as converted; reached after it happened, it ends it now."""

    goal: EventTrigger


STEP_KINDS = {
    "send": "SendStep",
    "wait": "WaitStep",
    "wait_until": "WaitUntilStep",
    "branch": "BranchStep",
    "split": "SplitStep",
    "goal": "GoalStep",
}

Step = _union(
    STEP_KINDS,
    {
        "SendStep": SendStep,
        "WaitStep": WaitStep,
        "WaitUntilStep": WaitUntilStep,
        "BranchStep": BranchStep,
        "SplitStep": SplitStep,
        "GoalStep": GoalStep,
    },
    "step",
)
for _model in (Branch, Variant):
    _model.model_rebuild()


Location = tuple[str | int, ...]


def walk_steps(steps: list[Step], at: Location = ("steps",)) -> Iterator[tuple[Location, Step]]:
    """Every step with where it is in the file (("steps", 4, "branch", "then", 0)), nested ones included."""
    for index, step in enumerate(steps):
        here = (*at, index)
        yield here, step
        if isinstance(step, BranchStep):
            yield from walk_steps(step.branch.then, (*here, "branch", "then"))
            yield from walk_steps(step.branch.else_, (*here, "branch", "else"))
        elif isinstance(step, SplitStep):
            for number, variant in enumerate(step.split):
                yield from walk_steps(variant.steps, (*here, "split", number, "steps"))


class ExitWhen(Strict):
    handed_to_sales: bool = True
    left_segment: bool = False  # opting out always ends a sequence; it cannot be switched off


class Reenroll(Strict):
    after: Duration  # the cool-down, counted from the end of the previous enrollment


class Sequence(Strict):
    """A nurture sequence. The worker runs the snapshot taken at enrollment, never the file as it is now."""

    id: str = Field(pattern=IDENTIFIER)
    name: str
    segment: str
    goal: EventTrigger | None = None
    exit_when: ExitWhen = Field(default_factory=ExitWhen)
    reenroll: Literal["never"] | Reenroll = "never"
    steps: list[Step] = Field(min_length=1)
    version: str = ""  # filled by the loader: a hash of the file


# --- sending policy -----------------------------------------------------------------------------


class FrequencyCap(Strict):
    per_day: int | None = Field(default=None, ge=1)  # rolling 24 hours
    per_week: int | None = Field(default=None, ge=1)  # rolling 7 days


class QuietHours(Strict):
    start: ClockTime = time(21, 0)
    end: ClockTime = time(8, 0)
    # Texts and notifications wake people; an email waits in the inbox, so it is not held by default.
    channels: list[Literal["email", "sms", "push"]] = Field(default_factory=lambda: ["sms", "push"])


class SendingPolicy(Strict):
    """sending.yaml: what holds for every send of every sequence (issue 5 adds consent per channel)."""

    default_timezone: str = "UTC"
    quiet_hours: QuietHours | None = None
    frequency_caps: dict[Literal["email", "sms", "push"], FrequencyCap] = Field(default_factory=dict)

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


# --- sales ---------------------------------------------------------------------------------------


class Salesperson(Strict):
    name: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    team: str = "sales"
    available: bool = True


class SalesTeam(Strict):
    salespeople: list[Salesperson] = Field(min_length=1)
