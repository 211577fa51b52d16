"""The shipped scoring model, read as a marketer's stories: the pure function, no database, no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest

from leadflow.content.loader import Content
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.score import AccountActivity, EventFact, ScoreResult, score_lead, tidy

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
DAY = timedelta(days=1)
_ids = count(1)


@pytest.fixture(scope="module")
def model(content: Content) -> ScoringModel:
    return content.scoring


def did(kind: str, ago: timedelta = timedelta(0), **properties: Any) -> EventFact:
    return EventFact(next(_ids), kind, NOW - ago, dict(properties))


def points_by_rule(result: ScoreResult) -> dict[str, float]:
    totals: dict[str, float] = {}
    for contribution in result.contributions:
        totals[contribution.rule] = totals.get(contribution.rule, 0) + contribution.points
    return totals


def test_ebook_then_price_list_then_unsubscribe_is_ten_plus_thirty_minus_ten(model: ScoringModel) -> None:
    events = [did("ebook_downloaded"), did("price_list_downloaded"), did("unsubscribed")]
    result = score_lead(model, {}, events, NOW)
    assert result.score == 30
    assert points_by_rule(result) == {
        "Ebook downloaded": 10,
        "Price list downloaded": 30,
        "Unsubscribed": -10,
    }
    assert [c.event_id for c in result.contributions] == [e.id for e in events[1:2] + events[:1] + events[2:]]


@pytest.mark.parametrize(("opens", "points"), [(1, 5), (3, 5), (5, 5), (6, 10), (10, 10), (25, 10)])
def test_email_opens_earn_engagement_bands_not_points_per_open(
    model: ScoringModel, opens: int, points: int
) -> None:
    events = [did("email_opened", timedelta(seconds=n)) for n in range(opens)]
    result = score_lead(model, {}, events, NOW)
    assert result.score == points
    # The open that entered a band carries its points; the breakdown says how many opens so far.
    earning = [(c.note.split(";")[0], tidy(c.points)) for c in result.contributions if tidy(c.points)]
    assert earning == [("1 email_opened so far", 5)] + ([("6 email_opened so far", 5)] if opens >= 6 else [])


def test_a_careers_page_visitor_and_a_student_lose_points(model: ScoringModel) -> None:
    result = score_lead(
        model, {"job_title": "Marketing intern"}, [did("page_viewed", url="/careers/sdr")], NOW
    )
    assert points_by_rule(result) == {"Student or intern": -20, "Careers page viewed": -10}
    assert (result.score, result.grade) == (-30, "D")


def test_fit_is_graded_a_to_d_next_to_the_score(model: ScoringModel) -> None:
    def grade(properties: dict[str, Any]) -> str:
        return score_lead(model, properties, [], NOW).grade

    ideal = {"job_title": "VP Sales", "company_size": 400, "industry": "SaaS", "country": "DE"}
    assert grade(ideal) == "A"  # 15 + 10 + 10 + 5
    assert grade({"job_title": "Head of Growth", "company_size": 80}) == "B"  # 25
    assert grade({"industry": "fintech", "budget": "50k+"}) == "B"  # BANT answers count as fit
    assert grade({"industry": "fintech"}) == "C"
    assert grade({"job_title": "Engineer"}) == "D"


def test_one_noisy_behavior_cannot_qualify_a_lead_alone(model: ScoringModel) -> None:
    blog = [did("page_viewed", timedelta(minutes=n), url=f"/blog/{n}") for n in range(200)]
    pricing = [did("page_viewed", timedelta(minutes=n), url="/pricing") for n in range(20)]
    result = score_lead(model, {}, blog + pricing, NOW)
    assert points_by_rule(result) == {"Blog post read": 10, "Pricing page viewed": 30}
    assert result.score < model.thresholds.mql + 1


def test_the_content_group_caps_pages_downloads_and_webinars_together(model: ScoringModel) -> None:
    events = [
        *(did("ebook_downloaded", timedelta(seconds=n)) for n in range(3)),  # 30, the rule's cap
        *(did("whitepaper_downloaded", timedelta(seconds=n)) for n in range(2)),  # 20
        did("webinar_registered"),  # 20, but the group stops at 60
    ]
    result = score_lead(model, {}, events, NOW)
    assert result.score == 60
    [capped] = [c for c in result.contributions if "group content capped at 60" in c.note]
    assert capped.before_decay == 20 and capped.points == pytest.approx(10, abs=0.01)


def test_behavior_fades_with_age_and_the_breakdown_shows_before_and_after(model: ScoringModel) -> None:
    events = [
        did("page_viewed", 30 * DAY, url="/pricing"),  # content: half-life 30 days
        did("demo_requested", 100 * DAY),  # intent: 100% for 90 days, 50% until 180 days
        did("unsubscribed", 365 * DAY),  # warning signs do not fade
    ]
    result = score_lead(model, {}, events, NOW)
    explained = {c.rule: (c.before_decay, round(c.points, 2), c.note) for c in result.contributions}
    assert explained == {
        "Pricing page viewed": (15, 7.5, "half-life 30d: 50% kept"),
        "Demo requested": (50, 25, "age windows: 50% kept"),
        "Unsubscribed": (-10, -10, ""),
    }
    assert result.score == 23  # 7.5 + 25 - 10 = 22.5, rounded half up
    older = score_lead(model, {}, events, NOW + 90 * DAY)
    assert {c.rule: c.points for c in older.contributions}["Demo requested"] == 0


def test_temperature_needs_both_score_and_recent_activity(model: ScoringModel) -> None:
    def temperature(ago: timedelta, *kinds: str) -> str:
        return score_lead(model, {}, [did(kind, ago) for kind in kinds], NOW).temperature

    assert temperature(2 * DAY, "demo_requested", "price_list_downloaded") == "hot"  # 80, 2 days ago
    assert temperature(10 * DAY, "demo_requested", "price_list_downloaded") == "warm"
    assert temperature(40 * DAY, "demo_requested", "price_list_downloaded") == "cold"
    assert temperature(0 * DAY, "email_opened") == "cold"  # recent, but 5 points


def test_a_quiet_lead_is_rescored_when_its_temperature_or_a_decay_window_changes(model: ScoringModel) -> None:
    demo = did("demo_requested", timedelta(0))
    now = score_lead(model, {}, [demo], NOW)
    assert (now.score, now.temperature, now.next_change_at) == (50, "warm", NOW + 30 * DAY)
    later = score_lead(model, {}, [demo], NOW + 30 * DAY)
    assert (later.temperature, later.next_change_at) == ("cold", NOW + 90 * DAY)
    latest = score_lead(model, {}, [demo], NOW + 180 * DAY)
    assert (latest.score, latest.next_change_at) == (0, None)  # nothing left to cool: no timer
    # Half-life points fade a little every day; the lead is rescored once that shows: 5 points (or across a
    # temperature's score), and a smaller change after a week.
    fading = score_lead(model, {}, [did("ebook_downloaded")], NOW)  # 10 points: one lost in a week
    assert fading.next_change_at == NOW + 7 * DAY
    reader = [did("page_viewed", url="/pricing"), did("ebook_downloaded"), did("whitepaper_downloaded")]
    busy = score_lead(model, {}, reader, NOW)  # 35 points: five of them gone after 6 days
    assert (busy.score, busy.next_change_at) == (35, NOW + 6 * DAY)
    assert score_lead(model, {}, reader, NOW + 6 * DAY).score == 30


def test_fifteen_people_from_one_firm_reading_the_same_whitepaper_heat_the_account(
    model: ScoringModel,
) -> None:
    readers = [NOW - timedelta(hours=n) for n in range(15)]
    for me, read_at in enumerate(readers):
        colleagues = AccountActivity("initech.test", tuple(t for n, t in enumerate(readers) if n != me))
        paper = EventFact(me, "whitepaper_downloaded", read_at, {"title": "Scoring that works"})
        result = score_lead(model, {}, [paper], NOW, colleagues)
        assert (result.score, result.account, result.account_hot) == (25, 15, True)
        [signal] = [c for c in result.contributions if c.kind == "account"]
        assert signal.note == "15 contacts of initech.test active within 14d"
    alone = score_lead(model, {}, [paper], NOW, AccountActivity("initech.test", (NOW,)))
    assert (alone.score, alone.account_hot) == (10, False)  # two contacts are not yet a signal
    stale = AccountActivity("initech.test", (NOW - 20 * DAY, NOW - 30 * DAY))
    assert score_lead(model, {}, [paper], NOW, stale).account == 0  # active outside the window


def test_a_recycled_lead_counts_only_behavior_after_it_was_handed_back(model: ScoringModel) -> None:
    events = [did("demo_requested", 20 * DAY), did("ebook_downloaded", DAY)]
    result = score_lead(model, {"industry": "saas"}, events, NOW, since=NOW - 10 * DAY)
    assert points_by_rule(result) == {"Target industry": 10, "Ebook downloaded": pytest.approx(9.8, abs=0.1)}
