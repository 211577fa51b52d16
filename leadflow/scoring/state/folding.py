"""Folding each new event of a lead into its state, once."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from leadflow.content.conditions import filter_holds
from leadflow.intake.tracking.attribution import touch_of
from leadflow.scoring.score import EventFact
from leadflow.scoring.state.plan import RECENT_KEPT, FoldPlan, Key, RulePlan, _decisive, micros
from leadflow.scoring.state.summary import RuleState, ScoringState


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
