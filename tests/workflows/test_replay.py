"""Recorded workflow histories must replay on today's workflow code: a change that would break leads already
inside a sequence fails here. Record new ones with LEADFLOW_RECORD_HISTORIES=1 after a deliberate,
patched (workflow.patched) change, and keep the old files."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from leadflow.content.loader import load_content
from leadflow.contracts import EventRef, NewEvents, SequenceInput
from leadflow.intake.identity import identify_visitor
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform.converter import data_converter
from leadflow.platform.runtime import Runtime
from leadflow.platform.store import Database
from leadflow.platform.store.models import Handoff
from tests.support.helpers import (
    Inbox,
    WebhookReceiver,
    channel_settings,
    eventually,
    running_stack,
    settings_for_test,
)
from tests.support.peers import TwilioApi
from tests.support.stories import DAY, play, trial_content
from worker import WORKFLOWS, running_worker
from workflows.sequence import SequenceWorkflow

HISTORIES = Path(__file__).parent / "histories"
RECORDING = os.environ.get("LEADFLOW_RECORD_HISTORIES") == "1"


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda path: path.stem)
async def test_recorded_history_replays_on_current_code(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(workflows=WORKFLOWS, data_converter=data_converter).replay_workflow(history)


def test_histories_are_kept() -> None:
    names = {path.stem for path in HISTORIES.glob("*.json")}
    assert {
        "lead_workflow",
        "sequence_workflow_exited",
    } <= names  # recorded before absence rules and branches
    assert {"lead_workflow_absence", "sequence_abandoned_form", "sequence_trial_nurture"} <= names
    assert {"sequence_ebook_follow_up"} <= names
    assert {"sequence_workflow_held_skipped_opted_out"} <= names  # sending hours, skips, opt-out exit
    assert {"lead_workflow_handoff", "handoff_workflow_sla"} <= names  # hand-off webhooks and follow-up SLA
    assert {"lead_workflow_local_activities"} <= names
    assert {"sequence_renewal_moments", "sequence_webinar_reminder_moments"} <= names  # wait_until: {at: …}
    for generation in SEQUENCE_GENERATIONS:
        assert {
            f"sequence_trial_nurture{generation}",
            f"sequence_workflow_held_skipped_opted_out{generation}",
        } <= names


def _keep(name: str, history: WorkflowHistory) -> None:
    """Write a new recording; never replace an old one (it guards the code paths of its time)."""
    path = HISTORIES / f"{name}.json"
    if not path.exists():
        path.write_text(history.to_json())


# Sequence workflow changes since the first recordings, each kept with a history recorded when it was new.
SEQUENCE_GENERATIONS = ("", "_journal_in_batches", "_branch_on_events", "_finish_as_local_activity")


def _keep_generations(name: str, history: WorkflowHistory) -> None:
    for generation in SEQUENCE_GENERATIONS:
        _keep(f"{name}{generation}", history)


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
            _keep(name, await handle.fetch_history())


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
        recordings = {
            "lead_workflow_handoff": lead,
            "handoff_workflow_sla": follow_up,
            "lead_workflow_local_activities": lead,  # assess and hand-off as local activities
        }
        for name, handle in recordings.items():
            _keep(name, await handle.fetch_history())


@pytest.mark.skipif(not RECORDING, reason="set LEADFLOW_RECORD_HISTORIES=1 to record new histories")
async def test_record_merged_lead_history(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox
) -> None:
    """An anonymous visitor's lead workflow, merged into a known lead when the visitor identifies: it ends."""
    if runtime.db.dialect != "sqlite":
        pytest.skip("one recording is enough")
    upsert_lead(runtime.db, LeadIn(email="known@hooli.test"))
    async with running_worker(skipping.client, runtime) as router:
        [visitor] = ingest_events(
            runtime.db,
            [
                EventIn(
                    id="anon-1", type="page_viewed", anonymous_id="cookie-1", properties={"url": "/pricing"}
                )
            ],
        ).lead_ids
        router.wake()
        await eventually(lambda: router.routed >= 1)
        identify_visitor(runtime.db, "cookie-1", "known@hooli.test", {})
        router.wake()
        handle = skipping.client.get_workflow_handle(runtime.settings.lead_workflow_id(visitor))
        await handle.result()
        _keep("lead_workflow_merged", await handle.fetch_history())


@pytest.mark.skipif(not RECORDING, reason="set LEADFLOW_RECORD_HISTORIES=1 to record new histories")
async def test_record_histories_of_every_step_kind(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, tmp_path: Path
) -> None:
    """One lead through three sequences: an absence timer in the lead workflow, a send window, branches on
    an event, a property and the temperature, an A/B split, sends deferred by a frequency cap and skipped for
    an unavailable channel, a goal step, a goal event and a segment exit."""
    if runtime.db.dialect != "sqlite":
        pytest.skip("one recording is enough")
    trial = dataclasses.replace(runtime, content=load_content(trial_content(tmp_path)))
    await play(
        skipping,
        trial,
        "trial_nurture",
        {
            "lead": {"first_name": "Rec", "sms_consent": True},
            "horizon": "16d",
            "events": [
                {"at": "0m", "type": "trial_started"},
                {"at": "0m", "type": "ebook_downloaded"},
                {"at": "0m", "type": "form_started", "properties": {"form": "demo"}},
                {"at": "2d", "type": "form_submitted", "properties": {"form": "demo"}},
                {"at": "8d", "type": "webinar_registered"},
            ],
        },
        leads=1,
    )
    settings = trial.settings
    client = skipping.client
    _keep(
        "lead_workflow_absence",
        await client.get_workflow_handle(settings.lead_workflow_id(1)).fetch_history(),
    )
    for sequence in ("abandoned_form", "trial_nurture", "ebook_follow_up"):
        handle = client.get_workflow_handle(settings.sequence_workflow_id(sequence, 1))
        _keep_generations(f"sequence_{sequence}", await handle.fetch_history())


@pytest.mark.skipif(not RECORDING, reason="set LEADFLOW_RECORD_HISTORIES=1 to record new histories")
async def test_record_held_skipped_and_opted_out_history(
    skipping: WorkflowEnvironment,
    db: Database,
    smtp_server: tuple[Inbox, int],
    twilio: TwilioApi,
    content: Any,
) -> None:
    """An SMS held until the lead's morning, a push step skipped (no subscription), then an opt-out event
    during a wait: the sequence leaves at once."""
    if db.dialect != "sqlite":
        pytest.skip("one recording is enough")
    from tests.messaging.test_send_policy_timing import (
        PUSH,
        SMS,
        sequence,
        sms_lead,
        zone_where_it_is_late_evening,
    )

    runtime = Runtime.assemble(settings_for_test(db, smtp_server[1], **channel_settings(twilio)), db, content)
    lead_id = sms_lead(
        runtime, "rec@hooli.test", zone_where_it_is_late_evening(await skipping.get_current_time())
    )
    steps = sequence(
        "held", SMS, PUSH, {"wait": "3d"}, {"send": {"channel": "email", "template": "ebook_tips"}}
    )
    async with running_worker(skipping.client, runtime):
        handle = await skipping.client.start_workflow(
            SequenceWorkflow.run,
            SequenceInput(lead_id, steps),
            id="sequence-held-lead-1",
            task_queue=runtime.settings.task_queue,
        )
        await skipping.sleep(timedelta(hours=12))
        await eventually(lambda: twilio.messages)
        opted_out = EventRef(7, "unsubscribed", await skipping.get_current_time(), {"channel": "sms"})
        await handle.signal(SequenceWorkflow.lead_events, NewEvents([opted_out]))
        assert await handle.result() == "exited"
        _keep_generations("sequence_workflow_held_skipped_opted_out", await handle.fetch_history())
    await runtime.close()


@pytest.mark.skipif(not RECORDING, reason="set LEADFLOW_RECORD_HISTORIES=1 to record new histories")
async def test_record_moment_histories(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, tmp_path: Path
) -> None:
    """`wait_until: {at: …}` on a lead property (an activity), an event since enrollment read again when a
    newer one comes, a date in the file; and the shipped webinar reminder on its entering event."""
    if runtime.db.dialect != "sqlite":
        pytest.skip("one recording is enough")
    from tests.sequences.test_moments import moments_content

    now = (await skipping.get_current_time()).replace(second=0, microsecond=0)
    moments = dataclasses.replace(runtime, content=load_content(moments_content(tmp_path, now + 6 * DAY)))
    await play(
        skipping,
        moments,
        "renewal",
        {
            "lead": {"renewal_at": (now + 3 * DAY).isoformat()},
            "horizon": "7d",
            "events": [
                {"at": "0m", "type": "trial_started"},
                {"at": "0m", "type": "webinar_registered", "dates": {"starts_at": "2d"}},
                {"at": "12h", "type": "call_booked", "dates": {"slot": "4d"}},
                {"at": "2d", "type": "call_booked", "dates": {"slot": "5d"}},
            ],
        },
        leads=1,
    )
    for sequence in ("renewal", "webinar_reminder"):
        handle = skipping.client.get_workflow_handle(moments.settings.sequence_workflow_id(sequence, 1))
        _keep(f"sequence_{sequence}_moments", await handle.fetch_history())
