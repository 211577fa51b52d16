"""Qualification in the store (SQLite and PostgreSQL): the account signal, lifecycle stamps that happen once
and are never silently reversed, recycling, the ledger that recomputes a past score, and rescoring
everyone after a model change, interrupted and resumed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from activities.leads import LeadActivities
from leadflow.cli import app
from leadflow.content.loader import Content, load_content
from leadflow.contracts import AssessLeadInput
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT, get_settings
from leadflow.platform.store import Database
from leadflow.platform.store.models import Account, Event, Lead, RescoreRun, SegmentMembership, StageChange
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.qualification import NotRecyclable, recycle, rescore, score_at
from leadflow.scoring.rescoring import rescore_everyone
from tests.support.helpers import settings_for_test

_numbers = iter(range(1_000_000))


def lead_with(db: Database, email: str, *kinds: str, **properties: Any) -> int:
    lead, _ = upsert_lead(db, LeadIn(email=email, properties=properties))
    if kinds:
        ingest_events(db, [EventIn(id=f"e{next(_numbers)}", type=kind, email=email) for kind in kinds])
    return lead.id


def rescored(db: Database, model: ScoringModel, lead_id: int, later: timedelta = timedelta(0)) -> Any:
    with db.transaction() as session:
        result = rescore(session, lead_id, model, clock.now() + later)
        assert result is not None
        return result


def stamps(db: Database, lead_id: int) -> list[tuple[str, str]]:
    with db.read() as session:
        changes = session.scalars(
            select(StageChange).where(StageChange.lead_id == lead_id).order_by(StageChange.id)
        )
        return [(change.from_stage, change.to_stage) for change in changes]


def changed_model(text_changes: dict[str, str], version: str) -> ScoringModel:
    source = (PROJECT_ROOT / "scoring.yaml").read_text()
    for old, new in text_changes.items():
        assert old in source
        source = source.replace(old, new)
    model = ScoringModel.model_validate(yaml.safe_load(source))
    return model.model_copy(update={"version": version, "source": source})


def test_fifteen_readers_at_one_firm_heat_the_account_and_each_earns_the_signal(
    db: Database, content: Content
) -> None:
    model = content.scoring
    readers = [lead_with(db, f"reader{n}@initech.test", "whitepaper_downloaded") for n in range(15)]
    freemail = lead_with(db, "reader@gmail.com", "whitepaper_downloaded")

    first, second, third = (rescored(db, model, lead_id) for lead_id in readers[:3])
    assert (first.result.account, second.result.account) == (0, 0)  # one or two readers: no signal yet
    assert (third.result.account, third.result.score) == (15, 25)
    assert sorted(third.colleagues_to_rescore) == readers[:2]  # they earn it too: their workflows rescore
    for lead_id in readers[:2] + readers[3:]:
        assert rescored(db, model, lead_id).colleagues_to_rescore == []  # the account is already hot
    assert rescored(db, model, freemail).result.score == 10  # free-mail is nobody's account

    with db.read() as session:
        scores = session.execute(select(Lead.email, Lead.score).where(Lead.id.in_(readers))).all()
        account = session.scalars(select(Account).where(Account.domain == "initech.test")).one()
    assert {score for _, score in scores} == {25}
    assert account.hot_since is not None

    three_weeks_on = rescored(db, model, readers[0], later=timedelta(days=21))
    assert three_weeks_on.result.account == 0
    with db.read() as session:
        assert session.get_one(Account, account.id).hot_since is None


def test_mql_and_sql_are_stamped_once_however_many_rescores_race(db: Database, content: Content) -> None:
    lead_id = lead_with(db, "ren@hooli.test", "demo_requested", "price_list_downloaded")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: rescored(db, content.scoring, lead_id), range(16)))
    assert sorted(change.to_stage for r in results for change in r.stage_changes) == ["mql", "sql"]
    assert stamps(db, lead_id) == [("lead", "mql"), ("mql", "sql")]
    with db.read() as session:
        [mql, sql] = session.scalars(select(StageChange).order_by(StageChange.id)).all()
    assert (sql.score, sql.reason) == (80, "score 80 reached the SQL threshold 80")
    assert mql.changed_at == sql.changed_at  # one jump, both stages stamped


def test_a_falling_score_never_demotes_but_a_recycled_lead_qualifies_again(
    db: Database, content: Content
) -> None:
    model = content.scoring
    lead_id = lead_with(db, "kim@hooli.test", "demo_requested", "price_list_downloaded", industry="saas")
    rescored(db, model, lead_id)
    ingest_events(db, [EventIn(id=f"u{n}", type="email_bounced", email="kim@hooli.test") for n in range(3)])
    assert rescored(db, model, lead_id).result.score == 70  # 10 + 50 + 30 - 20
    with db.read() as session:
        assert session.get_one(Lead, lead_id).stage == "sql"  # not silently reversed

    with db.transaction() as session:
        handed_back = recycle(session, lead_id, "no budget until Q3", model, clock.now())
    assert handed_back.lead.stage == "recycled" and handed_back.stage_changes == []
    assert handed_back.result.score == 10  # fit stays; behavior before the hand-back no longer counts
    with pytest.raises(NotRecyclable, match="'recycled'"), db.transaction() as session:
        recycle(session, lead_id, "again", model, clock.now())

    ingest_events(
        db,
        [
            EventIn(id="k-again-1", type="demo_requested", email="kim@hooli.test"),
            EventIn(id="k-again-2", type="price_list_downloaded", email="kim@hooli.test"),
            EventIn(id="k-again-3", type="webinar_registered", email="kim@hooli.test"),
        ],
    )
    again = rescored(db, model, lead_id, later=timedelta(seconds=1))
    assert [c.to_stage for c in again.stage_changes] == ["mql", "sql"]
    assert stamps(db, lead_id) == [
        ("lead", "mql"),
        ("mql", "sql"),
        ("sql", "recycled"),
        ("recycled", "mql"),
        ("mql", "sql"),
    ]
    with db.read() as session:
        reason = session.scalars(select(StageChange.reason).where(StageChange.to_stage == "recycled")).one()
    assert reason == "handed back by sales: no budget until Q3"


def test_the_ledger_recomputes_a_past_score_with_the_model_in_force_then(
    db: Database, content: Content
) -> None:
    lead_id = lead_with(db, "lu@hooli.test", "page_viewed", "ebook_downloaded", job_title="CTO")
    before = rescored(db, content.scoring, lead_id)
    assert before.result.score == 15 + 10
    generous = changed_model({"    points: 10\n    max: 30": "    points: 25\n    max: 30"}, "generous")
    after = rescored(db, generous, lead_id, later=timedelta(days=20))
    assert after.result.score == 31  # 15 + 25 halved every 30 days (15.7 after 20), with the new model

    with db.read() as session:
        [first, second] = [
            score_at(session, lead_id, moment)
            for moment in (clock.now(), clock.now() + timedelta(days=20, seconds=1))
        ]
    assert first is not None and second is not None
    assert (first.model_version, first.result.score) == (content.scoring.version, 25)
    assert (second.model_version, second.result.score) == ("generous", after.result.score)
    assert [c.as_json() for c in first.result.contributions] == first.snapshot.breakdown
    with db.read() as session:
        assert score_at(session, lead_id, clock.now() - timedelta(days=1)) is None  # before any score


def test_rescoring_everyone_after_a_model_change_is_batched_and_resumes_after_an_interruption(
    db: Database, content: Content
) -> None:
    engaged = [lead_with(db, f"p@firm{n}.test", "demo_requested") for n in range(7)]
    quiet = [lead_with(db, f"q@firm{n}.test") for n in range(5)]
    for lead_id in engaged + quiet:
        rescored(db, content.scoring, lead_id)
    assert stamps(db, engaged[0]) == [("lead", "mql")]
    stricter_sql = changed_model({"  sql: 80": "  sql: 50"}, "sql-at-50")

    class Interrupted(Exception):
        pass

    def interrupt_after_first_batch(rescored_in_batch: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        rescore_everyone(db, stricter_sql, batch_size=5, on_batch=interrupt_after_first_batch)
    with db.read() as session:
        run = session.scalars(select(RescoreRun)).one()
        assert (run.leads_done, run.finished_at) == (5, None)

    batches: list[int] = []
    report = rescore_everyone(db, stricter_sql, batch_size=5, on_batch=batches.append)
    assert report.resumed and batches == [5, 2]
    assert (report.leads, report.changed_stage, report.transitions) == (12, 7, {"mql→sql": 7})
    assert report.promoted_to_sql == engaged[5:]  # by this invocation; the first batch was done before
    with db.read() as session:
        assert session.scalar(select(func.count(StageChange.id)).where(StageChange.to_stage == "sql")) == 7
    again = rescore_everyone(db, stricter_sql, batch_size=5)
    assert (again.resumed, again.leads, again.changed_stage) == (False, 12, 0)


def test_leadflow_rescore_reports_how_many_leads_changed_stage(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        lead_with(db, f"d@firm{n}.test", "demo_requested")  # never scored yet: each becomes MQL
    lead_with(db, "quiet@firm9.test")
    get_settings.cache_clear()
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", db.url)
    try:
        result = CliRunner().invoke(
            app, ["rescore", "--batch-size", "2", "--no-notify"], env={"COLUMNS": "200"}
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "4/4" in result.output  # the progress bar reached the end
    assert "rescored 4 leads with model" in result.output and "3 changed stage" in result.output
    assert "│ lead │ mql │ 3     │" in result.output


@pytest.mark.parametrize(
    "keeps_nurturing", [False, True], ids=["exits on hand-off", "continue_after_handoff"]
)
async def test_a_lead_already_with_sales_is_enrolled_only_by_a_sequence_that_keeps_nurturing(
    db: Database, smtp_server: Any, content_dir: Any, keeps_nurturing: bool
) -> None:
    """Sam works with sales already, then downloads the ebook: its sequence enrolls him only when it goes on
    nurturing after a hand-off (as it would, had he been handed over while inside it)."""
    if keeps_nurturing:
        sequence = content_dir / "templates/sequences/ebook_follow_up.yaml"
        sequence.write_text(
            sequence.read_text().replace("reenroll:", "continue_after_handoff: true\nreenroll:")
        )
    runtime = Runtime.assemble(settings_for_test(db, smtp_server[1]), db, load_content(content_dir))
    lead_id = lead_with(db, "sam@hooli.test", "ebook_downloaded")
    with db.transaction() as session:
        session.get_one(Lead, lead_id).stage = "sql"
        event_id = session.scalars(select(Event.id).where(Event.lead_id == lead_id)).one()
    try:
        assessed = await ActivityEnvironment().run(
            LeadActivities(runtime).assess_lead, AssessLeadInput(lead_id, [event_id], stage="sql")
        )
    finally:
        await runtime.close()
    with db.read() as session:
        assert session.scalars(select(SegmentMembership.segment_id)).all() == ["ebook_downloaders"]
    assert [start.sequence.id for start in assessed.to_start] == (
        ["ebook_follow_up"] if keeps_nurturing else []
    )
