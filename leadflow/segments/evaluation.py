"""Segment rules evaluated over what is known of a lead. Pure functions, no I/O: the assess activity uses them
for segment entry and exit, and the sequence workflow for its branches (deterministic, so safe to replay)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from leadflow.content.conditions import PropertyTest, as_test, filter_holds
from leadflow.scoring.score import EventFact
from leadflow.segments.model import Segment
from leadflow.segments.rules import (
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
    ReachableRule,
    Rule,
    ScoreRule,
    StageRule,
    TemperatureRule,
)


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
    reachable: frozenset[str] = frozenset()  # channels that can reach the lead now (branches only)


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
        case ReachableRule():
            return rule.reachable in facts.reachable
        case AllRule():
            return all(holds(part, facts) for part in rule.all)
        case AnyRule():
            return any(holds(part, facts) for part in rule.any)
        case NotRule():
            return not holds(rule.not_, facts)
    raise TypeError(f"unknown rule {rule!r}")


def reads_the_lead(rule: Rule) -> bool:
    """Whether `rule` looks at the lead's properties, score, temperature or stage, not only its events."""
    match rule:
        case PropertyRule() | ScoreRule() | TemperatureRule() | StageRule() | ReachableRule():
            return True
        case AllRule():
            return any(reads_the_lead(part) for part in rule.all)
        case AnyRule():
            return any(reads_the_lead(part) for part in rule.any)
        case NotRule():
            return reads_the_lead(rule.not_)
    return False


def _is(trigger: EventTrigger, event: EventFact) -> bool:
    return trigger_matches(trigger, event.type, event.properties)


def _counted(spec: CountSpec, facts: LeadFacts) -> list[EventFact]:
    """The events a count counts now: matching, and inside the window."""
    since = facts.now - spec.within if spec.within is not None else None
    return [
        event
        for event in facts.events
        if _is(spec, event)
        and event.occurred_at <= facts.now
        and (since is None or event.occurred_at > since)
    ]


def _count_within_bounds(spec: CountSpec, facts: LeadFacts) -> bool:
    seen = len(_counted(spec, facts))
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


def entering_event(rule: Rule, facts: LeadFacts) -> EventFact | None:
    """The event that made `rule` (which holds) hold: the latest of the events its event, count and absence
    parts are about, a new one first for a count; None when it holds on properties, score or stage alone.
    A sequence's templates see it as `event` (the ebook's title, the abandoned form, the event page)."""
    match rule:
        case EventRule():
            return _latest(e for e in facts.events if e.id in facts.new_event_ids and _is(rule, e))
        case CountRule(count=spec):
            counted = _counted(spec, facts)
            return _latest(e for e in counted if e.id in facts.new_event_ids) or _latest(counted)
        case AbsenceRule(absence=spec):
            candidates = facts.new_event_ids | facts.closed_windows
            return _latest(
                e for e in facts.events if e.id in candidates and _absence_confirmed(spec, e, facts)
            )
        case AllRule():
            return _latest(event for part in rule.all if (event := entering_event(part, facts)))
        case AnyRule():
            return _latest(
                event for part in rule.any if holds(part, facts) and (event := entering_event(part, facts))
            )
    return None


def _latest(events: Iterable[EventFact]) -> EventFact | None:
    return max(events, key=lambda event: (event.occurred_at, event.id), default=None)


@dataclass(frozen=True)
class EnteringEvents:
    """What an entry rule says of the event that makes a lead enter: the triggers it can be, and whether
    there always is one (else the rule can hold on properties, score or stage alone)."""

    triggers: tuple[EventTrigger, ...]
    always: bool


def entering_events(rule: Rule) -> EnteringEvents:
    """The events that can make `rule` hold (what `leadflow check` holds a template's `event` to)."""
    match rule:
        case EventRule():
            return EnteringEvents((rule,), always=True)
        case CountRule(count=spec):
            return EnteringEvents((spec,), always=bool(spec.at_least))
        case AbsenceRule(absence=spec):
            return EnteringEvents((spec.after,), always=True)
        case AllRule():
            parts = [entering_events(part) for part in rule.all]
            return EnteringEvents(_triggers_of(parts), always=any(part.always for part in parts))
        case AnyRule():
            parts = [entering_events(part) for part in rule.any]
            return EnteringEvents(_triggers_of(parts), always=all(part.always for part in parts))
    return EnteringEvents((), always=False)


def _triggers_of(parts: list[EnteringEvents]) -> tuple[EventTrigger, ...]:
    return tuple(trigger for part in parts for trigger in part.triggers)


@dataclass(frozen=True)
class SegmentEntry:
    segment: Segment
    event: EventFact | None  # what made the entry rule hold: the enrollment keeps it for the templates


@dataclass(frozen=True)
class SegmentChanges:
    entered: list[SegmentEntry]  # the entry rule holds now: candidates for enrollment in their sequence
    joined: list[str]  # segment ids the lead was not a member of before
    left: list[str]  # segment ids whose exit rule holds for a member


def evaluate_segments(segments: Iterable[Segment], members: set[str], facts: LeadFacts) -> SegmentChanges:
    entered, joined, left = [], [], []
    for segment in segments:
        leaving = segment.exit is not None and holds(segment.exit, facts)
        if segment.id in members and leaving:
            left.append(segment.id)
        elif not leaving and holds(segment.entry, facts):
            entered.append(SegmentEntry(segment, entering_event(segment.entry, facts)))
            if segment.id not in members:
                joined.append(segment.id)
    return SegmentChanges(entered, joined, left)


MOMENTS_ASKED = 64  # per segment; past them the lead is woken anyway, and asked again then


def next_membership_change(
    segments: Iterable[Segment], members: set[str], facts: LeadFacts
) -> datetime | None:
    """The next moment a membership changes by time alone, with no new event: an event sliding out of a
    count's window (or one dated in the future sliding in) makes an entry or exit rule hold. The lead
    workflow sleeps until then in a durable timer, so "3 views within 7 days" is left on the day the
    window passes, not at the lead's next event. Each moment is asked of the rules themselves, so a lead
    whose membership cannot change that way is never woken for it."""
    earliest: datetime | None = None
    for segment in segments:
        moments = sorted(_count_moments(segment, facts))
        for index, moment in enumerate(moments):
            if earliest is not None and moment >= earliest:
                break
            if index == MOMENTS_ASKED or _membership_changes(segment, segment.id in members, facts, moment):
                earliest = moment
                break
    return earliest


def _count_moments(segment: Segment, facts: LeadFacts) -> set[datetime]:
    """When the counts of the segment's rules change by time alone."""
    moments = set()
    for top in (segment.entry, segment.exit):
        for rule in rules_in(top):
            if not isinstance(rule, CountRule):
                continue
            for event in facts.events:
                if _is(rule.count, event):
                    moments.add(event.occurred_at)
                    if rule.count.within is not None:
                        moments.add(event.occurred_at + rule.count.within)
    return {moment for moment in moments if moment > facts.now}


def _membership_changes(segment: Segment, member: bool, facts: LeadFacts, moment: datetime) -> bool:
    later = replace(facts, now=moment, new_event_ids=frozenset(), closed_windows=frozenset())
    leaving = segment.exit is not None and holds(segment.exit, later)
    return leaving if member else not leaving and holds(segment.entry, later)


def absence_specs(segments: Iterable[Segment]) -> list[AbsenceSpec]:
    return [
        rule.absence
        for segment in segments
        for top in (segment.entry, segment.exit)
        for rule in rules_in(top)
        if isinstance(rule, AbsenceRule)
    ]


@dataclass(frozen=True)
class AbsenceWindow:
    event_id: int
    closes_at: datetime


def absence_windows(
    segments: Iterable[Segment], new_events: Iterable[EventFact], now: datetime
) -> list[AbsenceWindow]:
    """The windows opened by events that just arrived, to be closed by a durable timer in the lead workflow.
    A window already over (an event sent late) needs no timer: this very evaluation decides it."""
    specs = absence_specs(segments)
    windows = {
        (event.id, event.occurred_at + spec.within)
        for event in new_events
        for spec in specs
        if _is(spec.after, event) and event.occurred_at + spec.within > now
    }
    return [AbsenceWindow(event_id, closes_at) for event_id, closes_at in sorted(windows)]
