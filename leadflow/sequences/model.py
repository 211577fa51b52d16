"""A sequence: its steps (send, wait, wait until a window or moment, branch, split, goal), exit and re-enrollment."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

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

from leadflow.content.fields import EVENT_TYPE, IDENTIFIER, Duration, Mailbox, Strict, parse_duration
from leadflow.scoring.model import Location
from leadflow.segments.rules import EventTrigger, Rule, _union

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
        default_factory=lambda: list(WEEKDAYS),  # type: ignore[arg-type]
        min_length=1,
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


def parse_signed_duration(value: Any) -> Any:
    """An offset: a duration as `parse_duration` reads it, `-` before it for earlier (`-1d`, `+2h`)."""
    if isinstance(value, str) and value.strip()[:1] in ("-", "+"):
        parsed = parse_duration(value.strip()[1:])
        if isinstance(parsed, timedelta):
            return -parsed if value.strip()[0] == "-" else parsed
    return parse_duration(value)


SignedDuration = Annotated[
    timedelta,
    BeforeValidator(parse_signed_duration),
    PlainSerializer(lambda delta: f"{int(delta.total_seconds())}s", return_type=str),
]
LONGEST_DATE_TEXT = 64  # a property read as a date-time: longer is no date


def _with_zone(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(
            f"{moment.isoformat()} has no time zone: write it like 2027-01-14T16:00:00Z or "
            "2027-01-14T17:00:00+01:00"
        )
    return moment


FixedMoment = Annotated[datetime, AfterValidator(_with_zone)]


def read_date_time(value: Any) -> datetime | None:
    """`value` (a property of an event or a lead) as a moment: an ISO 8601 date-time (without a time zone:
    UTC) or date (midnight UTC); None for anything else."""
    if isinstance(value, str) and len(value) <= LONGEST_DATE_TEXT:
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            try:
                value = date.fromisoformat(value.strip())
            except ValueError:
                return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0, 0), tzinfo=UTC)
    return None


class EventMoment(Strict):
    """A property of the latest event of this type the lead did since enrollment (a registration's date)."""

    event: str = Field(pattern=EVENT_TYPE)
    property: str = Field(min_length=1)


class EnteringEventMoment(Strict):
    """A property of the event that made the lead enter the segment (what templates see as `event`)."""

    event_property: str = Field(min_length=1)


class LeadMoment(Strict):
    lead_property: str = Field(min_length=1)


def _moment_kind(value: Any) -> str | None:
    if isinstance(value, str | datetime | date):
        return "FixedMoment"
    if isinstance(value, BaseModel):
        return type(value).__name__
    if isinstance(value, dict):
        keys = {
            "event": "EventMoment",
            "event_property": "EnteringEventMoment",
            "lead_property": "LeadMoment",
        }
        return next((kind for key, kind in keys.items() if key in value), None)
    return None


if TYPE_CHECKING:
    MomentSource = datetime | EventMoment | EnteringEventMoment | LeadMoment
else:
    MomentSource = Annotated[
        Union[  # noqa: UP007
            Annotated[FixedMoment, Tag("FixedMoment")],
            Annotated[EventMoment, Tag("EventMoment")],
            Annotated[EnteringEventMoment, Tag("EnteringEventMoment")],
            Annotated[LeadMoment, Tag("LeadMoment")],
        ],
        Discriminator(
            _moment_kind,
            custom_error_type="unknown_moment",
            custom_error_message="`at` is a date-time like 2027-01-14T16:00:00Z, {event: TYPE, property: NAME} "
            "(the latest such event since enrollment), {event_property: NAME} (the entering event) or "
            "{lead_property: NAME}",
        ),
    ]


class ResolvedMoment(Strict):
    """When a moment wait ends, or why it cannot be known (then the sequence goes on at once)."""

    at: datetime | None = None
    problem: str = ""


class Moment(Strict):
    """Until a moment (`at`) moved by `offset` (negative: before it): a date-time written in the file, or one
    read when the step is reached from an event's or the lead's property."""

    at: MomentSource
    offset: SignedDuration = timedelta(0)

    def describe(self) -> str:
        source = self.at
        if isinstance(source, EventMoment):
            return f"{source.property} of the latest {source.event}"
        if isinstance(source, EnteringEventMoment):
            return f"{source.event_property} of the entering event"
        if isinstance(source, LeadMoment):
            return f"the lead's {source.lead_property}"
        return source.isoformat()

    def resolve(self, value: Any) -> ResolvedMoment:
        """The moment `value` (what `at` names) gives, offset applied. The value itself is never repeated:
        it may be anything a lead or an event carries."""
        if value is None:
            return ResolvedMoment(problem=f"{self.describe()} is missing")
        moment = read_date_time(value)
        if moment is None:
            return ResolvedMoment(problem=f"{self.describe()} is not a date-time like 2027-01-14T16:00:00Z")
        try:
            return ResolvedMoment(at=moment + self.offset)
        except OverflowError:
            return ResolvedMoment(problem=f"{self.describe()} moved by the offset is out of range")


def _wait_until_kind(value: Any) -> str:
    if isinstance(value, BaseModel):
        return type(value).__name__
    # A send window's keys win over `offset` alone: `{days, start, offset}` is a window with one key too many.
    keys = set(value) if isinstance(value, dict) else set()
    return (
        "Moment"
        if "at" in keys or ("offset" in keys and not keys & set(SendWindow.model_fields))
        else "SendWindow"
    )


if TYPE_CHECKING:
    WaitTarget = SendWindow | Moment
else:
    WaitTarget = Annotated[
        Union[Annotated[SendWindow, Tag("SendWindow")], Annotated[Moment, Tag("Moment")]],  # noqa: UP007
        Discriminator(_wait_until_kind),
    ]


class WaitUntilStep(Strict):
    """`wait_until: {days, start, end}`: the next local send window; `wait_until: {at, offset}`: a moment."""

    wait_until: WaitTarget


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

if TYPE_CHECKING:
    Step = SendStep | WaitStep | WaitUntilStep | BranchStep | SplitStep | GoalStep
else:
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
Branch.model_rebuild()
Variant.model_rebuild()


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
    sender: Mailbox | None = Field(default=None, description="the From of its emails")
    reply_to: Mailbox | None = None
    steps: list[Step] = Field(min_length=1)
    # Keep nurturing a lead once it is handed to sales: the short way to write
    # `exit_when: {handed_to_sales: false}`, which is what the engine reads (see _one_hand_off_rule).
    continue_after_handoff: bool = False
    version: str = ""  # filled by the loader: a hash of the file

    @model_validator(mode="before")
    @classmethod
    def _one_hand_off_rule(cls, data: Any) -> Any:
        """`continue_after_handoff: true` becomes `exit_when.handed_to_sales: false`, so that enrolling a lead
        already with sales and exiting on the hand-off read one rule. It wins over `handed_to_sales: true`:
        snapshots taken at enrollment before this rule hold both (a dump writes the default too)."""
        if not isinstance(data, dict) or data.get("continue_after_handoff") is not True:
            return data
        exit_when = data.get("exit_when") or {}
        if isinstance(exit_when, ExitWhen):
            exit_when = exit_when.model_dump()
        if not isinstance(exit_when, dict):
            return data  # not a mapping: validation reports it as it stands
        return {**data, "exit_when": {**exit_when, "handed_to_sales": False}}
