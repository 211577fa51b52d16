"""Sending a message exactly once per idempotency key.

The key is claimed in the store (unique constraint) before the provider is called, so a retried or replayed
activity never sends twice. A claim left in `sending` means an earlier attempt died during the provider call:
whether the provider took the message is unknown, and we choose never-twice over maybe-once (`uncertain`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from sqlalchemy import select, update

from leadflow import clock
from leadflow.channels import OutgoingEmail, PermanentDeliveryError, TemporaryDeliveryError
from leadflow.content.templates import RenderedEmail
from leadflow.runtime import Runtime
from leadflow.store.models import Message
from leadflow.store.upsert import insert_ignoring_conflicts

SENT, SENDING, DEFERRED, BOUNCED, UNCERTAIN = "sent", "sending", "deferred", "bounced", "uncertain"


@dataclass(frozen=True)
class Delivery:
    status: str  # sent, already_sent, uncertain, bounced
    message_id: int


def _claim(
    runtime: Runtime, key: str, lead_id: int | None, channel: str, template: str, recipient: str
) -> tuple[int, str | None]:
    """Claim `key`; returns the message id and, when it was claimed before, the status it had."""
    with runtime.db.transaction() as session:
        row = {
            "idempotency_key": key,
            "lead_id": lead_id,
            "channel": channel,
            "template": template,
            "recipient": recipient,
            "status": SENDING,
            "created_at": clock.now(),
        }
        inserted = insert_ignoring_conflicts(
            session, Message, [row], ["idempotency_key"], returning=(Message.id,)
        )
        if inserted:
            return inserted[0][0], None
        message = session.execute(select(Message).where(Message.idempotency_key == key)).scalar_one()
        earlier = message.status
        if earlier == DEFERRED:  # the provider refused it for now: nothing went out, try again
            message.status = SENDING
        elif earlier == SENDING:
            message.status = UNCERTAIN
        return message.id, earlier


def _finish(runtime: Runtime, message_id: int, **values: Any) -> None:
    with runtime.db.transaction() as session:
        session.execute(update(Message).where(Message.id == message_id).values(**values))


async def deliver_email_once(
    runtime: Runtime, key: str, lead_id: int | None, to: str, template: str, rendered: RenderedEmail
) -> Delivery:
    """Send `rendered` to `to` unless `key` was sent (or possibly sent) before.

    Raises TemporaryDeliveryError for the caller's retry policy; a permanent refusal returns `bounced`.
    """
    domain = runtime.settings.mail_from.rsplit("@", 1)[-1].rstrip(">")
    email = OutgoingEmail(to, rendered.subject, rendered.text, rendered.html, f"<{uuid4().hex}@{domain}>")
    return await deliver_once(
        runtime, key, lead_id, "email", template, to, lambda: runtime.email.send(email), rendered.subject
    )


async def deliver_once(
    runtime: Runtime,
    key: str,
    lead_id: int | None,
    channel: str,
    template: str,
    recipient: str,
    send: Callable[[], Awaitable[str]],
    subject: str | None = None,
) -> Delivery:
    """Call `send` (which returns the provider's id) unless `key` was delivered, or possibly delivered,
    before; one key per channel, so one channel failing never repeats or loses another."""
    message_id, earlier = await asyncio.to_thread(_claim, runtime, key, lead_id, channel, template, recipient)
    if earlier in (SENT, BOUNCED):
        return Delivery("already_sent" if earlier == SENT else BOUNCED, message_id)
    if earlier in (SENDING, UNCERTAIN):
        return Delivery(UNCERTAIN, message_id)
    try:
        provider_id = await send()
    except TemporaryDeliveryError as error:
        await asyncio.to_thread(_finish, runtime, message_id, status=DEFERRED, error=str(error))
        raise
    except PermanentDeliveryError as error:
        await asyncio.to_thread(_finish, runtime, message_id, status=BOUNCED, error=str(error))
        return Delivery(BOUNCED, message_id)
    await asyncio.to_thread(
        _finish,
        runtime,
        message_id,
        status=SENT,
        provider_id=provider_id,
        subject=subject,
        sent_at=clock.now(),
        error=None,
    )
    return Delivery(SENT, message_id)
