"""Activities for sequence workflows: send a step's message once (the one place for send-time checks), read
what branches and send windows need about the lead, and keep the enrollment's record and journal."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from leadflow import clock
from leadflow.channels import TemporaryDeliveryError
from leadflow.content.templates import TemplateRenderError
from leadflow.contracts import (
    EnrollmentFinished,
    LeadSnapshot,
    LeadSnapshotInput,
    SendInput,
    SendResult,
    SendWindowInput,
    StepReached,
)
from leadflow.delivery import DEFERRED, deliver_email_once
from leadflow.leads import lead_temperature, template_context
from leadflow.pacing import WEEK, lead_zone, next_allowed_send, next_window_opening
from leadflow.runtime import Runtime
from leadflow.store.models import Enrollment, EnrollmentStep, Event, Lead, Message

OPT_OUT_EVENTS = ("unsubscribed",)
CHANNEL_UNAVAILABLE = "ChannelUnavailable"
SENDABLE_CHANNELS = ("email",)  # issue 5 brings sms (Twilio) and push (web push)
PACED_STATUSES = ("sending", "sent", "uncertain")  # what counts against a frequency cap


class SendActivities:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @activity.defn
    async def send_message(self, request: SendInput) -> SendResult:
        """Send one step's message, unless the lead opted out or it was sent already; `deferred` (with the time
        it may go out) when quiet hours or a frequency cap hold it back."""
        runtime = self.runtime
        if request.channel not in SENDABLE_CHANNELS:
            raise ApplicationError(
                f"the {request.channel} channel cannot send yet (lead {request.lead_id}, template "
                f"{request.channel}/{request.template}); nothing was sent",
                type=CHANNEL_UNAVAILABLE,
                non_retryable=True,
            )
        at = clock.not_before(request.at)

        def prepare() -> tuple[str | None, dict[str, Any] | None]:
            with runtime.db.read() as session:
                lead = session.get(Lead, request.lead_id)
                if lead is None or not lead.email or self._opted_out(session, lead):
                    return None, None
                return lead.email, template_context(session, lead)

        recipient, context = await asyncio.to_thread(prepare)
        if recipient is None or context is None:
            return SendResult(status="suppressed")
        try:
            rendered = runtime.content.templates.render_email(request.template, context)
        except TemplateRenderError as error:
            raise ApplicationError(str(error), type="TemplateRenderError", non_retryable=True) from error

        def pacing(session: Session) -> datetime | None:
            return self._paced_until(session, request.lead_id, request.channel, at)

        try:
            delivery = await deliver_email_once(
                runtime,
                request.idempotency_key,
                request.lead_id,
                recipient,
                request.template,
                rendered,
                pacing,
                at,
            )
        except TemporaryDeliveryError as error:
            raise ApplicationError(str(error), type="TemporaryDeliveryError") from error
        if delivery.status == DEFERRED:
            return SendResult(
                status=DEFERRED, retry_at=delivery.retry_at, reason="quiet hours or frequency cap"
            )
        return SendResult(status=delivery.status, message_id=delivery.message_id)

    def _paced_until(self, session: Session, lead_id: int, channel: str, at: datetime) -> datetime | None:
        """Quiet hours and frequency caps (sending.yaml), across every sequence the lead is in."""
        policy = self.runtime.content.sending
        lead = session.scalars(select(Lead).where(Lead.id == lead_id).with_for_update()).one()
        if not policy.quiet_hours and not policy.frequency_caps:
            return None
        sent_at = func.coalesce(Message.sent_at, Message.created_at)
        sent = list(
            session.scalars(
                select(sent_at).where(
                    Message.lead_id == lead_id,
                    Message.channel == channel,
                    Message.status.in_(PACED_STATUSES),
                    sent_at > at - WEEK - timedelta(days=1),
                )
            )
        )
        sent = [moment if moment.tzinfo else moment.replace(tzinfo=at.tzinfo) for moment in sent]
        return next_allowed_send(policy, channel, lead_zone(lead.properties, policy), at, sent)

    @staticmethod
    def _opted_out(session: Session, lead: Lead) -> bool:
        return (
            bool(lead.properties.get("email_opt_out"))
            or session.scalars(
                select(Event.id).where(Event.lead_id == lead.id, Event.type.in_(OPT_OUT_EVENTS)).limit(1)
            ).first()
            is not None
        )

    @activity.defn
    async def lead_snapshot(self, request: LeadSnapshotInput) -> LeadSnapshot:
        """What a branch reads about the lead besides its events: properties, score, temperature, stage."""

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
                )

        return await asyncio.to_thread(read)

    @activity.defn
    async def next_send_window(self, request: SendWindowInput) -> datetime:
        """When the window next opens in the lead's timezone (`after` itself when it is open)."""

        def read() -> dict[str, Any]:
            with self.runtime.db.read() as session:
                lead = session.get(Lead, request.lead_id)
                return dict(lead.properties) if lead else {}

        properties = await asyncio.to_thread(read)
        zone = lead_zone(properties, self.runtime.content.sending)
        return next_window_opening(request.window, zone, request.after)

    @activity.defn
    async def record_step(self, step: StepReached) -> None:
        def write() -> None:
            with self.runtime.db.transaction() as session:
                session.execute(
                    update(Enrollment)
                    .where(Enrollment.workflow_id == step.workflow_id)
                    .values(current_step=step.step)
                )
                if step.lead_id is not None:
                    session.add(
                        EnrollmentStep(
                            workflow_id=step.workflow_id,
                            lead_id=step.lead_id,
                            step=step.label or str(step.step),
                            kind=step.kind or "step",
                            at=clock.not_before(step.at),
                            detail=step.detail,
                        )
                    )

        await asyncio.to_thread(write)

    @activity.defn
    async def finish_enrollment(self, finished: EnrollmentFinished) -> None:
        def write() -> None:
            with self.runtime.db.transaction() as session:
                session.execute(
                    update(Enrollment)
                    .where(Enrollment.workflow_id == finished.workflow_id)
                    .values(
                        status=finished.status,
                        exit_reason=finished.reason or None,
                        finished_at=clock.not_before(finished.at),
                    )
                )

        await asyncio.to_thread(write)
