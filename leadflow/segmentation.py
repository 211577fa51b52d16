"""Segment rules evaluated over what is known of a lead. Pure functions, no I/O: the assess activity uses them
for segment entry and exit, and the sequence workflow for its branches (deterministic, so safe to replay)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leadflow.content.conditions import PropertyTest, as_test, filter_holds
from leadflow.content.models import (
    TEMPERATURES,
    AbsenceRule,
    AbsenceSpec,
    AllRule,
    AnyRule,
    CountRule,
    CountSpec,
    EventRule,
    EventTrigger,
    NotRule,
    PropertyRule,
    Rule,
    ScoreRule,
    Segment,
    StageRule,
    TemperatureRule,
    Thresholds,
)
from leadflow.scoring import EventFact


def trigger_matches(trigger: EventTrigger, event_type: str, properties: dict[str, Any]) -> bool:
    return event_type == trigger.event and filter_holds(trigger.where, properties)


@dataclass(frozen=True)
class LeadFacts:
    """What a rule can look at. `new_event_ids` are the events a rule's `event:` is about: the ones that just
    arrived (segments) or every one seen since enrollment (branches)."""

    now: datetime
    events: tuple[EventFact, ...] = ()
    new_event_ids: frozenset[int] = frozenset()
    closed_windows: frozenset[int] = frozenset()  # triggers whose absence window just ended (a timer fired)
    properties: dict[str, Any] = field(default_factory=dict)
    score: int = 0
    temperature: str = "cold"
    stage: str = "lead"


def holds(rule: Rule, facts: LeadFacts) -> bool:
    """Whether `rule` holds for the lead described by `facts`: one case per kind of rule."""
    match rule:
        case EventRule():
            return any(e.id in facts.new_event_ids and _is(rule, e) for e in facts.events)
        case CountRule(count=spec):
            return _count_within_bounds(spec, facts)
        case AbsenceRule(absence=spec):
            candidates = facts.new_event_ids | facts.closed_windows
            return any(e.id in candidates and _absence_confirmed(spec, e, facts) for e in facts.events)
        case PropertyRule():
            return rule.holds(facts.properties.get(rule.property))
        case ScoreRule(score=spec):
            test = spec if isinstance(spec, PropertyTest) else PropertyTest(gte=spec)
            return test.holds(facts.score)
        case TemperatureRule(temperature=spec):
            return as_test(spec).holds(facts.temperature)
        case StageRule(stage=spec):
            return as_test(spec).holds(facts.stage)
        case AllRule():
            return all(holds(part, facts) for part in rule.all)
        case AnyRule():
            return any(holds(part, facts) for part in rule.any)
        case NotRule():
            return not holds(rule.not_, facts)
    raise TypeError(f"unknown rule {rule!r}")


def _is(trigger: EventTrigger, event: EventFact) -> bool:
    return trigger_matches(trigger, event.type, event.properties)


def _count_within_bounds(spec: CountSpec, facts: LeadFacts) -> bool:
    since = facts.now - spec.within if spec.within is not None else None
    seen = sum(
        1
        for event in facts.events
        if _is(spec, event)
        and event.occurred_at <= facts.now
        and (since is None or event.occurred_at > since)
    )
    return (spec.at_least is None or seen >= spec.at_least) and (spec.at_most is None or seen <= spec.at_most)


def _absence_confirmed(spec: AbsenceSpec, trigger: EventFact, facts: LeadFacts) -> bool:
    """`trigger` started the window, the window is over, and no follow-up (sharing `same`) came in it."""
    if not _is(spec.after, trigger):
        return False
    deadline = trigger.occurred_at + spec.within
    if deadline > facts.now:
        return False
    return not any(
        _is(spec.missing, event)
        and trigger.occurred_at <= event.occurred_at <= deadline
        and all(event.properties.get(name) == trigger.properties.get(name) for name in spec.same)
        for event in facts.events
    )


def temperature_of(known: Any, score: int, thresholds: Thresholds) -> str:
    """The lead's temperature: the one the scoring gave it when there is one, else from the score alone
    (hot at the SQL threshold, warm at the MQL threshold, cold below)."""
    if isinstance(known, str) and known.lower() in TEMPERATURES:
        return known.lower()
    if score >= thresholds.sql:
        return "hot"
    return "warm" if score >= thresholds.mql else "cold"


def rules_in(rule: Rule | None) -> Iterator[Rule]:
    """`rule` and every rule nested in it."""
    if rule is None:
        return
    yield rule
    match rule:
        case AllRule():
            for part in rule.all:
                yield from rules_in(part)
        case AnyRule():
            for part in rule.any:
                yield from rules_in(part)
        case NotRule():
            yield from rules_in(rule.not_)


@dataclass(frozen=True)
class SegmentChanges:
    entered: list[Segment]  # the entry rule holds now: candidates for enrollment in their sequence
    joined: list[str]  # segment ids the lead was not a member of before
    left: list[str]  # segment ids whose exit rule holds for a member


def evaluate_segments(segments: Iterable[Segment], members: set[str], facts: LeadFacts) -> SegmentChanges:
    entered, joined, left = [], [], []
    for segment in segments:
        leaving = segment.exit is not None and holds(segment.exit, facts)
        if segment.id in members and leaving:
            left.append(segment.id)
        elif not leaving and holds(segment.entry, facts):
            entered.append(segment)
            if segment.id not in members:
                joined.append(segment.id)
    return SegmentChanges(entered, joined, left)


@dataclass(frozen=True)
class AbsenceWindow:
    event_id: int
    closes_at: datetime


def absence_windows(
    segments: Iterable[Segment], new_events: Iterable[EventFact], now: datetime
) -> list[AbsenceWindow]:
    """The windows opened by events that just arrived, to be closed by a durable timer in the lead workflow.
    A window already over (an event sent late) needs no timer: this very evaluation decides it."""
    specs = [
        rule.absence
        for segment in segments
        for top in (segment.entry, segment.exit)
        for rule in rules_in(top)
        if isinstance(rule, AbsenceRule)
    ]
    windows = {
        (event.id, event.occurred_at + spec.within)
        for event in new_events
        for spec in specs
        if _is(spec.after, event) and event.occurred_at + spec.within > now
    }
    return [AbsenceWindow(event_id, closes_at) for event_id, closes_at in sorted(windows)]
