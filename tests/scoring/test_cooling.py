"""A lead that goes quiet cools down with no new event: the lead workflow's durable timer rescores it when
its temperature or a decay window changes. Weeks pass in seconds on the time-skipping test server."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Lead, ScoreSnapshot, StageChange
from tests.support.helpers import Inbox, eventually
from tests.workflows.test_replay import HISTORIES, RECORDING
from worker import running_worker

LEAD = "quinn@initrode.test"


def _lead(runtime: Runtime) -> Lead:
    with runtime.db.read() as session:
        return session.scalars(select(Lead).where(Lead.email == LEAD)).one()


async def test_a_quiet_lead_cools_from_hot_to_cold_over_weeks_and_keeps_its_stage(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox
) -> None:
    upsert_lead(runtime.db, LeadIn(email=LEAD, properties={"first_name": "Quinn", "job_title": "CTO"}))
    async with running_worker(skipping.client, runtime) as router:
        ingest_events(
            runtime.db,
            [
                EventIn(id="q-1", type="price_list_downloaded", email=LEAD),  # intent: 100% for 90 days
                EventIn(id="q-2", type="webinar_registered", email=LEAD),  # content: half-life 30 days
                EventIn(id="q-3", type="ebook_downloaded", email=LEAD),
            ],
        )
        router.wake()
        hot = await eventually(lambda: _lead(runtime).temperature == "hot" and _lead(runtime))
        assert (hot.score, hot.stage) == (75, "mql")  # 15 fit + 30 + 20 + 10
        lead_workflow = skipping.client.get_workflow_handle(runtime.settings.lead_workflow_id(hot.id))
        await eventually(lambda: lead_workflow.query("next_rescore_at"), message="no cooling timer was set")

        await skipping.sleep(timedelta(days=8))  # a week without activity: no longer hot
        warm = await eventually(lambda: _lead(runtime).temperature == "warm" and _lead(runtime))
        assert 65 <= warm.score < 75
        if RECORDING and runtime.db.dialect == "sqlite":  # a week of cooling timers, for the replay test
            history = await lead_workflow.fetch_history()
            (HISTORIES / "lead_workflow_cooling.json").write_text(history.to_json())

        await skipping.sleep(timedelta(days=23))  # a month: cold, and the content points have halved
        cold = await eventually(lambda: _lead(runtime).temperature == "cold" and _lead(runtime))
        assert 55 <= cold.score < 65

        await skipping.sleep(timedelta(days=60))  # past the price list's 90-day window: half of it left
        colder = await eventually(lambda: _lead(runtime).score <= 36 and _lead(runtime))

    assert colder.stage == "mql"  # a cooling score never silently reverses a stage
    with runtime.db.read() as session:
        ledger = session.scalars(
            select(ScoreSnapshot).where(ScoreSnapshot.lead_id == hot.id).order_by(ScoreSnapshot.id)
        ).all()
        stamps = session.scalars(select(StageChange.to_stage).where(StageChange.lead_id == hot.id)).all()
    assert stamps == ["mql"]
    scores = [entry.score for entry in ledger]
    # Refreshed as it visibly fades (5 points, a temperature's score, a window), not for every lost point.
    assert scores[0] == 75 and scores == sorted(scores, reverse=True) and 8 < len(scores) < 30
    assert [entry.temperature for entry in ledger].count("warm") >= 1
    [price_list] = [item for item in ledger[-1].breakdown if item["rule"] == "Price list downloaded"]
    assert (price_list["points_before_decay"], price_list["points"]) == (30, 15)
