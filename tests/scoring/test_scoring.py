"""The scoring function is pure: (model, properties, events, now) in, score with every point explained out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from leadflow.scoring.model import ScoringModel
from leadflow.scoring.score import EventFact, score_lead, stages_reached

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)

MODEL = ScoringModel.model_validate(
    {
        "thresholds": {"mql": 40, "sql": 80},
        "fit": [{"rule": "Senior", "property": "job_title", "matches": r"\b(vp|director)\b", "points": 15}],
        "behavior": [
            {"rule": "Ebook", "event": "ebook_downloaded", "points": 10},
            {
                "rule": "Price list",
                "event": "page_viewed",
                "where": {"url": {"matches": "/pricing"}},
                "points": 30,
                "max": 45,
            },
            {"rule": "Unsubscribed", "event": "unsubscribed", "points": -10},
        ],
    }
)


def _event(number: int, kind: str, minutes_ago: int = 0, **properties: object) -> EventFact:
    return EventFact(number, kind, NOW - timedelta(minutes=minutes_ago), dict(properties))


def test_the_seed_examples_add_up_and_are_explained() -> None:
    events = [
        _event(1, "ebook_downloaded", 30),
        _event(2, "page_viewed", 20, url="/pricing"),
        _event(3, "page_viewed", 10, url="/blog/x"),
        _event(4, "unsubscribed", 5),
    ]
    result = score_lead(MODEL, {"job_title": "VP Marketing"}, events, NOW)
    assert (result.fit, result.behavior, result.score) == (15, 30, 45)
    assert [(c.rule, c.points, c.event_id) for c in result.contributions] == [
        ("Senior", 15, None),
        ("Ebook", 10, 1),
        ("Price list", 30, 2),
        ("Unsubscribed", -10, 4),
    ]
    assert result.top_reasons(2) == [("Price list", 30), ("Senior", 15)]


def test_a_cap_holds_whatever_order_the_events_arrive_in() -> None:
    events = [_event(n, "page_viewed", 60 - n, url="/pricing") for n in range(1, 6)]
    forward = score_lead(MODEL, {}, events, NOW)
    backward = score_lead(MODEL, {}, list(reversed(events)), NOW)
    assert forward.score == backward.score == 45
    assert [c.points for c in forward.contributions] == [30, 15, 0, 0, 0]
    assert forward.contributions == backward.contributions


def test_events_after_now_do_not_count_yet() -> None:
    assert score_lead(MODEL, {}, [_event(1, "ebook_downloaded", -5)], NOW).score == 0


def test_stages_move_forward_only_and_a_jump_stamps_both() -> None:
    thresholds = MODEL.thresholds
    assert stages_reached("lead", 85, thresholds) == ["mql", "sql"]
    assert stages_reached("lead", 45, thresholds) == ["mql"]
    assert stages_reached("mql", 45, thresholds) == []
    assert stages_reached("sql", 10, thresholds) == []
    assert stages_reached("recycled", 90, thresholds) == ["mql", "sql"]
    assert stages_reached("customer", 200, thresholds) == []
