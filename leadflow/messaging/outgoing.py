"""One step's message on each channel, sent exactly once (leadflow.messaging.delivery) under the send-time policy
(leadflow.messaging.send_policy): the tracked email with its unsubscribe headers, the SMS with its status callback, the
push notification to every browser the lead subscribed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from typing import Any
from uuid import uuid4

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from leadflow.content.templates import RenderedEmail, RenderedPush, RenderedSms
from leadflow.contracts import SendInput
from leadflow.messaging.delivery import Claim, Delivery, Gate, HandOver, deliver_once
from leadflow.messaging.providers import OutgoingEmail, PermanentDeliveryError, TemporaryDeliveryError
from leadflow.messaging.providers.webpush import PushTarget
from leadflow.messaging.send_policy import policy_gate
from leadflow.platform.errors import LeadflowError
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Lead, PushSubscription

TWILIO_STATUS_PATH = "/webhooks/twilio/status"


class UnknownChannel(LeadflowError):
    """A step names a channel this version does not send on."""


@dataclass(frozen=True)
class Recipient:
    """The lead as a send needs it: where each channel reaches it."""

    lead_id: int
    email: str | None
    phone: str | None
    push: list[PushTarget]

    def address(self, channel: str) -> str | None:
        if channel == "email":
            return self.email
        if channel == "sms":
            return self.phone
        return self.push[0].endpoint if self.push else None


_PUSH_TARGETS = (  # every send reads them: built once
    select(PushSubscription.endpoint, PushSubscription.p256dh, PushSubscription.auth)
    .where(PushSubscription.lead_id == bindparam("lead"))
    .order_by(PushSubscription.id.desc())
)


def recipient_of(session: Session, lead: Lead) -> Recipient:
    targets = [PushTarget(*row) for row in session.execute(_PUSH_TARGETS, {"lead": lead.id})]
    return Recipient(lead.id, lead.email, lead.phone, targets)


def email_with_unsubscribe(rendered: RenderedEmail, unsubscribe_url: str) -> RenderedEmail:
    """Every marketing email carries a visible unsubscribe link; templates place it themselves (the
    `unsubscribe_url` variable), and one is added at the end when they do not."""
    html, text = rendered.html, rendered.text
    if unsubscribe_url not in html:
        html += f'\n<p style="font-size:12px"><a href="{unsubscribe_url}">Unsubscribe</a></p>'
    if unsubscribe_url not in text:
        text += f"\n\nUnsubscribe: {unsubscribe_url}"
    return RenderedEmail(rendered.subject, text, html)


async def send_email(
    runtime: Runtime,
    claim: Claim,
    rendered: RenderedEmail,
    sender: str = "",
    reply_to: str = "",
    gate: Gate | None = None,
    now: datetime | None = None,
) -> Delivery:
    """An email to `claim.recipient`. For a lead (claim.lead_id) it is tracked (open pixel, click
    redirects) and carries List-Unsubscribe with RFC 8058 one-click; a notification to staff is not."""
    domain = parseaddr(sender or runtime.settings.mail_from)[1].rpartition("@")[2] or "leadflow.localhost"
    lead_id = claim.lead_id

    async def send(message_id: int, hand_over: HandOver) -> str:
        html, headers = rendered.html, {}
        if lead_id is not None:
            unsubscribe = runtime.tracker.unsubscribe_url(lead_id)
            html = runtime.tracker.tracked_html(html, message_id, lead_id, untracked=(unsubscribe,))
            headers = {
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        email = OutgoingEmail(
            claim.recipient,
            rendered.subject,
            rendered.text,
            html,
            f"<{uuid4().hex}@{domain}>",
            headers,
            sender,
            reply_to,
        )
        return await runtime.email.send(email, before_data=hand_over)

    return await deliver_once(runtime, claim, send, gate, now)


async def send_sms(
    runtime: Runtime, claim: Claim, rendered: RenderedSms, gate: Gate, now: datetime
) -> Delivery:
    async def send(message_id: int, hand_over: HandOver) -> str:
        assert runtime.sms is not None  # the gate skips the step when SMS is not configured
        callback = runtime.settings.resolved_public_url + TWILIO_STATUS_PATH
        await hand_over()
        return await runtime.sms.send(claim.recipient, rendered.body, callback)

    return await deliver_once(runtime, claim, send, gate, now)


async def send_push(
    runtime: Runtime,
    claim: Claim,
    rendered: RenderedPush,
    targets: list[PushTarget],
    gate: Gate,
    now: datetime,
) -> Delivery:
    """One message per step, to every browser of the lead. A browser that dropped its subscription (404 /
    410) loses it; when some browsers took the message and others are only temporarily unreachable, the
    message counts as sent (retrying would notify the others twice)."""

    async def send(message_id: int, hand_over: HandOver) -> str:
        assert runtime.push is not None  # the gate skips the step when push is not configured
        await hand_over()
        results = await asyncio.gather(
            *(runtime.push.send(t, rendered.title, rendered.body, rendered.url) for t in targets),
            return_exceptions=True,
        )
        gone = [
            target.endpoint
            for target, result in zip(targets, results, strict=True)
            if isinstance(result, PermanentDeliveryError) and result.reason == "subscription_gone"
        ]
        if gone:
            await runtime.db.call(_forget_subscriptions, runtime, gone)
        accepted = [result for result in results if isinstance(result, str)]
        if accepted:
            return " ".join(filter(None, accepted))[:255]
        failures = [result for result in results if isinstance(result, BaseException)]
        temporary = [f for f in failures if isinstance(f, TemporaryDeliveryError)]
        if temporary:
            raise TemporaryDeliveryError("; ".join(str(f) for f in temporary))
        unexpected = [f for f in failures if not isinstance(f, PermanentDeliveryError)]
        if unexpected:
            raise unexpected[0]
        raise PermanentDeliveryError("; ".join(str(f) for f in failures) or "no push subscription")

    return await deliver_once(runtime, claim, send, gate, now)


def _forget_subscriptions(runtime: Runtime, endpoints: list[str]) -> None:
    with runtime.db.transaction() as session:
        session.execute(delete(PushSubscription).where(PushSubscription.endpoint.in_(endpoints)))


def push_recipient_label(targets: list[PushTarget]) -> str:
    return f"{len(targets)} browser(s)" if targets else ""


def message_context(runtime: Runtime, context: dict[str, Any], lead_id: int) -> dict[str, Any]:
    """The template context plus what every marketing message may link to."""
    return {**context, "unsubscribe_url": runtime.tracker.unsubscribe_url(lead_id)}


async def deliver_step(
    runtime: Runtime, request: SendInput, recipient: Recipient, context: dict[str, Any], now: datetime
) -> Delivery:
    """Render a sequence step's message for its channel and send it once, under the send-time policy."""
    channel, templates = request.channel, runtime.content.templates
    gate = policy_gate(runtime, recipient, channel, now)

    def claim(address: str | None, subject: str | None = None) -> Claim:
        return Claim(
            request.idempotency_key, recipient.lead_id, channel, request.template, address or "", subject
        )

    if channel == "email":
        unsubscribe = context["unsubscribe_url"]
        rendered = email_with_unsubscribe(templates.render_email(request.template, context), unsubscribe)
        return await send_email(
            runtime,
            claim(recipient.email, rendered.subject),
            rendered,
            request.sender,
            request.reply_to,
            gate,
            now,
        )
    if channel == "sms":
        return await send_sms(
            runtime, claim(recipient.phone), templates.render_sms(request.template, context), gate, now
        )
    if channel == "push":
        rendered_push = templates.render_push(request.template, context)
        label = push_recipient_label(recipient.push)
        return await send_push(
            runtime, claim(label, rendered_push.title), rendered_push, recipient.push, gate, now
        )
    raise UnknownChannel(f"unknown channel {channel!r}")
