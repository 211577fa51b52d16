"""Incremental scoring (leadflow.scoring.state) against the full recompute (leadflow.scoring.score.score_lead): over
random scoring models and random event streams (types, properties the rules read, timestamps in and out of
order, some dated later than the assessment), folding the events in batches gives what scoring all of them
at once gives."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.intake.tracking.attribution import first_and_last_touch
from leadflow.scoring import state as scoring_state
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.score import EventFact, ScoreResult, hand_off_now_rule, score_lead
from leadflow.scoring.state import (
    RECENT_KEPT,
    FoldPlan,
    ScoringState,
    count_events,
    fold,
    hand_off_rule_index,
    score_from_state,
    touches,
)
from leadflow.segments.evaluation import (
    MOMENTS_ASKED,
    LeadFacts,
    _count_moments,
    evaluate_segments,
    next_membership_change,
)
from leadflow.segments.model import Segment

START = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = ["page_viewed", "email_opened", "demo_requested", "form_submitted"]
EVENT_TYPES = st.sampled_from(TYPES[:2] * 3 + TYPES)  # mostly views and opens: rules see many events
URLS = [
    "https://x.test/pricing",
    "https://x.test/blog/a",
    "https://x.test/careers",
    "https://x.test/events/1",
]

decays = st.one_of(
    st.none(),
    st.builds(lambda days: {"half_life": f"{days}d"}, st.integers(1, 60)),
    st.builds(
        lambda a, b, keep: {
            "windows": [{"within": f"{a}d", "keep": "100%"}, {"within": f"{a + b}d", "keep": keep}]
        },
        st.integers(1, 30),
        st.integers(1, 60),
        st.sampled_from(["50%", "10%", "100%"]),
    ),
)


@st.composite
def rules(draw: Any, group_names: list[str]) -> dict[str, Any]:
    event = draw(st.sampled_from(TYPES))
    rule: dict[str, Any] = {"rule": f"rule {draw(st.integers(0, 10**6))}", "event": event}
    if event == "page_viewed" and draw(st.booleans()):
        rule["where"] = {"url": {"matches": draw(st.sampled_from(["/pricing", "/blog/", "/careers"]))}}
    if draw(st.integers(0, 3)) == 0:
        first = draw(st.integers(1, 4))
        second = first + draw(st.integers(1, 4))
        rule["bands"] = [
            {"from": 1, "to": first, "points": draw(st.integers(-10, 20))},
            {"from": first + 1, "to": second, "points": draw(st.integers(-10, 30))},
            {"from": second + 1, "points": draw(st.integers(-10, 30))},
        ]
    else:
        rule["points"] = draw(st.integers(-20, 40).filter(bool))
    if draw(st.booleans()):
        rule["max"] = draw(st.integers(0, 60))
    if group_names and draw(st.integers(0, 3)):
        rule["group"] = draw(st.sampled_from(group_names))
    return rule


@st.composite
def models(draw: Any) -> ScoringModel:
    group_names = draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3))
    groups = {}
    for name in group_names:
        group: dict[str, Any] = {}
        if (decay := draw(decays)) is not None:
            group["decay"] = decay
        if draw(st.booleans()):
            group["max"] = draw(st.integers(0, 80))
        groups[name] = group
    return ScoringModel.model_validate(
        {
            "thresholds": {"mql": 20, "sql": 60},
            "groups": groups,
            "fit": [{"rule": "Big", "property": "size", "gte": 100, "points": 15}],
            "behavior": draw(st.lists(rules(group_names), min_size=1, max_size=6)),
            "hand_off_now": [{"rule": "Demo", "event": "demo_requested", "where": {"form": "contact"}}],
        }
    )


@st.composite
def streams(draw: Any) -> list[tuple[int, list[EventFact]]]:
    """Batches of events, each with the minute it arrives at; ids in arrival order, dates in any order."""
    batches, next_id, minute = [], 1, 0
    for _ in range(draw(st.integers(1, 6))):
        minute += draw(st.integers(0, 60 * 24 * 40))
        batch = []
        for _ in range(draw(st.integers(0, 25))):
            event_type = draw(EVENT_TYPES)
            properties: dict[str, Any] = {}
            if event_type == "page_viewed":
                properties["url"] = draw(st.sampled_from(URLS))
                if draw(st.integers(0, 4)) == 0:
                    properties["utm_source"] = draw(st.sampled_from(["news", "ads"]))
            if event_type in ("form_submitted", "demo_requested"):
                properties["form"] = draw(st.sampled_from(["contact", "newsletter"]))
            # Mostly in the past of the arrival, at times a day ahead (a client's clock), at times same minute.
            offset = draw(st.one_of(st.integers(-60 * 24 * 120, 0), st.integers(0, 60 * 24), st.just(0)))
            batch.append(
                EventFact(next_id, event_type, START + timedelta(minutes=minute + offset), properties)
            )
            next_id += 1
        batches.append((minute, batch))
    return batches


def came_due(state: ScoringState, seen: list[EventFact], now: datetime) -> list[EventFact]:
    """What the store gives for `state.due(now)`."""
    dates = state.due(now)
    return [e for e in seen if dates[0] < e.occurred_at <= dates[1]] if dates else []


def agree(incremental: ScoreResult, full: ScoreResult, model: ScoringModel) -> None:
    assert incremental.fit == full.fit
    assert incremental.account == full.account
    assert math.isclose(incremental.behavior, full.behavior, rel_tol=1e-9, abs_tol=1e-6)
    assert incremental.grade == full.grade
    assert incremental.engaged_at == full.engaged_at
    if abs((full.fit + full.behavior + full.account) % 1 - 0.5) > 1e-6:  # not on a rounding edge
        assert incremental.score == full.score
        assert incremental.temperature == full.temperature
        assert incremental.next_change_at == full.next_change_at
    # Rules outside a capped group: the same total each (a group cap may split its cut differently between
    # a rule's events shown together).
    capped = {name for name, group in model.groups.items() if group.max is not None}
    for rule in model.behavior:
        if rule.group in capped:
            continue
        mine = sum(c.points for c in incremental.contributions if c.rule == rule.rule)
        theirs = sum(c.points for c in full.contributions if c.rule == rule.rule)
        assert math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-6), rule.rule


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=models(),
    batches=streams(),
    recycled=st.booleans(),
    size=st.booleans(),
    kept=st.sampled_from([1, 2, RECENT_KEPT]),
)
def test_folding_events_in_batches_scores_like_scoring_them_all(
    model: ScoringModel, batches: list[tuple[int, list[EventFact]]], recycled: bool, size: bool, kept: int
) -> None:
    with patch.object(scoring_state, "RECENT_KEPT", kept):  # fewer listed events: more of them summed
        check_folding(model, batches, recycled, size)


def check_folding(
    model: ScoringModel, batches: list[tuple[int, list[EventFact]]], recycled: bool, size: bool
) -> None:
    plan = FoldPlan.of(model)
    since = START + timedelta(days=20) if recycled else None
    properties = {"size": 500 if size else 5}
    state = ScoringState.empty(plan, since)
    seen: list[EventFact] = []
    for minute, batch in batches:
        now = START + timedelta(minutes=minute)
        fold(plan, state, batch, now, came_due(state, seen, now))
        seen += batch
        full = score_lead(model, properties, seen, now, since=since)
        if plan.foldable:
            agree(score_from_state(plan, state, properties, now), full, model)
        assert touches(state) == first_and_last_touch(seen)
        expected = hand_off_now_rule(model, seen, now, since=since)
        index = hand_off_rule_index(state)
        assert (model.hand_off_now[index] if index is not None else None) == expected


def test_a_rule_with_few_events_lists_each_of_them() -> None:
    """Up to RECENT_KEPT events a rule's breakdown is the full recompute's, line for line."""
    model = ScoringModel.model_validate(
        {
            "thresholds": {"mql": 20, "sql": 60},
            "groups": {"content": {"decay": {"half_life": "30d"}, "max": 60}},
            "behavior": [
                {"rule": "Blog", "event": "page_viewed", "points": 3, "max": 10, "group": "content"}
            ],
        }
    )
    plan = FoldPlan.of(model)
    events = [EventFact(n, "page_viewed", START + timedelta(days=n), {}) for n in range(1, RECENT_KEPT + 1)]
    state = ScoringState.empty(plan, None)
    now = START + timedelta(days=40)
    fold(plan, state, reversed(events), now)
    assert (
        score_from_state(plan, state, {}, now).contributions
        == score_lead(model, {}, events, now).contributions
    )
    fold(plan, state, [EventFact(99, "page_viewed", START, {})], now)
    lines = score_from_state(plan, state, {}, now).contributions
    assert len(lines) == RECENT_KEPT + 1 and lines[0].note.startswith("1 events up to this one together")


def test_a_capped_group_that_mixes_signs_is_not_folded() -> None:
    """Capping in time order then depends on the order of every event: such a model is scored from them all."""
    mixed = {
        "thresholds": {"mql": 20, "sql": 60},
        "groups": {"g": {"max": 10}},
        "behavior": [
            {"rule": "Plus", "event": "page_viewed", "points": 5, "group": "g"},
            {"rule": "Minus", "event": "email_opened", "points": -5, "group": "g"},
        ],
    }
    assert not FoldPlan.of(ScoringModel.model_validate(mixed)).foldable
    del mixed["groups"]["g"]["max"]  # type: ignore[index]
    assert FoldPlan.of(ScoringModel.model_validate(mixed)).foldable


EVENT_PAGES = Segment.model_validate(
    {
        "id": "regulars",
        "name": "Regulars",
        "entry": {
            "count": {
                "event": "page_viewed",
                "where": {"url": {"matches": "/events"}},
                "at_least": 3,
                "within": "7d",
            }
        },
        "exit": {
            "count": {
                "event": "page_viewed",
                "where": {"url": {"matches": "/events"}},
                "at_most": 1,
                "within": "7d",
            }
        },
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=streams())
def test_the_events_kept_for_segment_counts_decide_them_as_all_events_do(
    batches: list[tuple[int, list[EventFact]]],
) -> None:
    model = ScoringModel.model_validate({"thresholds": {"mql": 20, "sql": 60}})
    plan = FoldPlan.of(model, [EVENT_PAGES])
    state = ScoringState.empty(plan, None)
    seen: list[EventFact] = []
    for member in (set(), {"regulars"}):
        for minute, batch in batches:
            now = START + timedelta(minutes=minute)
            fold(plan, state, batch, now, came_due(state, seen, now))
            seen += batch
            full = LeadFacts(now=now, events=tuple(seen))
            kept = LeadFacts(now=now, events=tuple(count_events(state)))
            theirs, mine = (
                evaluate_segments([EVENT_PAGES], member, full),
                evaluate_segments([EVENT_PAGES], member, kept),
            )
            assert (mine.joined, mine.left) == (theirs.joined, theirs.left)
            assert [e.event for e in mine.entered] == [e.event for e in theirs.entered]
            after = (member | set(theirs.joined)) - set(theirs.left)  # as the assessment keeps them
            mine_next = next_membership_change([EVENT_PAGES], after, kept)
            theirs_next = next_membership_change([EVENT_PAGES], after, full)
            if len(_count_moments(EVENT_PAGES, full)) <= MOMENTS_ASKED:
                assert mine_next == theirs_next
            else:  # all events: woken at the 64th moment anyway, to ask again then; fewer with the kept ones
                assert theirs_next is not None and (mine_next is None or mine_next >= theirs_next)
        state, seen = ScoringState.empty(plan, None), []
