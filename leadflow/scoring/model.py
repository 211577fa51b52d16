"""scoring.yaml: the scoring model (fit, behavior, decay, account signal, grades, temperature, thresholds)."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from leadflow.content.conditions import PropertyFilter, PropertyTest, as_test
from leadflow.content.fields import EVENT_TYPE, Duration, Strict

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
