"""Invariants of the scoring function over generated models and event histories (hypothesis): caps hold,
decay only ever lowers what behavior is worth, and the order events arrive in changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.scoring.model import ScoringModel
from leadflow.scoring.score import EventFact, ScoreResult, score_lead

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
TYPES = ["page_viewed", "email_opened", "ebook_downloaded", "unsubscribed"]
URLS = ["/pricing", "/blog/a", "/careers", "/"]
GROUPS = ["fast", "slow", "windows", "flat"]

decays = {
    "fast": {"decay": {"half_life": "3d"}},
    "slow": {"decay": {"half_life": "60d"}},
    "windows": {"decay": {"windows": [{"within": "7d", "keep": 1}, {"within": "30d", "keep": "40%"}]}},
    "flat": {},
}


@st.composite
def bands(draw: st.DrawFn, positive: bool) -> list[dict[str, Any]]:
    cuts = sorted(draw(st.sets(st.integers(1, 12), min_size=1, max_size=4)))
    low, high = (0, 30) if positive else (-30, 30)
    points = draw(st.lists(st.integers(low, high), min_size=len(cuts), max_size=len(cuts)))
    if positive:
        points.sort()  # more engagement is never worth less
    ends = [*(cut - 1 for cut in cuts[1:]), None]
    return [{"from": c, "to": e, "points": p} for c, e, p in zip(cuts, ends, points, strict=True)]


@st.composite
def models(draw: st.DrawFn, positive: bool = False) -> ScoringModel:
    rules = []
    for index in range(draw(st.integers(1, 6))):
        rule: dict[str, Any] = {"rule": f"rule {index}", "event": draw(st.sampled_from(TYPES))}
        if draw(st.booleans()):
            rule["where"] = {"url": {"matches": draw(st.sampled_from(URLS))}}
        if draw(st.booleans()):
            rule["points"] = draw(st.integers(0, 40) if positive else st.integers(-40, 40))
        else:
            rule["bands"] = draw(bands(positive))
        if draw(st.booleans()):
            rule["max"] = draw(st.integers(0, 60))
        if draw(st.booleans()):
            rule["group"] = draw(st.sampled_from(GROUPS))
        rules.append(rule)
    groups = {
        name: {**decays[name], **({"max": draw(st.integers(0, 80))} if draw(st.booleans()) else {})}
        for name in GROUPS
    }
    return ScoringModel.model_validate(
        {"thresholds": {"mql": 40, "sql": 80}, "groups": groups, "behavior": rules}
    )


events = st.lists(
    st.builds(
        lambda number, kind, minutes, url: EventFact(
            number, kind, NOW - timedelta(minutes=minutes), {"url": url}
        ),
        st.integers(1, 10_000),
        st.sampled_from(TYPES),
        st.integers(0, 60 * 24 * 120),
        st.sampled_from(URLS),
    ),
    max_size=40,
    unique_by=lambda event: event.id,
)


def totals(result: ScoreResult, key: str) -> dict[str, float]:
    summed: dict[str, float] = {}
    for contribution in result.contributions:
        name = getattr(contribution, key)
        if name is not None:
            summed[name] = summed.get(name, 0) + contribution.points
    return summed


@settings(max_examples=150, deadline=None)
@given(models(), events)
def test_no_rule_and_no_group_ever_exceeds_its_cap(model: ScoringModel, history: list[EventFact]) -> None:
    result = score_lead(model, {}, history, NOW)
    for rule in model.behavior:
        if rule.max is not None:
            assert abs(totals(result, "rule").get(rule.rule, 0)) <= rule.max + 1e-9
    for name, group in model.groups.items():
        if group.max is not None:
            assert abs(totals(result, "group").get(name, 0)) <= group.max + 1e-9
    for contribution in result.contributions:  # decay and caps only ever take away
        assert abs(contribution.points) <= abs(contribution.before_decay or 0) + 1e-9


@settings(max_examples=150, deadline=None)
@given(models(positive=True), events, st.integers(0, 24 * 200))
def test_a_quiet_lead_never_gains_points_as_time_passes(
    model: ScoringModel, history: list[EventFact], hours_later: int
) -> None:
    now = score_lead(model, {}, history, NOW)
    later = score_lead(model, {}, history, NOW + timedelta(hours=hours_later))
    assert later.behavior <= now.behavior + 1e-9
    assert later.score <= now.score


@settings(max_examples=150, deadline=None)
@given(models(), events, st.randoms(use_true_random=False))
def test_the_order_events_arrive_in_does_not_change_the_score(
    model: ScoringModel, history: list[EventFact], random: Any
) -> None:
    shuffled = list(history)
    random.shuffle(shuffled)
    assert score_lead(model, {}, shuffled, NOW) == score_lead(model, {}, history, NOW)
