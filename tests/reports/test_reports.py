"""Reports on a seeded store with known answers (SQLite and PostgreSQL): the funnel with its conversions and
times between stages, sequence steps, hand-off, scoring health; A/B significance; empty periods."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.platform import clock
from leadflow.platform.settings import get_settings
from leadflow.platform.store import Database
from leadflow.platform.store.models import Enrollment, EnrollmentStep, Lead
from leadflow.reports import (
    EVERYONE,
    FUNNEL,
    Period,
    build_report,
    tables,
    two_proportion_test,
)
from tests.support.report_data import CREATED, DAY, NOW, SEQUENCE, Seed, seed

FUNNEL_STAGES = FUNNEL[1:]


def _quantiles(values: list[float]) -> tuple[float, float]:
    """Median and 90th percentile with linear interpolation between ranks (what the report promises)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0], ordered[0]
    return statistics.median(ordered), statistics.quantiles(ordered, n=10, method="inclusive")[8]


def _reached(data: Seed, number: int, stage: str) -> float | None:
    """Days after creation a lead first reached `stage` or any later one (skipped stages count as passed)."""
    later = FUNNEL[FUNNEL.index(stage) :]
    days = [d for s, d in data.stages.get(number, {}).items() if s in later]
    return min(days) if days else None


def _report(db: Database, since: str = "30d") -> Any:
    with db.read() as session:
        return build_report(session, Period.last(since, NOW))


def test_the_funnel_counts_converts_and_times_each_stage(db: Database, content: Any) -> None:
    data = seed(db, content)
    report = _report(db)
    cohort = range(1, 11)  # lead 11 was created before the period
    expected_counts = [len(cohort)] + [
        sum(1 for n in cohort if _reached(data, n, stage) is not None) for stage in FUNNEL_STAGES
    ]
    assert [stage.leads for stage in report.funnel.stages] == expected_counts == [10, 7, 4, 1, 0]
    assert [stage.conversion for stage in report.funnel.stages] == [None, 0.7, 4 / 7, 0.25, 0.0]
    for before, stage in zip(FUNNEL, FUNNEL_STAGES, strict=False):
        gaps = [
            (_reached(data, n, stage) or 0) - (_reached(data, n, before) or 0)
            if before != "lead"
            else _reached(data, n, stage)
            for n in cohort
            if _reached(data, n, stage) is not None
        ]
        found = next(s for s in report.funnel.stages if s.stage == stage)
        if not gaps:
            assert found.median_seconds is None and found.p90_seconds is None
            continue
        median, p90 = _quantiles([gap * 86400 for gap in gaps])  # type: ignore[operator]
        assert found.median_seconds == pytest.approx(median, abs=1e-3), stage
        assert found.p90_seconds == pytest.approx(p90, abs=1e-3), stage
    # by hand, for the reader: lead → MQL took 1, 2, 3, 4, 5, 6 and 10 days
    assert report.funnel.stages[1].median_seconds == pytest.approx(4 * 86400, abs=1e-3)
    assert report.funnel.stages[1].p90_seconds == pytest.approx(7.6 * 86400, abs=1e-3)
    to_sql = [_reached(data, n, "sql") for n in cohort if _reached(data, n, "sql") is not None]
    assert report.funnel.time_to_sql.median == pytest.approx(
        _quantiles([d * 86400 for d in to_sql])[0], abs=1e-3
    )  # type: ignore[operator]
    histogram = dict(report.funnel.time_to_sql_histogram)
    assert histogram == {
        "0–1 d": 0,
        "1–3 d": 1,
        "3–7 d": 1,
        "7–14 d": 2,
        "14–30 d": 0,
        "30–60 d": 0,
        "60+ d": 0,
    }
    assert report.funnel.biggest_drop is not None
    assert report.funnel.biggest_drop.where == "Opportunity → Customer"


def test_the_funnel_by_source_segment_and_sequence(db: Database, content: Any) -> None:
    data = seed(db, content)
    funnel = _report(db).funnel

    def expected(members: list[int]) -> list[int]:
        return [len(members)] + [
            sum(1 for n in members if _reached(data, n, stage) is not None) for stage in FUNNEL_STAGES
        ]

    by_source = {row.group: row.counts for row in funnel.by_utm_source}
    assert by_source == {
        source: expected([n for n in range(1, 11) if data.utm_source[n] == source])
        for source in ("google", "newsletter")
    }
    assert by_source["google"] == [5, 5, 3, 1, 0]
    assert {row.group: row.counts for row in funnel.by_utm_medium} == {"(none)": expected(list(range(1, 11)))}
    assert {row.group: row.counts for row in funnel.by_segment} == {
        "ebook_downloaders": expected(list(data.segment))
    }
    assert {row.group: row.counts for row in funnel.by_sequence} == {
        SEQUENCE: expected(list(data.enrollments))
    }
    google = next(row for row in funnel.by_utm_source if row.group == "google")
    assert google.conversions == [None, 1.0, 0.6, 1 / 3, 0.0]


def test_weekly_mql_and_sql(db: Database, content: Any) -> None:
    data = seed(db, content)
    weekly = _report(db).funnel.weekly
    expected: Counter[tuple[str, str]] = Counter()
    for number in data.stages:
        for stage in ("mql", "sql"):
            moment = data.reached(number, stage)
            if moment and NOW - timedelta(days=30) <= moment < NOW:
                monday = (moment - timedelta(days=moment.weekday())).date().isoformat()
                expected[monday, stage] += 1
    assert {(week, "mql"): mql for week, mql, _ in weekly if mql} | {
        (week, "sql"): sql for week, _, sql in weekly if sql
    } == dict(expected)
    assert all(weekday == 0 for weekday in (CREATED.fromisoformat(w).weekday() for w, _, _ in weekly))


def test_sequence_steps(db: Database, content: Any) -> None:
    data = seed(db, content)
    report = _report(db).sequences
    (sequence,) = report.sequences
    assert (
        sequence.sequence,
        sequence.enrolled,
        sequence.running,
        sequence.converted,
        sequence.handed_to_sales,
    ) == (
        SEQUENCE,
        4,
        1,
        1,
        1,
    )
    steps = {step.step: step for step in sequence.steps}
    assert len(steps) == len(content.sequences[SEQUENCE].steps)
    for index, step in steps.items():
        position = int(index)
        assert step.entered == sum(1 for current, _, _ in data.enrollments.values() if current >= position)
        messages = {lead: status for (lead, at), status in data.messages.items() if at == position}
        assert step.sent == len(messages)
        assert step.bounced == sum(1 for status in messages.values() if status == "failed")
        assert step.delivered == step.sent - step.bounced
        assert step.opened == len({lead for lead, at in data.opened if at == position})
        assert step.clicked == len({lead for lead, at in data.clicked if at == position})
    assert steps["0"].label == "send email ebook_delivery"
    assert steps["1"].label == "wait 3d"
    assert (
        steps["0"].entered,
        steps["0"].sent,
        steps["0"].opened,
        steps["0"].clicked,
        steps["0"].unsubscribed,
    ) == (
        4,
        4,
        2,
        1,
        1,
    )
    assert (steps["2"].at_now, steps["2"].goal_reached, steps["2"].handed_to_sales, steps["2"].bounced) == (
        1,
        1,
        1,
        1,
    )
    assert report.biggest_drop is not None and report.biggest_drop.where.startswith(f"{SEQUENCE} step 0")


def test_handoff_per_salesperson(db: Database, content: Any) -> None:
    data = seed(db, content)
    handoffs = _report(db).handoffs
    rows = {row.salesperson: row for row in handoffs.salespeople}
    for person in ("alice@sales.test", "bob@sales.test"):
        mine = [n for n, (who, _) in data.handoffs.items() if who == person]
        waits = [data.handoffs[n][1] for n in mine if data.handoffs[n][1] is not None]
        row = rows[person]
        assert row.handed == len(mine)
        assert row.notified == len(waits)
        assert row.median_seconds_to_notify == pytest.approx(statistics.median(waits))  # type: ignore[type-var]
        assert row.opportunities == sum(1 for n in mine if "opportunity" in data.stages[n])
        assert row.recycled == sum(1 for n in mine if "recycled" in data.stages[n])
        assert row.conversion == row.opportunities / row.handed
    assert (rows["alice@sales.test"].handed, rows["alice@sales.test"].median_seconds_to_notify) == (2, 45)
    assert handoffs.total.salesperson == EVERYONE
    assert (handoffs.total.handed, handoffs.total.notified, handoffs.total.median_seconds_to_notify) == (
        4,
        3,
        60,
    )


def test_scoring_health(db: Database, content: Any) -> None:
    data = seed(db, content)
    scoring = _report(db).scoring
    scores = [score for score, _, _ in data.scores.values()]
    distribution = dict(scoring.score_distribution)
    assert distribution["< 0"] == sum(1 for s in scores if s < 0)
    assert distribution["0–9"] == sum(1 for s in scores if 0 <= s < 10)
    assert distribution["40–49"] == sum(1 for s in scores if 40 <= s < 50) == 4
    assert sum(distribution.values()) == len(scores)
    assert scoring.temperature == dict(Counter(t for _, _, t in data.scores.values()))
    assert scoring.grades == {g: sum(1 for _, grade, _ in data.scores.values() if grade == g) for g in "ABCD"}
    in_period = [n for n in data.stages if (m := data.reached(n, "mql")) and m >= NOW - timedelta(days=30)]
    never = [n for n in in_period if not {"sql", "opportunity", "customer"} & set(data.stages[n])]
    assert (scoring.mqls, scoring.mql_never_sql) == (len(in_period), len(never)) == (7, 4)


def test_hot_leads_hottest_first(db: Database, content: Any) -> None:
    data = seed(db, content)
    hot = _report(db).hot_leads
    expected = sorted(
        (n for n, (_, _, t) in data.scores.items() if t == "hot"), key=lambda n: -data.scores[n][0]
    )
    assert [lead.email for lead in hot] == [f"lead{n}@example.test" for n in expected]
    assert hot[0].owner == "alice@sales.test" and hot[0].grade == "A"


def test_an_empty_store_and_an_empty_period_report_without_error(db: Database, content: Any) -> None:
    empty = _report(db)
    assert [stage.leads for stage in empty.funnel.stages] == [0] * len(FUNNEL)
    assert empty.funnel.biggest_drop is None and empty.sequences.sequences == []
    assert empty.handoffs.total.handed == 0 and empty.scoring.mql_never_sql_share is None
    assert tables(empty) and json.dumps(empty.as_json())
    seed(db, content)
    with db.read() as session:
        later = build_report(session, Period(NOW + 400 * DAY, NOW + 430 * DAY))
    assert later.funnel.stages[0].leads == 0 and later.sequences.sequences == []
    assert all(week[1:] == (0, 0) for week in later.funnel.weekly)
    assert tables(later)


def test_a_b_split_difference_and_significance(db: Database, content: Any) -> None:
    """From the enrollment journal as the sequence workflow writes it (the split step reached, its decision
    `split: variant B` on the same label, then the variant's own steps `0.B.0`): each variant's goal rate is
    compared, and the steps inside the split are counted once per enrollment."""
    seed(db, content, Seed(enrollments={}, messages={}, opened=(), clicked=(), handoffs={}))
    outcomes = {"A": (40, 8), "B": (40, 18)}
    definition = {
        "steps": [
            {
                "split": [
                    {"name": name, "steps": [{"send": {"channel": "email", "template": f"ab_{name}"}}]}
                    for name in outcomes
                ]
            }
        ]
    }
    with db.transaction() as session:
        lead_ids = list(session.scalars(select(Lead.id).order_by(Lead.id)))
        number = 0
        for variant, (total, converted) in outcomes.items():
            for index in range(total):
                lead, wid = lead_ids[number % len(lead_ids)], f"sequence-ab-{variant}-{index}"
                number += 1
                session.add(
                    Enrollment(
                        workflow_id=wid,
                        lead_id=lead,
                        sequence_id="ab",
                        sequence_version="v",
                        definition=definition,
                        status="converted" if index < converted else "running",
                        current_step=0,
                        started_at=CREATED,
                    )
                )
                for step, kind, detail in (
                    ("0", "split", ""),
                    ("0", "note", f"split: variant {variant}"),
                    (f"0.{variant}.0", "send", ""),
                ):
                    session.add(
                        EnrollmentStep(
                            workflow_id=wid, lead_id=lead, step=step, kind=kind, at=CREATED, detail=detail
                        )
                    )
    report = _report(db)
    (split,) = report.sequences.splits
    assert (split.sequence, split.step) == ("ab", "0")
    assert [(v.name, v.leads, v.converted) for v in split.variants] == [("A", 40, 8), ("B", 40, 18)]
    assert split.difference == pytest.approx(18 / 40 - 8 / 40)
    pooled = 26 / 80
    z = (18 / 40 - 8 / 40) / (pooled * (1 - pooled) * (2 / 40)) ** 0.5
    p = 2 * (1 - statistics.NormalDist().cdf(z))
    assert split.z == pytest.approx(z) and split.p_value == pytest.approx(p)
    assert split.significant is (p < 0.05) is True
    (ab,) = [s for s in report.sequences.sequences if s.sequence == "ab"]
    assert [(row.step, row.entered) for row in ab.steps] == [("0", 80), ("0.A.0", 40), ("0.B.0", 40)]


def test_two_proportion_test_against_a_textbook_example() -> None:
    # 200/1000 against 250/1000: pooled 0.225, standard error √(0.225·0.775·2/1000) = 0.018675, so z = 0.05 / 0.018675 ≈ 2.6774, p ≈ 0.0074
    result = two_proportion_test(200, 1000, 250, 1000)
    assert result is not None and result.z == pytest.approx(2.6774, abs=1e-4)
    assert result.p_value == pytest.approx(0.0074, abs=1e-4)
    assert two_proportion_test(0, 0, 1, 2) is None
    same = two_proportion_test(0, 10, 0, 10)
    assert same is not None and same.p_value is None


def test_report_command_prints_table_json_and_csv(
    db: Database, content: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db, content)
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", db.url)
    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: table cells are not wrapped
    get_settings.cache_clear()
    try:
        with clock.frozen_at(NOW):
            as_json = CliRunner().invoke(app, ["report", "--since", "30d", "--format", "json"])
            as_table = CliRunner().invoke(app, ["report", "--since", "4w"])
            as_csv = CliRunner().invoke(app, ["report", "--format", "csv"])
            wrong = CliRunner().invoke(app, ["report", "--since", "soon"])
    finally:
        get_settings.cache_clear()
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert [stage["leads"] for stage in document["funnel"]["stages"]] == [10, 7, 4, 1, 0]
    assert as_table.exit_code == 0 and "Funnel (leads created in the period)" in as_table.stdout
    assert "alice@sales.test" in as_table.stdout
    assert as_csv.exit_code == 0 and "Funnel (leads created in the period),MQL,7,70.0 %" in as_csv.stdout
    assert wrong.exit_code == 2 and "48h, 30d, 12w" in wrong.output
