"""What a scoring model asks the state to keep (a fold plan per model and segments), and the state's time unit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from leadflow.scoring.model import BehaviorRule, Decay, ScoringModel
from leadflow.scoring.score import decay_of
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
