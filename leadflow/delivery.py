"""Sending a message exactly once per idempotency key, on any channel.

The key is claimed in the store (unique constraint) before the provider is called, so a retried or replayed
activity never sends twice. A claim left in `sending` means an earlier attempt died during the provider call:
whether the provider took the message is unknown, and we choose never-twice over maybe-once (`uncertain`).

The send-time policy (consent, suppression, sending hours, frequency caps: leadflow.consent) is asked inside
the claiming transaction, so what it counts and what is claimed cannot drift apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from leadflow import clock, consent
from leadflow.channels import PermanentDeliveryError, TemporaryDeliveryError
from leadflow.consent import HOLD, SEND, Verdict
from leadflow.runtime import Runtime
from leadflow.store.models import Lead, Message, PushSubscription
from leadflow.store.upsert import insert_ignoring_conflicts

SENT, SENDING, DEFERRED, BOUNCED, UNCERTAIN = "sent", "sending", "deferred", "bounced", "uncertain"
ALREADY_SENT, HELD = "already_sent", "held"
SUPPRESSING = {"bounce": "bounce", "invalid_number": "invalid_number", "opted_out": "opt_out"}

Gate = Callable[[Session], Verdict]
Send = Callable[[int], Awaitable[str]]  # gets the claimed message's id, returns the provider's id


@dataclass(frozen=True)
class Claim:
    key: str
    lead_id: int | None
    channel: str
    template: str
    recipient: str
    subject: str | None = None


# Asked inside the claim's transaction, before claiming: None to go ahead, or when the message may go out.
PacingCheck = Callable[[Session], datetime | None]


@dataclass(frozen=True)
class Delivery:
    """sent, already_sent, uncertain, bounced; or what the policy decided: suppressed, skipped, held."""

    status: str
    message_id: int | None = None
    reason: str = ""
    hold_until: datetime | None = None


def _claim(claim: Claim, gate: Gate | None, now: datetime, session: Session) -> Delivery | int:
    """The claimed message's id when the provider must be called now; else the Delivery to report."""
    message = session.scalars(select(Message).where(Message.idempotency_key == claim.key)).first()
    if message is not None and message.status not in (DEFERRED,):
        if message.status == SENDING:
            message.status = UNCERTAIN
        status = {SENT: ALREADY_SENT, SENDING: UNCERTAIN}.get(message.status, message.status)
        return Delivery(status, message.id, message.error or "")
    # New, or refused for now last time (nothing went out): the policy decides again, it may have changed.
    verdict = gate(session) if gate else Verdict(SEND)
    if verdict.outcome == HOLD:
        return Delivery(HELD, message.id if message else None, verdict.reason, verdict.hold_until)
    status = SENDING if verdict.outcome == SEND else verdict.outcome
    if message is not None:
        message.status, message.error = status, verdict.reason or message.error
        return message.id if status == SENDING else Delivery(status, message.id, verdict.reason)
    row = {
        "idempotency_key": claim.key,
        "lead_id": claim.lead_id,
        "channel": claim.channel,
        "template": claim.template,
        "recipient": claim.recipient,
        "subject": claim.subject,
        "status": status,
        "error": verdict.reason or None,
        "created_at": now,
    }
    inserted = insert_ignoring_conflicts(
        session, Message, [row], ["idempotency_key"], returning=(Message.id,)
    )
    if not inserted:  # another attempt claimed it between our read and our insert: it owns the send
        return Delivery(UNCERTAIN, None, "claimed concurrently")
    message_id = int(inserted[0][0])
    return message_id if status == SENDING else Delivery(status, message_id, verdict.reason)


def _record_outcome(
    runtime: Runtime, claim: Claim, message_id: int, now: datetime, error: Exception | None, **values: object
) -> None:
    with runtime.db.transaction() as session:
        message = session.get_one(Message, message_id)
        message.error = str(error) if error else None
        for name, value in values.items():
            setattr(message, name, value)
        if isinstance(error, PermanentDeliveryError):
            _consequences(session, claim, error.reason, str(error), now)


def _consequences(session: Session, claim: Claim, reason: str, error: str, now: datetime) -> None:
    """What a permanent refusal means for the address: suppressed, or (push) the subscription removed."""
    if reason == "subscription_gone":
        session.execute(delete(PushSubscription).where(PushSubscription.endpoint == claim.recipient))
        return
    if reason not in SUPPRESSING:
        return
    consent.suppress(session, claim.channel, claim.recipient, SUPPRESSING[reason], error, now)
    lead = session.get(Lead, claim.lead_id) if claim.lead_id else None
    if reason == "opted_out" and lead is not None:
        consent.record_consent(session, lead, claim.channel, consent.WITHDRAWN, f"provider: {error}", now)


async def deliver_once(
    runtime: Runtime, claim: Claim, send: Send, gate: Gate | None = None, now: datetime | None = None
) -> Delivery:
    """Call `send` unless `claim.key` was sent (or possibly sent) before or `gate` says not now.

    Raises TemporaryDeliveryError for the caller's retry policy; a permanent refusal returns `bounced`.
    """
    now = now or clock.now()

    def claim_in_store() -> Delivery | int:
        with runtime.db.transaction() as session:
            return _claim(claim, gate, now, session)

    claimed = await asyncio.to_thread(claim_in_store)
    if isinstance(claimed, Delivery):
        return claimed
    message_id = claimed
    try:
        provider_id = await send(message_id)
    except TemporaryDeliveryError as error:
        await asyncio.to_thread(_record_outcome, runtime, claim, message_id, now, error, status=DEFERRED)
        raise
    except PermanentDeliveryError as error:
        await asyncio.to_thread(_record_outcome, runtime, claim, message_id, now, error, status=BOUNCED)
        return Delivery(BOUNCED, message_id, str(error))
    await asyncio.to_thread(
        _record_outcome,
        runtime,
        claim,
        message_id,
        now,
        None,
        status=SENT,
        provider_id=provider_id,
        sent_at=now,
    )
    return Delivery(SENT, message_id)
