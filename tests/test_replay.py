"""Recorded workflow histories must replay on today's workflow code: a change that would break leads already
inside a sequence fails here. Record new ones with LEADFLOW_RECORD_HISTORIES=1 after a deliberate,
patched (workflow.patched) change, and keep the old files."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from leadflow.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.runtime import Runtime
from leadflow.store.models import Handoff
from tests.conftest import Inbox, WebhookReceiver, eventually, running_stack
from worker import WORKFLOWS, running_worker

HISTORIES = Path(__file__).parent / "histories"
RECORDING = os.environ.get("LEADFLOW_RECORD_HISTORIES") == "1"


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda path: path.stem)
async def test_recorded_history_replays_on_current_code(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(history)


def test_histories_are_kept() -> None:
    assert len(list(HISTORIES.glob("*.json"))) >= 2


@pytest.mark.skipif(not RECORDING, reason="set LEADFLOW_RECORD_HISTORIES=1 to record new histories")
async def test_record_histories(skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox) -> None:
    """An ebook download, three days of nurture, then a demo request: the lead is handed to sales and its
    sequence exits. Covers every signal, activity and child workflow the two workflows use."""
    if runtime.db.dialect != "sqlite":
        pytest.skip("one recording is enough")
    email = "rec@hooli.test"
    upsert_lead(runtime.db, LeadIn(email=email, properties={"first_name": "Rec"}))
    settings = runtime.settings
    async with running_worker(skipping.client, runtime) as router:
        ingest_events(runtime.db, [EventIn(id="rec-1", type="ebook_downloaded", email=email)])
        router.wake()
        await eventually(lambda: inbox.to(email))
        await skipping.sleep(timedelta(days=4))
        await eventually(lambda: len(inbox.to(email)) == 2)
        ingest_events(
            runtime.db,
            [
                EventIn(id="rec-2", type="demo_requested", email=email),
                EventIn(id="rec-3", type="page_viewed", email=email, properties={"url": "/pricing"}),
                EventIn(id="rec-4", type="page_viewed", email=email, properties={"url": "/pricing"}),
            ],
        )
        router.wake()
        sequence = skipping.client.get_workflow_handle(settings.sequence_workflow_id("ebook_follow_up", 1))
        assert await sequence.result() == "exited"
        await asyncio.sleep(0.5)
        lead = skipping.client.get_workflow_handle(settings.lead_workflow_id(1))
        for name, handle in (("lead_workflow", lead), ("sequence_workflow_exited", sequence)):
            history = await handle.fetch_history()
            (HISTORIES / f"{name}.json").write_text(history.to_json())


@pytest.mark.skipif(not RECORDING, reason="set LEADFLOW_RECORD_HISTORIES=1 to record new histories")
async def test_record_handoff_histories(
    skipping: WorkflowEnvironment, sales_runtime: Runtime, inbox: Inbox, receiver: WebhookReceiver
) -> None:
    """A demo request hands the lead off (email and two webhooks); nobody accepts: a reminder after 2 h, an
    escalation with reassignment after 4 h, then the new salesperson accepts. Records the lead workflow
    (with the hand-off follow-up patch) and the hand-off workflow."""
    if sales_runtime.db.dialect != "sqlite":
        pytest.skip("one recording is enough")
    email = "sla@hooli.test"
    upsert_lead(sales_runtime.db, LeadIn(email=email, properties={"first_name": "Sla"}))
    settings = sales_runtime.settings
    async with running_stack(sales_runtime, skipping.client, inbox) as stack:
        demo = EventIn(id="sla-1", type="demo_requested", email=email, properties={"form": "contact-sales"})
        ingest_events(sales_runtime.db, [demo])
        stack.router.wake()
        await eventually(lambda: len(receiver.received) == 2)
        await skipping.sleep(timedelta(hours=2, minutes=5))
        await eventually(lambda: len(receiver.received) == 4)
        await skipping.sleep(timedelta(hours=2))
        await eventually(lambda: inbox.to("bob@sales.test"))
        assert (
            await stack.api.post(f"/v1/leads/{email}/handoff", json={"action": "accept"})
        ).status_code == 200
        with sales_runtime.db.read() as session:
            [stage_change_id] = session.scalars(select(Handoff.stage_change_id)).all()
        follow_up = skipping.client.get_workflow_handle(settings.handoff_workflow_id(stage_change_id))
        assert await follow_up.result() == "accepted"
        lead = skipping.client.get_workflow_handle(settings.lead_workflow_id(1))
        for name, handle in (("lead_workflow_handoff", lead), ("handoff_workflow_sla", follow_up)):
            history = await handle.fetch_history()
            (HISTORIES / f"{name}.json").write_text(history.to_json())
