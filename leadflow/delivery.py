"""Sending a message exactly once per idempotency key.

The key is claimed in the store (unique constraint) before the provider is called, so a retried or replayed
activity never sends twice. A claim left in `sending` means an earlier attempt died during the provider call:
whether the provider took the message is unknown, and we choose never-twice over maybe-once (`uncertain`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from leadflow import clock
from leadflow.channels import OutgoingEmail, PermanentDeliveryError, TemporaryDeliveryError
from leadflow.content.templates import RenderedEmail
from leadflow.runtime import Runtime
from leadflow.store.models import Message
from leadflow.store.upsert import insert_ignoring_conflicts

SENT, SENDING, DEFERRED, BOUNCED, UNCERTAIN = "sent", "sending", "deferred", "bounced", "uncertain"


# Asked inside the claim's transaction, before claiming: None to go ahead, or when the message may go out.
PacingCheck = Callable[[Session], datetime | None]


@dataclass(frozen=True)
class Delivery:
    status: str  # sent, already_sent, uncertain, bounced, deferred
    message_id: int | None
    retry_at: datetime | None = None


class _Deferred(Exception):
    def __init__(self, until: datetime) -> None:
        self.until = until


def _claim(
    runtime: Runtime,
    key: str,
    lead_id: int | None,
    template: str,
    recipient: str,
    pacing: PacingCheck | None,
    at: datetime | None,
) -> tuple[int, str | None]:
    """Claim `key`; returns the message id and, when it was claimed before, the status it had.

    The pacing check runs in the same transaction (which holds the lead's lock), so two sequences sending to
    one lead at once cannot both slip under a frequency cap."""
    with runtime.db.transaction() as session:
        existing = session.execute(select(Message.status).where(Message.idempotency_key == key)).first()
        if existing is None and pacing is not None and (until := pacing(session)) is not None:
            raise _Deferred(until)
        row = {
            "idempotency_key": key,
            "lead_id": lead_id,
            "channel": "email",
            "template": template,
            "recipient": recipient,
            "status": SENDING,
            "created_at": clock.not_before(at),
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
    runtime: Runtime,
    key: str,
    lead_id: int | None,
    to: str,
    template: str,
    rendered: RenderedEmail,
    pacing: PacingCheck | None = None,
    at: datetime | None = None,
) -> Delivery:
    """Send `rendered` to `to` unless `key` was sent (or possibly sent) before, or `pacing` says not yet
    (then `deferred` with the time it may go out, and nothing is claimed). `at`: the sending workflow's time.

    Raises TemporaryDeliveryError for the caller's retry policy; a permanent refusal returns `bounced`.
    """
    try:
        message_id, earlier = await asyncio.to_thread(_claim, runtime, key, lead_id, template, to, pacing, at)
    except _Deferred as deferred:
        return Delivery(DEFERRED, None, retry_at=deferred.until)
    if earlier in (SENT, BOUNCED):
        return Delivery("already_sent" if earlier == SENT else BOUNCED, message_id)
    if earlier in (SENDING, UNCERTAIN):
        return Delivery(UNCERTAIN, message_id)
    domain = runtime.settings.mail_from.rsplit("@", 1)[-1].rstrip(">")
    email = OutgoingEmail(to, rendered.subject, rendered.text, rendered.html, f"<{uuid4().hex}@{domain}>")
    try:
        provider_id = await runtime.email.send(email)
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
        subject=rendered.subject,
        sent_at=clock.not_before(at),
        error=None,
    )
    return Delivery(SENT, message_id)
