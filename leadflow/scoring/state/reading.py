"""The score, its breakdown and the counts segments need, read from the state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from leadflow.scoring.model import BehaviorRule, Decay, ScoringModel
from leadflow.scoring.score import (
    AccountActivity,
    Contribution,
    EventFact,
    ScoreResult,
    behavior_line,
    cap_groups,
    decay_note,
    decay_of,
    finish_score,
    fit_contributions,
)
from leadflow.scoring.state.plan import _EPOCH, FoldPlan, Key, micros, moment
from leadflow.scoring.state.summary import RuleState, ScoringState


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
        line = behavior_line(rule, raw, points, notes, total, rank, key[1], rule.event, occurred_at)
        total += line.points
        contributions.append(line)
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
