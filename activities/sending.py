"""Activities for sequence workflows: send a step's message once, and keep the enrollment's record."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from leadflow import clock
from leadflow.channels import TemporaryDeliveryError
from leadflow.content.templates import TemplateRenderError
from leadflow.contracts import EnrollmentFinished, SendInput, SendResult, StepReached
from leadflow.delivery import deliver_email_once
from leadflow.leads import template_context
from leadflow.runtime import Runtime
from leadflow.store.models import Enrollment, Event, Lead

OPT_OUT_EVENTS = ("unsubscribed",)


class SendActivities:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @activity.defn
    async def send_message(self, request: SendInput) -> SendResult:
        """Render and send one step's message, unless the lead opted out or it was sent already."""
        runtime = self.runtime

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
        try:
            delivery = await deliver_email_once(
                runtime, request.idempotency_key, request.lead_id, recipient, request.template, rendered
            )
        except TemporaryDeliveryError as error:
            raise ApplicationError(str(error), type="TemporaryDeliveryError") from error
        return SendResult(status=delivery.status, message_id=delivery.message_id)

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
    async def record_step(self, step: StepReached) -> None:
        def write() -> None:
            with self.runtime.db.transaction() as session:
                session.execute(
                    update(Enrollment)
                    .where(Enrollment.workflow_id == step.workflow_id)
                    .values(current_step=step.step)
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
                        status=finished.status, exit_reason=finished.reason or None, finished_at=clock.now()
                    )
                )

        await asyncio.to_thread(write)
