"""A send is keyed by (workflow id, step): retries and replays of the activity never send twice."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sending import SendActivities
from leadflow.contracts import SendInput
from leadflow.intake.ingest import LeadIn, upsert_lead
from leadflow.messaging.delivery import Claim, HandOver, deliver_once
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Message
from tests.support.helpers import POSTGRES_URL, Inbox

LEAD = "lin@initech.test"


def _send_input(runtime: Runtime, key: str = "sequence-x-lead-1:step-0") -> SendInput:
    lead, _ = upsert_lead(runtime.db, LeadIn(email=LEAD, properties={"first_name": "Lin"}))
    return SendInput(
        lead_id=lead.id,
        idempotency_key=key,
        channel="email",
        template="ebook_delivery",
        sequence_id="ebook_follow_up",
        step=0,
    )


async def test_a_retried_send_activity_sends_one_email(runtime: Runtime, inbox: Inbox) -> None:
    request, activities = _send_input(runtime), SendActivities(runtime)
    first = await ActivityEnvironment().run(activities.send_message, request)
    retried = await ActivityEnvironment().run(activities.send_message, request)
    assert (first.status, retried.status) == ("sent", "already_sent")
    assert first.message_id == retried.message_id
    assert len(inbox.to(LEAD)) == 1


def _left_behind(runtime: Runtime, request: SendInput, status: str) -> None:
    """The claim a worker killed mid-send leaves in the store."""
    with runtime.db.transaction() as session:
        session.add(
            Message(
                idempotency_key=request.idempotency_key,
                lead_id=request.lead_id,
                channel="email",
                template="ebook_delivery",
                recipient=LEAD,
                status=status,
                claim_token="dead-worker",
                created_at=clock.now(),
            )
        )


async def test_a_send_that_died_mid_call_is_not_sent_again(runtime: Runtime, inbox: Inbox) -> None:
    request = _send_input(runtime)
    _left_behind(runtime, request, "sending")  # killed during the SMTP DATA: the server may have it
    result = await ActivityEnvironment().run(SendActivities(runtime).send_message, request)
    assert result.status == "uncertain"
    assert inbox.to(LEAD) == []


async def test_a_send_that_died_before_handing_the_message_over_is_sent_once(
    runtime: Runtime, inbox: Inbox
) -> None:
    request = _send_input(runtime)
    _left_behind(runtime, request, "claimed")  # killed while connecting: the server has nothing
    result = await ActivityEnvironment().run(SendActivities(runtime).send_message, request)
    assert result.status == "sent"
    again = await ActivityEnvironment().run(SendActivities(runtime).send_message, request)
    assert again.status == "already_sent"
    assert len(inbox.to(LEAD)) == 1


async def test_of_two_overlapping_attempts_only_the_one_holding_the_claim_sends(runtime: Runtime) -> None:
    """An attempt presumed dead (its heartbeat was late) wakes up after the retry took its claim over: it
    must not send, and must not overwrite what the retry recorded."""
    claim = Claim("handoff-1:webhook", None, "webhook", "json", "https://crm.test/hook")
    stalled, wake, calls = asyncio.Event(), asyncio.Event(), []

    async def presumed_dead(message_id: int, hand_over: HandOver) -> str:
        stalled.set()
        await wake.wait()
        await hand_over()
        calls.append("first")
        return "first"

    async def retry(message_id: int, hand_over: HandOver) -> str:
        await hand_over()
        calls.append("retry")
        return "retry"

    first = asyncio.create_task(deliver_once(runtime, claim, presumed_dead))
    await stalled.wait()
    retried = await deliver_once(runtime, claim, retry)
    wake.set()
    assert (retried.status, (await first).status) == ("sent", "uncertain")
    assert calls == ["retry"]
    with runtime.db.read() as session:
        message = session.scalars(select(Message)).one()
    assert (message.status, message.provider_id) == ("sent", "retry")


async def test_a_refused_then_accepted_send_goes_out_once(runtime: Runtime, inbox: Inbox) -> None:
    request, activities = _send_input(runtime), SendActivities(runtime)
    inbox.reply = "451 4.3.0 try again later"
    with pytest.raises(ApplicationError, match="451"):
        await ActivityEnvironment().run(activities.send_message, request)
    inbox.reply = None
    assert (await ActivityEnvironment().run(activities.send_message, request)).status == "sent"
    assert len(inbox.to(LEAD)) == 1


async def test_a_permanent_refusal_is_recorded_as_a_bounce_and_not_retried(
    runtime: Runtime, inbox: Inbox
) -> None:
    request, activities = _send_input(runtime), SendActivities(runtime)
    inbox.reply = "550 5.1.1 no such mailbox"
    assert (await ActivityEnvironment().run(activities.send_message, request)).status == "bounced"
    inbox.reply = None
    assert (await ActivityEnvironment().run(activities.send_message, request)).status == "bounced"
    assert inbox.to(LEAD) == []
    with runtime.db.read() as session:
        message = session.scalars(select(Message)).one()
    assert message.status == "bounced" and "550" in (message.error or "")


async def test_a_lead_who_unsubscribed_is_never_emailed(runtime: Runtime, inbox: Inbox) -> None:
    from leadflow.intake.ingest import EventIn, ingest_events

    request = _send_input(runtime)
    ingest_events(runtime.db, [EventIn(id="u1", type="unsubscribed", email=LEAD)])
    result = await ActivityEnvironment().run(SendActivities(runtime).send_message, request)
    assert result.status == "suppressed"
    assert inbox.to(LEAD) == []


async def test_a_store_connection_broken_while_recording_the_outcome_still_records_it_sent(
    runtime: Runtime, inbox: Inbox
) -> None:
    """PostgreSQL kills the connection just as the send's outcome is written (a failover, a restart): the write
    runs again on a new connection, so the message is recorded sent and its retry reports it sent, not
    `uncertain`."""
    if runtime.db.dialect != "postgresql":
        pytest.skip("terminating a store connection needs PostgreSQL")
    request, killed = _send_input(runtime), []

    def kill_the_connection(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not killed and statement.startswith("UPDATE messages") and "provider_id" in statement:
            killed.append(conn.connection.dbapi_connection.info.backend_pid)
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (killed[0],))

    event.listen(runtime.db.engine, "before_cursor_execute", kill_the_connection)
    try:
        first = await ActivityEnvironment().run(SendActivities(runtime).send_message, request)
    finally:
        event.remove(runtime.db.engine, "before_cursor_execute", kill_the_connection)
    retried = await ActivityEnvironment().run(SendActivities(runtime).send_message, request)
    assert killed, "the outcome's connection must have been terminated"
    assert (first.status, retried.status) == ("sent", "already_sent")
    assert len(inbox.to(LEAD)) == 1
