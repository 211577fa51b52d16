"""Activities for sequence workflows: send a step's message once (the one place for send-time checks), read
what branches and send windows need about the lead, and keep the enrollment's record and journal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import bindparam, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from leadflow.content.templates import TemplateRenderError
from leadflow.contracts import (
    EnrollmentFinished,
    LeadSnapshot,
    LeadSnapshotInput,
    MomentInput,
    SendInput,
    SendResult,
    SendWindowInput,
    StepReached,
    StepsReached,
)
from leadflow.leads.views import enrolling_event, sequence_message_context
from leadflow.messaging.outgoing import (
    Recipient,
    UnknownChannel,
    deliver_step,
    message_context,
    recipient_of,
)
from leadflow.messaging.providers import TemporaryDeliveryError, UnsendableMessage
from leadflow.messaging.send_policy import Decision, lead_zone, next_window_opening, reachable_channels
from leadflow.platform import clock
from leadflow.platform.errors import activity_failure
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Lead
from leadflow.scoring.temperature import lead_temperature
from leadflow.sequences.journal import finish_enrollment, write_journal
from leadflow.sequences.model import EnteringEventMoment, LeadMoment, ResolvedMoment

HEARTBEAT_SECONDS = 2.0
LONGEST_RETRY_DELAY = timedelta(
    minutes=30
)  # the send retry policy's maximum interval (workflows/sequence.py)
T = TypeVar("T")


def send_time() -> datetime:
    """Now, for the send-time policy and the message's stamps: never earlier than when Temporal scheduled
    this attempt, so quiet hours and caps follow the server's clock (also when a test server skips time)."""
    scheduled = activity.info().current_attempt_scheduled_time if activity.in_activity() else None
    now = clock.now()
    return max(now, scheduled) if scheduled else now


async def heartbeating(work: Awaitable[T]) -> T:
    """Await `work`, heartbeating meanwhile: should this worker die during a provider call, Temporal sees
    the silence within the heartbeat timeout and retries elsewhere, instead of waiting out the whole
    start-to-close timeout."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS)
        if done:
            return task.result()
        if activity.in_activity():
            activity.heartbeat()


def provider_delay(error: TemporaryDeliveryError) -> timedelta | None:
    """The wait the provider asked for before the next attempt (None: the retry policy's backoff decides),
    at most the policy's longest interval, so a wild Retry-After cannot park a send for days."""
    if error.retry_after is None:
        return None
    return min(timedelta(seconds=error.retry_after), LONGEST_RETRY_DELAY)


_LEAD = select(Lead).where(Lead.id == bindparam("lead"))  # every send reads it: built once


class SendActivities:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @activity.defn
    async def send_message(self, request: SendInput) -> SendResult:
        """Render and send one step's message, unless the policy says no (or not now) or it was sent already."""
        runtime, now = self.runtime, send_time()
        # The sequence workflow's id is its enrollment's: the activity finds the enrolling event itself.
        enrollment = activity.info().workflow_id if activity.in_activity() else None

        def prepare() -> tuple[Recipient, dict[str, Any]] | None:
            # The steps the workflow reached since its last activity are journaled on the way.
            with runtime.db.transaction() if request.journal else runtime.db.read() as session:
                lead = session.scalars(_LEAD, {"lead": request.lead_id}).first()
                if lead is None:
                    return None
                write_journal(session, request.journal)
                return recipient_of(session, lead), sequence_message_context(session, lead, enrollment)

        prepared = await self.runtime.db.call(prepare)
        if prepared is None:
            return SendResult(status=Decision.SUPPRESSED, reason="the lead was erased")
        recipient, context = prepared
        try:
            delivery = await heartbeating(
                deliver_step(
                    runtime, request, recipient, message_context(runtime, context, recipient.lead_id), now
                )
            )
        except (TemplateRenderError, UnsendableMessage, UnknownChannel) as error:  # the same on every attempt
            raise activity_failure(error) from error
        except TemporaryDeliveryError as error:
            raise activity_failure(error, provider_delay(error)) from error
        return SendResult(
            status=delivery.status,
            message_id=delivery.message_id,
            reason=delivery.reason,
            hold_until=delivery.hold_until,
        )

    @activity.defn
    async def lead_snapshot(self, request: LeadSnapshotInput) -> LeadSnapshot:
        """What a branch reads about the lead besides its events: properties, score, temperature, stage, and
        the channels that can reach it."""

        def read() -> LeadSnapshot:
            with self.runtime.db.read() as session:
                lead = session.get(Lead, request.lead_id)
                if lead is None:
                    return LeadSnapshot(stage="erased")
                return LeadSnapshot(
                    properties=dict(lead.properties),
                    score=lead.score,
                    temperature=lead_temperature(lead, self.runtime.content.scoring.thresholds),
                    stage=lead.stage,
                    reachable=reachable_channels(session, self.runtime.settings, lead),
                )

        return await self.runtime.db.call(read)

    @activity.defn
    async def next_send_window(self, request: SendWindowInput) -> datetime:
        """When the window next opens in the lead's timezone (`after` itself when it is open)."""

        def read() -> dict[str, Any]:
            with self.runtime.db.read() as session:
                lead = session.get(Lead, request.lead_id)
                return dict(lead.properties) if lead else {}

        properties = await self.runtime.db.call(read)
        zone = lead_zone(properties, self.runtime.content.sending)
        return next_window_opening(request.window, zone, request.after)

    @activity.defn
    async def resolve_moment(self, request: MomentInput) -> ResolvedMoment:
        """When a `wait_until: {at: …}` on the entering event's or the lead's property ends. Only the moment
        goes back to the workflow's history, never the property's value."""
        source = request.moment.at

        def read() -> ResolvedMoment:
            with self.runtime.db.read() as session:
                if isinstance(source, EnteringEventMoment):
                    event = enrolling_event(session, request.workflow_id)
                    if event is None:
                        return ResolvedMoment(problem="the lead entered the segment without an event")
                    return request.moment.resolve(event.properties.get(source.event_property))
                if isinstance(source, LeadMoment):
                    lead = session.get(Lead, request.lead_id)
                    return request.moment.resolve(lead.properties.get(source.lead_property) if lead else None)
                raise ApplicationError(
                    f"{request.moment.describe()} is not read from the store", non_retryable=True
                )

        return await self.runtime.db.call(read)

    @activity.defn
    async def record_step(self, step: StepReached) -> None:
        """One journal entry (sequence workflows before JOURNAL_IN_BATCHES journaled each step alone)."""
        await self.runtime.db.call(self._write_journal, [step])

    @activity.defn
    async def record_steps(self, steps: StepsReached) -> None:
        """The journal entries a workflow gathered since its last activity, before it waits."""
        await self.runtime.db.call(self._write_journal, steps.steps)

    def _write_journal(self, steps: list[StepReached]) -> None:
        if steps:
            with self.runtime.db.transaction() as session:
                write_journal(session, steps)

    @activity.defn
    async def finish_enrollment(self, finished: EnrollmentFinished) -> None:
        """The enrollment's end (its status and why), with the journal entries not written yet."""

        def write() -> None:
            with self.runtime.db.transaction() as session:
                finish_enrollment(session, finished)

        await self.runtime.db.call(write)
