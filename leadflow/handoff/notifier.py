"""The hand-off's notifications and follow-up: assign and notify at once (`hand_off`, for the lead workflow's
activity), then what the hand-off workflow's activities do: retry a webhook, remind, escalate and reassign.
Each notification has its own idempotency key, so a channel that fails (a webhook down) never repeats or loses
another (the email)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from leadflow.contracts import (
    FollowUpResult,
    FollowUpStep,
    HandoffFollowUp,
    HandOffInput,
    HandOffResult,
    WebhookNotice,
    WebhookTarget,
)
from leadflow.handoff.assignment import NOTIFICATION_TEMPLATE, WAITING, assign, reassign, record, salesperson
from leadflow.handoff.briefing import crm_payload, notification_context, slack_payload
from leadflow.handoff.model import Salesperson
from leadflow.messaging.delivery import Claim, HandOver, MessageStatus, deliver_once
from leadflow.messaging.outgoing import send_email
from leadflow.messaging.providers import TemporaryDeliveryError
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Handoff, Lead, StageChange

log = logging.getLogger(__name__)

DELIVERED = (MessageStatus.SENT, MessageStatus.ALREADY_SENT)


def notice_key(stage_change_id: int, notice: str, round: int, channel: str) -> str:
    """One key per hand-off, notice, round and channel: `handoff-12-email` (the hand-off itself, as the
    first version keyed it), `handoff-12-reminder-0-webhook-1`, …"""
    middle = f"-{notice}-{round}" if notice else ""
    return f"handoff-{stage_change_id}{middle}-{channel}"


def webhook_notices(
    person: Salesperson, stage_change_id: int, handoff_id: int, notice: str, label: str, round: int
) -> list[WebhookNotice]:
    return [
        WebhookNotice(
            handoff_id,
            notice_key(stage_change_id, notice, round, f"webhook-{index}"),
            WebhookTarget(hook.url, hook.format),
            label,
        )
        for index, hook in enumerate(person.notify.webhooks)
    ]


async def _nothing_to_send() -> str:
    return "sent"  # no email channel configured for the salesperson: the hand-off counts as notified


class SalesNotifier:
    """Notifies the salesperson of a hand-off and keeps the follow-up: every notification once per key (one
    per hand-off, notice, round and channel), so a channel that fails never repeats or loses another."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def lead_url(self, lead_id: int) -> str:
        return f"{self.runtime.settings.resolved_public_url}/v1/leads/{lead_id}"

    async def hand_off(self, request: HandOffInput) -> HandOffResult:
        """Assign the promoted lead and notify the salesperson (email and webhooks), once per promotion; the
        webhooks' retries and the follow-up SLA go to the hand-off workflow."""
        runtime = self.runtime

        def prepare() -> tuple[int, Salesperson]:
            with runtime.db.transaction() as session:
                lead = session.get_one(Lead, request.lead_id)
                stage_change = session.get_one(StageChange, request.stage_change_id)
                handoff = assign(session, lead, stage_change, runtime.content.sales)
                return handoff.id, salesperson(runtime.content.sales, handoff.salesperson)

        handoff_id, person = await self.runtime.db.call(prepare)  # NoSalespersonAvailable: nobody to assign
        webhooks = webhook_notices(person, request.stage_change_id, handoff_id, "", "", 0)
        email_key = notice_key(request.stage_change_id, "", 0, "email")
        # The email and a first try of each webhook go out together, at once; a webhook that fails is left to
        # the hand-off workflow's retries (its key is not sent yet), and never holds up or repeats the email.
        emailed, *_ = await asyncio.gather(
            self.email(handoff_id, email_key, "") if person.notify.email else _nothing_to_send(),
            *(self._first_try(notice) for notice in webhooks),
        )
        notified = emailed in DELIVERED

        def mark_notified() -> None:
            with runtime.db.transaction() as session:
                handoff = session.get_one(Handoff, handoff_id)
                if handoff.notified_at is None:
                    handoff.notified_at = clock.now()

        await self.runtime.db.call(mark_notified)
        follow_up = runtime.content.sales.follow_up
        return HandOffResult(
            salesperson=person.email,
            notified=notified,
            follow_up=HandoffFollowUp(
                workflow_id=runtime.settings.handoff_workflow_id(request.stage_change_id),
                handoff_id=handoff_id,
                lead_id=request.lead_id,
                webhooks=webhooks,
                remind_after=follow_up.remind_after,
                escalate_after=follow_up.escalate_after,
                max_reassignments=follow_up.max_reassignments if follow_up.reassign else 0,
            ),
        )

    async def email(self, handoff_id: int, key: str, notice: str, to: str | None = None) -> str:
        """Email the hand-off's salesperson (or `to`) the lead's context, once per key."""
        runtime = self.runtime

        def prepare() -> tuple[str, dict[str, Any]]:
            with runtime.db.read() as session:
                handoff = session.get_one(Handoff, handoff_id)
                lead = session.get_one(Lead, handoff.lead_id)
                context = notification_context(session, lead, handoff, self.lead_url(lead.id), notice)
                return to or handoff.salesperson, context

        recipient, context = await self.runtime.db.call(prepare)
        rendered = runtime.content.templates.render_email(NOTIFICATION_TEMPLATE, context)
        claim = Claim(key, None, "email", NOTIFICATION_TEMPLATE, recipient, rendered.subject)
        delivery = await send_email(runtime, claim, rendered)
        if delivery.status == "sent":
            await self.runtime.db.call(self._record, handoff_id, "notified", f"email to {recipient}", notice)
        return delivery.status

    def _record(self, handoff_id: int, kind: str, detail: str, notice: str = "") -> None:
        with self.runtime.db.transaction() as session:
            prefix = f"{notice}: " if notice else ""
            record(session, session.get_one(Handoff, handoff_id), kind, prefix + detail)

    async def _first_try(self, notice: WebhookNotice) -> str:
        try:
            return await self.notify_webhook(notice)
        except TemporaryDeliveryError as error:
            log.info("hand-off webhook %s will be retried: %s", notice.key, error)
            return "deferred"

    async def notify_webhook(self, notice: WebhookNotice) -> str:
        """POST the signed notification to one webhook, once per key. A temporary failure raises
        (TemporaryDeliveryError), so the hand-off workflow's retry policy tries again with backoff; the email
        is not touched."""
        runtime = self.runtime

        def prepare() -> dict[str, Any]:
            with runtime.db.read() as session:
                handoff = session.get_one(Handoff, notice.handoff_id)
                lead = session.get_one(Lead, handoff.lead_id)
                return notification_context(session, lead, handoff, self.lead_url(lead.id), notice.notice)

        context = await self.runtime.db.call(prepare)
        target = notice.target
        payload = slack_payload(context) if target.format == "slack" else crm_payload(context)

        async def post(message_id: int, hand_over: HandOver) -> str:
            await hand_over()
            return await runtime.webhooks.post(target.url, payload, notice.key)

        delivery = await deliver_once(
            runtime, Claim(notice.key, None, "webhook", target.format, target.url), post
        )
        if delivery.status == "sent":
            detail = f"{target.format} webhook {target.url}"
            await self.runtime.db.call(self._record, notice.handoff_id, "notified", detail, notice.notice)
        return delivery.status

    async def remind(self, step: FollowUpStep) -> FollowUpResult:
        """The salesperson has not accepted in time: remind them on every channel (once per round)."""
        waiting = await self.runtime.db.call(self._remind_if_waiting, step.handoff_id)
        if isinstance(waiting, str):
            return FollowUpResult(open=False, status=waiting)
        stage_change_id, person = waiting
        label = "Reminder: not accepted yet"
        if person.notify.email:
            await self.email(
                step.handoff_id, notice_key(stage_change_id, "reminder", step.round, "email"), label
            )
        await self.runtime.db.call(
            self._record, step.handoff_id, "reminded", f"{person.email} has not accepted"
        )
        notices = webhook_notices(person, stage_change_id, step.handoff_id, "reminder", label, step.round)
        return FollowUpResult(open=True, salesperson=person.email, webhooks=notices)

    def _remind_if_waiting(self, handoff_id: int) -> tuple[int, Salesperson] | str:
        """The hand-off's promotion and salesperson when it still waits; else its status (accepted, …)."""
        with self.runtime.db.transaction() as session:
            handoff = session.get_one(Handoff, handoff_id)
            if handoff.status != WAITING:
                return handoff.status
            handoff.reminded_at = clock.now()
            return handoff.stage_change_id, salesperson(self.runtime.content.sales, handoff.salesperson)

    async def escalate(self, step: FollowUpStep) -> FollowUpResult:
        """Still not accepted: reassign to the next available salesperson of the team (when allowed) and
        tell the escalation contact of `sales.yaml`; the new salesperson is notified on their channels."""
        runtime = self.runtime
        follow_up = runtime.content.sales.follow_up

        def apply() -> tuple[int, str, Salesperson | None] | str:
            with runtime.db.transaction() as session:
                handoff = session.get_one(Handoff, step.handoff_id)
                if handoff.status != WAITING:
                    return handoff.status
                previous = handoff.salesperson
                handoff.escalated_at = clock.now()
                lead = session.get_one(Lead, handoff.lead_id)
                person = (
                    reassign(session, handoff, lead, runtime.content.sales) if step.may_reassign else None
                )
                whom = f"; reassigned to {person.email}" if person else ""
                told = f"; {follow_up.escalate_to} told" if follow_up.escalate_to else ""
                record(session, handoff, "escalated", f"not accepted by {previous}{whom}{told}")
                return handoff.stage_change_id, previous, person

        applied = await self.runtime.db.call(apply)
        if isinstance(applied, str):
            return FollowUpResult(open=False, status=applied)
        stage_change_id, previous, person = applied
        overdue = f"Escalation: not accepted by {previous}"
        if follow_up.escalate_to:
            key = notice_key(stage_change_id, "escalated", step.round, "email")
            await self.email(step.handoff_id, key, overdue, to=follow_up.escalate_to)
        if person is None:
            if not follow_up.escalate_to:  # nobody else to tell: the salesperson hears it is overdue
                key = notice_key(stage_change_id, "overdue", step.round, "email")
                await self.email(step.handoff_id, key, overdue)
            return FollowUpResult(open=True, salesperson=previous)
        label = f"Reassigned to you (not accepted by {previous})"
        if person.notify.email:
            await self.email(
                step.handoff_id, notice_key(stage_change_id, "reassigned", step.round, "email"), label
            )
        notices = webhook_notices(person, stage_change_id, step.handoff_id, "reassigned", label, step.round)
        return FollowUpResult(open=True, salesperson=person.email, webhooks=notices, reassigned=True)
