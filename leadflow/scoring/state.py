"""Incremental scoring: each event of a lead is folded once into a stored, bounded summary of the lead (its
*scoring state*), so an assessment costs the same with 10 past events as with 5,000.

Per behavior rule the state keeps how many events matched, the latest, the earliest few that a rule's bands
reward (`head`), the newest few (`recent`; with age-window decay: every event still inside the windows) and,
for the rest, one block: how many and their points with half-life decay as a sum at a reference time
(sum(p * 0.5**((t - ti) / h)) = S_ref * 0.5**((t - ref) / h), exact). Per count of a segment rule it keeps the
newest events that decide the count's bounds (`at_least`, `at_most + 1`; with those, the count holds
exactly when it holds over all events), plus the first and last touch and whether a "hand off now" event
came. Fit and account points are not folded: they come from the lead and its account at each assessment.

`score_from_state` then gives what `score_lead` gives from all the events: the same score, fit, behavior
(to float rounding), grade, temperature, engagement and next change; the breakdown lists the same
contributions, except that a rule's events between its head and its recent ones are shown as one line.
Caps fold exactly because, when every contribution a cap sees has one sign, capping in time order keeps
min(cap, total) whatever the split; a model with a capped group whose rules can give both signs is not
folded (`FoldPlan.foldable`), and such leads are scored from all their events as before.

A state belongs to one model and set of segment counts (its `fingerprint`) and one `since` (recycling): when
either changes it is rebuilt from the lead's events, once. `leadflow rescore` and `score_at` still score
from all the events; tests/scoring/test_scoring_state.py checks both ways agree over random event streams.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from leadflow.content.conditions import filter_holds
from leadflow.intake.tracking.attribution import touch_of
from leadflow.scoring.model import BehaviorRule, Decay, ScoringModel
from leadflow.scoring.score import (
    AccountActivity,
    Contribution,
    EventFact,
    ScoreResult,
    cap_groups,
    decay_note,
    decay_of,
    finish_score,
    fit_contributions,
    within_cap,
)
from leadflow.segments.evaluation import rules_in
from leadflow.segments.model import Segment
from leadflow.segments.rules import CountRule, CountSpec

STATE_FORMAT = 1  # bump when the state's layout changes: older states are rebuilt
RECENT_KEPT = 8  # a rule's newest events listed one by one in the breakdown
TAIL_KEPT = 64

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Key = tuple[int, int]  # (occurred_at in microseconds since the epoch, event id): time order


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _micros_of(duration: timedelta) -> int:
    return duration // timedelta(microseconds=1)


def moment(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def count_specs(segments: Iterable[Segment]) -> list[CountSpec]:
    """Every count of the segments' entry and exit rules, in a stable order."""
    specs = []
    for segment in segments:
        for top in (segment.entry, segment.exit):
            specs += [rule.count for rule in rules_in(top) if isinstance(rule, CountRule)]
    return specs


def _decisive(spec: CountSpec) -> int:
    """How many of the newest matching events decide whether the count's bounds hold."""
    return max(spec.at_least or 0, (spec.at_most + 1) if spec.at_most is not None else 0, 1)


def _band_reach(rule: BehaviorRule) -> int:
    """The rank past which more matching events add nothing (0 for a rule with points per event)."""
    if rule.bands is None:
        return 0
    return max(max(band.from_, (band.to + 1) if band.to is not None else 0) for band in rule.bands)


def _signs(rule: BehaviorRule) -> set[int]:
    reach = _band_reach(rule)
    deltas = (
        [rule.points_for(k) - rule.points_for(k - 1) for k in range(1, reach + 1)]
        if rule.bands is not None
        else [rule.points or 0]
    )
    return {1 if delta > 0 else -1 for delta in deltas if delta}


@dataclass(frozen=True)
class RulePlan:
    """A behavior rule with what folding an event into it needs, worked out once."""

    index: int
    rule: BehaviorRule
    decay: Decay | None
    reach: int  # see _band_reach
    window: int | None  # age windows (a rule without bands): the last window, in microseconds
    half_life: int | None  # in microseconds


@dataclass(frozen=True)
class FoldPlan:
    """What the state of one scoring model and set of segment counts holds, built once per model."""

    model: ScoringModel
    counts: tuple[CountSpec, ...]
    fingerprint: str
    foldable: bool  # False: a capped group mixes signs, so leads are scored from all their events
    rules: tuple[RulePlan, ...] = ()
    rules_by_type: dict[str, tuple[RulePlan, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, model: ScoringModel, segments: Iterable[Segment] = ()) -> FoldPlan:
        counts = tuple(count_specs(segments))
        text = json.dumps(
            [
                STATE_FORMAT,
                RECENT_KEPT,
                model.model_dump(mode="json"),
                [c.model_dump(mode="json") for c in counts],
            ],
            sort_keys=True,
            default=str,
        )
        foldable = all(
            len(set().union(*(_signs(rule) for rule in model.behavior if rule.group == name))) < 2
            for name, group in model.groups.items()
            if group.max is not None
        )
        rules = []
        for index, rule in enumerate(model.behavior):
            decay = decay_of(model, rule)
            windows = decay.windows if decay and rule.bands is None else None
            half_life = decay.half_life if decay else None
            rules.append(
                RulePlan(
                    index,
                    rule,
                    decay,
                    _band_reach(rule),
                    _micros_of(windows[-1].within) if windows else None,
                    _micros_of(half_life) if half_life else None,
                )
            )
        by_type: dict[str, tuple[RulePlan, ...]] = {}
        for rule_plan in rules:
            by_type[rule_plan.rule.event] = (*by_type.get(rule_plan.rule.event, ()), rule_plan)
        fingerprint = hashlib.sha256(text.encode()).hexdigest()[:32]
        return cls(model, counts, fingerprint, foldable, tuple(rules), by_type)


_PLANS: dict[tuple[int, tuple[int, ...]], FoldPlan] = {}


def plan_of(model: ScoringModel, segments: Sequence[Segment] = ()) -> FoldPlan:
    """The plan of a model and segments, cached while they are the ones loaded (content is immutable)."""
    key = (id(model), tuple(id(segment) for segment in segments))
    plan = _PLANS.get(key)
    if plan is None or plan.model is not model:
        if len(_PLANS) > 16:
            _PLANS.clear()
        plan = _PLANS[key] = FoldPlan.of(model, segments)
    return plan


# --- the state -----------------------------------------------------------------------------------------


@dataclass
class RuleState:
    n: int = 0  # matching events folded
    last: Key | None = None  # the latest of them
    head: list[Key] = field(default_factory=list)  # bands: the earliest events, which the bands reward
    recent: list[Key] = field(default_factory=list)  # the newest (age windows: all still inside them)
    block: int = 0  # events in neither list, shown together
    block_last: Key | None = None
    block_sum: float = 0.0  # half-life: sum of 0.5**((ref - ti) / h) over the block, else unused
    ref: int = 0  # the block sum's reference time (microseconds)

    def as_json(self) -> list[Any]:
        return [
            self.n,
            self.last,
            self.head,
            self.recent,
            self.block,
            self.block_last,
            self.block_sum,
            self.ref,
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> RuleState:
        n, last, head, recent, block, block_last, block_sum, ref = data
        return cls(
            n,
            tuple(last) if last else None,
            [tuple(k) for k in head],
            [tuple(k) for k in recent],
            block,
            tuple(block_last) if block_last else None,
            block_sum,
            ref,
        )


@dataclass
class ScoringState:
    fingerprint: str
    since: int | None  # the lead's scoring_since when built (microseconds)
    cursor: int = 0  # every event of the lead with an id up to this one is folded
    as_of: int = 0  # the latest `now` folded at: a state is never used at an earlier time
    rules: list[RuleState] = field(default_factory=list)
    counts: list[list[Key]] = field(default_factory=list)  # per segment count: its decisive events
    facts: dict[int, list[Any]] = field(default_factory=dict)  # those events: id -> [type, us, properties]
    hand_off: list[bool] = field(default_factory=list)  # per "hand off now" rule: an event matched it
    first_touch: list[Any] | None = None  # [key, touch]
    last_touch: list[Any] | None = None
    # The latest date of the events seen dated after `as_of`: they are folded when they come due (`due`).
    pending_until: int = 0
    tail: list[int] = field(default_factory=list)  # the ids of the last events folded (see `missed`)

    @classmethod
    def empty(cls, plan: FoldPlan, since: datetime | None) -> ScoringState:
        return cls(
            plan.fingerprint,
            micros(since) if since else None,
            rules=[RuleState() for _ in plan.model.behavior],
            counts=[[] for _ in plan.counts],
            hand_off=[False for _ in plan.model.hand_off_now],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "cursor": self.cursor,
            "as_of": self.as_of,
            "rules": [rule.as_json() for rule in self.rules],
            "counts": self.counts,
            "facts": {str(k): v for k, v in self.facts.items()},
            "hand_off": self.hand_off,
            "touch": [self.first_touch, self.last_touch],
            "pending_until": self.pending_until,
            "tail": self.tail,
        }

    @classmethod
    def from_json(cls, fingerprint: str, data: dict[str, Any]) -> ScoringState:
        first, last = data["touch"]
        return cls(
            fingerprint,
            data["since"],
            data["cursor"],
            data["as_of"],
            [RuleState.from_json(rule) for rule in data["rules"]],
            [[tuple(k) for k in keys] for keys in data["counts"]],
            {int(k): v for k, v in data["facts"].items()},
            data["hand_off"],
            first,
            last,
            data["pending_until"],
            data["tail"],
        )

    def due(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The dates (after, up to) of the events already seen that come due by `now`, when some may: they
        were dated later than the state's time when folded, and are read again then (not kept here, so
        that a lead's events dated ahead cost nothing until their time)."""
        at = micros(now)
        if self.pending_until <= self.as_of or at <= self.as_of:
            return None
        return moment(self.as_of), now

    def mark_folded(self, event_ids: Iterable[int]) -> None:
        self.tail = sorted({*self.tail, *event_ids})[-TAIL_KEPT:]
        if self.tail:
            self.cursor = max(self.cursor, self.tail[-1])

    def missed(self, event_id: int) -> bool:
        """Whether an event behind the cursor was never folded: on PostgreSQL a transaction can commit an
        event after one with a higher id was folded. The last TAIL_KEPT folds are remembered to tell."""
        return bool(self.tail) and event_id >= self.tail[0] and event_id not in self.tail

    def matches(self, plan: FoldPlan, since: datetime | None) -> bool:
        return self.fingerprint == plan.fingerprint and self.since == (micros(since) if since else None)


# --- folding -------------------------------------------------------------------------------------------


def fold(
    plan: FoldPlan,
    state: ScoringState,
    events: Iterable[EventFact],
    now: datetime,
    came_due: Iterable[EventFact] = (),
) -> None:
    """Fold new events (any order) into the state as of `now`, and `came_due`: the events already seen whose
    dates `state.due(now)` gives. An event dated after `now` counts for segments and touches at once, for
    the score when it comes due."""
    at = micros(now)
    if at > state.as_of:
        state.as_of = at
        for event in came_due:
            _fold_scoring(plan, state, [event.id, event.type, micros(event.occurred_at), event.properties])
        _age(plan, state)
    for event in events:
        touch = touch_of(event)
        if touch is not None:
            key = [micros(event.occurred_at), event.id]
            if state.first_touch is None or key < state.first_touch[0]:
                state.first_touch = [key, touch]
            if state.last_touch is None or key > state.last_touch[0]:
                state.last_touch = [key, touch]
        us = micros(event.occurred_at)
        row: list[Any] = [event.id, event.type, us, event.properties]
        _fold_counts(plan, state, row)  # counts see events dated later too: they slide into the window
        if us > at:
            state.pending_until = max(state.pending_until, us)
        else:
            _fold_scoring(plan, state, row)
    _prune_counts(plan, state)


def _age(plan: FoldPlan, state: ScoringState) -> None:
    """Events that aged past every decay window go to their rule's block (0 points)."""
    at = state.as_of
    for rule in plan.rules:
        if rule.window is not None:
            rule_state = state.rules[rule.index]
            while rule_state.recent and rule_state.recent[0][0] <= at - rule.window:
                _to_block(rule_state, rule_state.recent.pop(0), rule, at)


def _fold_scoring(plan: FoldPlan, state: ScoringState, row: list[Any]) -> None:
    event_id, event_type, us, properties = row
    if state.since is not None and us < state.since:
        return  # a recycled lead: behavior before the hand-back no longer counts
    model = plan.model
    for index, hand_off in enumerate(model.hand_off_now):
        if event_type == hand_off.event and filter_holds(hand_off.where, properties):
            state.hand_off[index] = True
    for rule in plan.rules_by_type.get(event_type, ()):
        if rule.rule.matches(properties):
            _fold_rule(rule, state.rules[rule.index], (us, event_id), state.as_of)


def _fold_counts(plan: FoldPlan, state: ScoringState, row: list[Any]) -> None:
    event_id, event_type, us, properties = row
    for index, spec in enumerate(plan.counts):
        if event_type == spec.event and filter_holds(spec.where, properties):
            bisect.insort(state.counts[index], (us, event_id))
            state.facts[event_id] = [event_type, us, properties]


def _fold_rule(rule: RulePlan, state: RuleState, key: Key, at: int) -> None:
    state.n += 1
    state.last = max(state.last, key) if state.last else key
    # Bands: the earliest `reach` events are the ones the bands reward.
    if rule.reach and (len(state.head) < rule.reach or key < state.head[-1]):
        bisect.insort(state.head, key)
        if len(state.head) <= rule.reach:
            return
        key = state.head.pop()
    if rule.window is not None:  # age windows: every event still inside them is listed
        if key[0] > at - rule.window:
            bisect.insort(state.recent, key)
            return
    elif len(state.recent) < RECENT_KEPT or key > state.recent[0]:
        bisect.insort(state.recent, key)
        if len(state.recent) <= RECENT_KEPT:
            return
        key = state.recent.pop(0)
    _to_block(state, key, rule, at)


def _to_block(state: RuleState, key: Key, rule: RulePlan, at: int) -> None:
    state.block += 1
    state.block_last = max(state.block_last, key) if state.block_last else key
    if rule.half_life is not None:
        if at > state.ref:
            state.block_sum *= 0.5 ** ((at - state.ref) / rule.half_life)
            state.ref = at
        state.block_sum += 0.5 ** ((state.ref - key[0]) / rule.half_life)


def _prune_counts(plan: FoldPlan, state: ScoringState) -> None:
    """Keep, per count, the events dated later than now and the newest decisive ones of the others."""
    kept: set[int] = set()
    for index, spec in enumerate(plan.counts):
        keys = state.counts[index]
        due = bisect.bisect_right(keys, (state.as_of, 2**63))
        keys[:] = keys[max(due - _decisive(spec), 0) :]
        kept.update(event_id for _, event_id in keys)
    if len(kept) != len(state.facts):
        state.facts = {event_id: fact for event_id, fact in state.facts.items() if event_id in kept}


# --- scoring from the state ----------------------------------------------------------------------------


def score_from_state(
    plan: FoldPlan,
    state: ScoringState,
    properties: dict[str, Any],
    now: datetime,
    account: AccountActivity | None = None,
) -> ScoreResult:
    """What `score_lead` gives for the folded events at `now` (the state must be folded as of `now`)."""
    model = plan.model
    at = micros(now)
    assert state.as_of == at, "fold the state as of now first"
    behavior: list[Contribution] = []
    engaged_at: datetime | None = None
    for rule, rule_state in zip(model.behavior, state.rules, strict=True):
        if rule_state.n and rule.rewards and rule_state.last is not None:
            latest = moment(rule_state.last[0])
            engaged_at = max(engaged_at or latest, latest)
        behavior.extend(_rule_items(model, rule, rule_state, now))
    return finish_score(
        model, fit_contributions(model, properties), cap_groups(model, behavior), engaged_at, now, account
    )


def _rule_items(
    model: ScoringModel, rule: BehaviorRule, state: RuleState, now: datetime
) -> list[Contribution]:
    """The rule's contributions in time order: head events, the block as one line, recent events."""
    decay = decay_of(model, rule)
    items: list[tuple[Key, int | None]] = [(key, rank) for rank, key in enumerate(state.head, start=1)]
    if state.block:
        items.append((state.block_last or (0, 0), None))
    first_recent = state.n - len(state.recent) + 1
    items += [(key, rank) for rank, key in enumerate(state.recent, start=first_recent)]
    contributions, total = [], 0.0
    for key, rank in items:
        occurred_at = moment(key[0])
        if rank is None:  # the block
            raw = (rule.points or 0) * state.block if rule.bands is None else 0
            points = raw * _block_factor(decay, state, now) if raw else 0.0
            notes = [f"{state.block} events up to this one together"]
        else:
            raw = rule.points_for(rank) - rule.points_for(rank - 1)
            factor = decay.factor(now - occurred_at) if decay else 1.0
            points = raw * factor
            notes = [decay_note(decay, factor)] if decay and raw else []
        if rule.max is not None:
            allowed = within_cap(points, total, rule.max)
            if allowed != points:
                notes.append(f"rule capped at {rule.max}")
            points = allowed
        if rule.bands is not None and rank is not None:
            notes.insert(0, f"{rank} {rule.event} so far")
        total += points
        contributions.append(
            Contribution(
                "behavior",
                rule.rule,
                points,
                key[1],
                rule.event,
                occurred_at,
                "; ".join(notes),
                before_decay=raw,
                group=rule.group,
            )
        )
    return contributions


def _block_factor(decay: Decay | None, state: RuleState, now: datetime) -> float:
    """The share of their points the block's events keep together, per event."""
    if decay is None:
        return 1.0
    if decay.half_life is None:
        return 0.0  # age windows: the block holds only events past every window
    elapsed = (micros(now) - state.ref) / micros(_EPOCH + decay.half_life)
    return state.block_sum * 0.5**elapsed / state.block


def hand_off_rule_index(state: ScoringState) -> int | None:
    return next((index for index, matched in enumerate(state.hand_off) if matched), None)


def touches(state: ScoringState) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    return (
        state.first_touch[1] if state.first_touch else None,
        state.last_touch[1] if state.last_touch else None,
    )


def count_events(state: ScoringState) -> list[EventFact]:
    """The events the segment counts need (see `_decisive`)."""
    return [
        EventFact(event_id, event_type, moment(us), properties)
        for event_id, (event_type, us, properties) in sorted(state.facts.items())
    ]
