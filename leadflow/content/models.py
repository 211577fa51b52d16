"""The marketer's language: scoring model, segments, sequences and the sales team, as validated models."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
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

from leadflow.content.conditions import PropertyFilter, PropertyTest, as_test

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

# The events Leadflow knows (what the website, forms, email and SMS channels send). A scoring model may
# declare more under `event_types:`; a rule on any other type is a typo and is refused.
KNOWN_EVENT_TYPES = frozenset(
    [
        "page_viewed",
        "form_started",
        "form_submitted",
        "ebook_downloaded",
        "whitepaper_downloaded",
        "webinar_registered",
        "webinar_attended",
        "demo_requested",
        "trial_started",
        "email_opened",
        "email_clicked",
        "email_bounced",
        "sms_bounced",
        "unsubscribed",
        "sms_replied",
    ]
)
# What the tracking snippet sends by itself; a site may send more (`events:` in sites.yaml).
TRACKER_EVENTS = frozenset(
    ["page_viewed", "scrolled", "clicked", "form_started", "form_submitted", "form_abandoned", "page_left"]
)
# What Leadflow records by itself: the open pixel, tracked links, unsubscribe links and consent routes, SMS
# replies, bounces, push subscriptions and identity merges.
RECORDED_EVENT_TYPES = frozenset(
    [
        "email_opened",
        "email_clicked",
        "email_bounced",
        "sms_bounced",
        "sms_replied",
        "unsubscribed",
        "subscribed",
        "identified",
        "lead_merged",
    ]
)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_share(value: Any) -> Any:
    """'50%' as a marketer writes it, or a fraction such as 0.5."""
    if isinstance(value, str) and (match := _PERCENT.match(value)):
        return float(match[1]) / 100
    return value


Share = Annotated[float, BeforeValidator(parse_share), Field(ge=0, le=1)]


def _not_negative(value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError(f"{value.strip()} is negative: this duration must be more than zero")
    return value


def _more_than_zero(delta: timedelta) -> timedelta:
    if delta <= timedelta(0):
        raise ValueError("this duration must be more than zero")
    return delta


PositiveDuration = Annotated[Duration, BeforeValidator(_not_negative), AfterValidator(_more_than_zero)]


class FitRule(PropertyTest):
    """Points for who the lead is: one property compared with the ideal customer profile."""

    rule: str
    property: str
    points: int


class Band(Strict):
    """Points for a number of matching events: `from: 1, to: 5, points: 5` (no `to`: and above)."""

    from_: int = Field(alias="from", ge=1)
    to: int | None = None
    points: int

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.to is not None and self.to < self.from_:
            raise ValueError(f"a band from {self.from_} to {self.to} is empty")
        return self

    def covers(self, count: int) -> bool:
        return self.from_ <= count and (self.to is None or count <= self.to)


class BehaviorRule(Strict):
    """Points for what the lead did: each matching event earns `points`, or the rule's engagement `bands`
    say what so many matching events are worth together. `max` caps the rule's total (absolute value)."""

    rule: str
    event: str = Field(pattern=EVENT_TYPE)
    where: PropertyFilter = Field(default_factory=dict)
    points: int | None = None
    bands: list[Band] | None = Field(default=None, min_length=1)
    max: int | None = Field(default=None, ge=0, description="cap on this rule's total (absolute value)")
    group: str | None = None

    @model_validator(mode="after")
    def _points_or_bands(self) -> BehaviorRule:
        if (self.points is None) == (self.bands is None):
            raise ValueError("give either points (per event) or bands (per number of events), not both")
        return self

    @cached_property
    def _tests(self) -> list[tuple[str, PropertyTest]]:
        return [(name, as_test(test)) for name, test in self.where.items()]

    def matches(self, properties: dict[str, Any]) -> bool:
        """Whether an event's properties pass the rule's `where` filter."""
        return all(test.holds(properties.get(name)) for name, test in self._tests)

    @property
    def rewards(self) -> bool:
        """Whether matching this rule is engagement (positive points), as opposed to a warning sign."""
        if self.bands is not None:
            return any(band.points > 0 for band in self.bands)
        return (self.points or 0) > 0

    def points_for(self, count: int) -> int:
        """What `count` matching events are worth together (before decay and caps)."""
        if self.bands is None:
            return count * (self.points or 0)
        covering = [band.points for band in self.bands if band.covers(count)]
        earlier = [band.points for band in self.bands if band.to is not None and band.to < count]
        return covering[0] if covering else (earlier[-1] if earlier else 0)


class DecayWindow(Strict):
    within: PositiveDuration
    keep: Share


class Decay(Strict):
    """How behavior points fade with the event's age: a half-life, or windows (`within: 30d, keep: 100%`;
    older than the last window: nothing)."""

    half_life: PositiveDuration | None = None
    windows: list[DecayWindow] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Decay:
        if (self.half_life is None) == (self.windows is None):
            raise ValueError("give either half_life or windows")
        windows = self.windows or []
        for older, newer in zip(windows[1:], windows, strict=False):
            if older.within <= newer.within or older.keep > newer.keep:
                raise ValueError("windows go from recent to old, each keeping no more than the one before")
        return self

    def factor(self, age: timedelta) -> float:
        """The share of its points an event of this age keeps: 1 when new, never growing with age."""
        age = max(age, timedelta(0))
        if self.half_life is not None:
            return float(0.5 ** (age / self.half_life))
        for window in self.windows or []:
            if age < window.within:  # at the boundary the next window already applies
                return window.keep
        return 0.0


class RuleGroup(Strict):
    """Behavior rules that decay alike and share one cap (`max`, absolute value)."""

    decay: Decay | None = None
    max: int | None = Field(default=None, ge=0)


class AccountSignal(Strict):
    """Several contacts of one account (company domain or work email domain; free-mail never counts)
    engaged within a window: each of them gets the points and the account is marked hot."""

    rule: str = "Several people at the account are active"
    contacts: int = Field(ge=2)
    within: PositiveDuration
    points: int


class Grades(Strict):
    """Fit grade shown next to the score (A best): the least fit points for each grade; below C is D."""

    A: int
    B: int
    C: int

    @model_validator(mode="after")
    def _descending(self) -> Grades:
        if not self.A > self.B > self.C:
            raise ValueError(f"grades need A > B > C (got A {self.A}, B {self.B}, C {self.C})")
        return self

    def of(self, fit: int) -> str:
        return next((grade for grade in "ABC" if fit >= getattr(self, grade)), "D")


class TemperatureLevel(Strict):
    score: int
    active_within: PositiveDuration


class Temperature(Strict):
    """Hot or warm when the score reaches `score` and the lead was active within `active_within`."""

    hot: TemperatureLevel
    warm: TemperatureLevel

    @model_validator(mode="after")
    def _hot_above_warm(self) -> Temperature:
        if self.hot.score < self.warm.score or self.hot.active_within > self.warm.active_within:
            raise ValueError("hot needs a score at least warm's and a window no longer than warm's")
        return self


class Thresholds(Strict):
    mql: int
    sql: int

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.sql <= self.mql:
            raise ValueError(f"the sql threshold ({self.sql}) must be above the mql threshold ({self.mql})")
        return self


Location = tuple[str | int, ...]


class HandOffNow(Strict):
    """An event that makes a lead sales-qualified at once, whatever its score (a demo request)."""

    rule: str
    event: str = Field(pattern=EVENT_TYPE)
    where: PropertyFilter = Field(default_factory=dict)


class ScoringModel(Strict):
    thresholds: Thresholds
    hand_off_now: list[HandOffNow] = Field(default_factory=list)
    grades: Grades = Grades(A=30, B=20, C=10)
    temperature: Temperature = Temperature(
        hot=TemperatureLevel(score=60, active_within=timedelta(days=7)),
        warm=TemperatureLevel(score=20, active_within=timedelta(days=30)),
    )
    event_types: list[str] = Field(default_factory=list, description="custom event types rules may use")
    groups: dict[str, RuleGroup] = Field(default_factory=dict)
    fit: list[FitRule] = Field(default_factory=list)
    behavior: list[BehaviorRule] = Field(default_factory=list)
    account: AccountSignal | None = None
    cool_down_every: PositiveDuration = Field(
        default=timedelta(days=1), description="how often a quiet lead's decaying score is looked at"
    )
    cool_down_points: int = Field(
        default=5,
        ge=1,
        description="a quiet lead is rescored once decay moved its score by this many points, took it across"
        " a temperature's score, or (any change) after seven cool-downs",
    )
    version: str = ""  # filled by the loader: a hash of the file
    source: str = Field(default="", exclude=True)  # filled by the loader: the file's text, for the ledger


def scoring_problems(data: Any) -> list[tuple[Location, str]]:
    """Mistakes that span fields (unknown event types and groups, overlapping bands), with where they are.
    Read from the file's data, not the validated model, so they are reported with every other mistake."""
    if not isinstance(data, dict):
        return []
    found: list[tuple[Location, str]] = []
    custom: list[Any] = data["event_types"] if isinstance(data.get("event_types"), list) else []
    for index, name in enumerate(custom):
        if not isinstance(name, str) or not re.match(EVENT_TYPE, name):
            found.append((("event_types", index), f"event type {name!r} is not like page_viewed"))
    known = KNOWN_EVENT_TYPES | {name for name in custom if isinstance(name, str)}
    groups: dict[str, Any] = data["groups"] if isinstance(data.get("groups"), dict) else {}
    for section in ("behavior", "hand_off_now"):
        listed: list[Any] = data[section] if isinstance(data.get(section), list) else []
        for index, rule in enumerate(listed):
            event = rule.get("event") if isinstance(rule, dict) else None
            if isinstance(event, str) and event not in known:
                found.append(
                    (
                        (section, index, "event"),
                        f"unknown event type {event!r} (known: {', '.join(sorted(known))}; "
                        "declare your own under event_types)",
                    )
                )
    rules: list[Any] = data["behavior"] if isinstance(data.get("behavior"), list) else []
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        where: Location = ("behavior", index)
        group = rule.get("group")
        if group is not None and group not in groups:
            declared = ", ".join(sorted(map(str, groups))) or "none declared"
            found.append(((*where, "group"), f"unknown group {group!r} (groups: {declared})"))
        if isinstance(rule.get("bands"), list):
            found.extend(((*where, "bands", at), reason) for at, reason in _band_problems(rule["bands"]))
    return found


def _band_problems(bands: list[Any]) -> list[tuple[int, str]]:
    problems = []
    for index in range(1, len(bands)):
        previous, band = bands[index - 1], bands[index]
        if not (isinstance(previous, dict) and isinstance(band, dict)):
            continue
        low, previous_low, previous_high = band.get("from"), previous.get("from"), previous.get("to")
        if not isinstance(low, int) or not isinstance(previous_low, int):
            continue
        if previous_high is None or (isinstance(previous_high, int) and low <= previous_high):
            upto = "and above" if previous_high is None else f"to {previous_high}"
            problems.append((index, f"band from {low} overlaps the band from {previous_low} {upto}"))
    return problems


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


TemperatureName = Literal["cold", "warm", "hot"]
StageName = Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "recycled"]
TEMPERATURES: tuple[str, ...] = get_args(TemperatureName)
STAGES: tuple[str, ...] = get_args(StageName)


class TemperatureRule(Strict):
    temperature: PropertyTest | TemperatureName


class StageRule(Strict):
    stage: PropertyTest | StageName


class ReachableRule(Strict):
    """The lead can be messaged on this channel now, as the send would decide: an address (its email, a phone,
    a browser's push subscription) that is not suppressed (bounced, opted out), and consent not withdrawn
    (granted, for a channel that needs it: sms and push by default). Read from the store when the branch
    runs, so it says what consent really records, not what a property claims."""

    reachable: Literal["email", "sms", "push"]


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
    "reachable": "ReachableRule",
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


if TYPE_CHECKING:  # what a type checker sees: the union pydantic validates with a discriminator below
    Rule = (
        EventRule
        | CountRule
        | AbsenceRule
        | PropertyRule
        | ScoreRule
        | TemperatureRule
        | StageRule
        | ReachableRule
        | AllRule
        | AnyRule
        | NotRule
    )
else:
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
            "ReachableRule": ReachableRule,
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
    """Who is in it. Entry and exit are evaluated each time the lead's events arrive, when an absence window
    closes and when a count's window slides past; a lead without an `exit` rule stays a member once it
    entered."""

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


# --- sending policy -----------------------------------------------------------------------------


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


# --- sales ---------------------------------------------------------------------------------------


class Webhook(Strict):
    """A signed POST on hand-off: `slack` (an incoming-webhook message) or `json` (a generic document for a
    CRM). Signed with LEADFLOW_WEBHOOK_SECRET, never a secret in this file."""

    url: str = Field(pattern=r"^https?://\S+$")
    format: Literal["slack", "json"] = "json"


class Notify(Strict):
    """How a salesperson hears of a hand-off: email (default) and any webhooks."""

    email: bool = True
    webhooks: list[Webhook] = Field(default_factory=list)


class Salesperson(Strict):
    name: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    team: str = "sales"
    available: bool = True
    notify: Notify = Notify()


class AssignmentRule(Strict):
    """Leads whose properties pass `when` (territory by country, company size, industry…) go to `team`;
    the first matching rule wins, a rule without `when` takes everyone left."""

    team: str
    rule: str = ""
    when: PropertyFilter = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.rule or (f"{self.team} team" if self.when else f"{self.team} team (everyone else)")


class FollowUp(Strict):
    """The hand-off SLA: remind the salesperson who has not accepted, then escalate and reassign."""

    remind_after: PositiveDuration | None = timedelta(hours=2)
    escalate_after: PositiveDuration | None = timedelta(hours=4)
    escalate_to: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    reassign: bool = True
    max_reassignments: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _remind_first(self) -> FollowUp:
        if self.remind_after and self.escalate_after and self.escalate_after <= self.remind_after:
            raise ValueError("escalate_after must be later than remind_after")
        return self


class SalesTeam(Strict):
    salespeople: list[Salesperson] = Field(min_length=1)
    assignment: list[AssignmentRule] = Field(default_factory=list)
    follow_up: FollowUp = FollowUp()

    @model_validator(mode="after")
    def _teams_exist(self) -> SalesTeam:
        teams = {person.team for person in self.salespeople}
        for rule in self.assignment:
            if rule.team not in teams:
                raise ValueError(
                    f"assignment rule {rule.name!r} names team {rule.team!r}, which has no salespeople "
                    f"(teams: {', '.join(sorted(teams))})"
                )
        return self


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
