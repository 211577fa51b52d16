"""Sending a message exactly once per idempotency key, on any channel.

The key is claimed in the store (unique constraint) before the provider is called, so a retried or replayed
activity never sends twice. The claim is held by one attempt (its token): `claimed` while the message is
being prepared and the provider connected to, `sending` from the moment it is handed over (the attempt
swaps claimed for sending just before the provider can take it: SMTP DATA, the HTTP request). A claim left
in `claimed` means an earlier attempt stopped before the provider had anything: the next attempt takes it
over and sends. A claim left in `sending` means one died during the provider call: whether the provider took
the message is unknown, and we choose never-twice over maybe-once (`uncertain`).

The send-time policy (consent and suppression: leadflow.messaging.consent; quiet hours and frequency caps of
sending.yaml: leadflow.pacing) is asked inside the claiming transaction, so what it counts and what is
claimed cannot drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from leadflow.intake.ingest import EventIn, store_events
from leadflow.messaging import consent
from leadflow.messaging.providers import PermanentDeliveryError, TemporaryDeliveryError, UnsendableMessage
from leadflow.messaging.send_policy import Decision, Verdict
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Lead, Message, PushSubscription, table_of
from leadflow.platform.store.upsert import insert_ignoring_conflicts


class MessageStatus(StrEnum):
    """A message's status in the store, and what a delivery attempt answers. A StrEnum: stored and sent as
    its string."""

    CLAIMED = "claimed"  # the claim is written, the provider not called yet
    SENDING = "sending"  # the provider call is under way
    SENT = "sent"
    UNCERTAIN = "uncertain"  # the worker died during the provider call: possibly sent, never sent again
    DEFERRED = "deferred"  # a temporary failure: retried
    BOUNCED = "bounced"
    ALREADY_SENT = "already_sent"  # an earlier attempt sent it
    HELD = "held"  # the send-time policy holds it until a later time


SUPPRESSING = {"bounce": "bounce", "invalid_number": "invalid_number", "opted_out": "opt_out"}
# Refusals that say the address cannot receive: also a `<channel>_bounced` event on the lead, for scoring and
# segments (an opt-out is a consent change, recorded as such).
BOUNCES = ("bounce", "invalid_number")

# What an earlier attempt's status means to the attempt that finds it.
_EARLIER_ATTEMPT: dict[str, str] = {
    MessageStatus.SENT: MessageStatus.ALREADY_SENT,
    MessageStatus.SENDING: MessageStatus.UNCERTAIN,
}
Gate = Callable[[Session], Verdict]
HandOver = Callable[[], Awaitable[None]]
# Gets the claimed message's id and the hand-over to await at the last moment before the provider can take
# the message (it raises TakenOver when another attempt holds the claim now); returns the provider's id.
Send = Callable[[int, HandOver], Awaitable[str]]


class TakenOver(Exception):
    """Another attempt holds this message's claim now (this one was presumed dead): it must not send."""


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


_MESSAGE_BY_KEY = select(Message).where(Message.idempotency_key == bindparam("key"))


def _claim(claim: Claim, gate: Gate | None, now: datetime, token: str, session: Session) -> Delivery | int:
    """The id of the message claimed under `token` when the provider must be called now; else the Delivery
    to report."""
    message = session.scalars(_MESSAGE_BY_KEY, {"key": claim.key}).first()
    if message is not None and message.status == MessageStatus.CLAIMED:
        # An earlier attempt stopped before handing it over (its worker died, or it was presumed dead): the
        # provider has nothing, so it is decided and sent afresh, like a deferred one.
        message.status = MessageStatus.DEFERRED
    if message is not None and message.status not in (MessageStatus.DEFERRED,):
        if message.status == MessageStatus.SENDING:
            message.status = MessageStatus.UNCERTAIN
        status = _EARLIER_ATTEMPT.get(message.status, message.status)
        return Delivery(status, message.id, message.error or "")
    # New, or refused for now last time (nothing went out): the policy decides again, it may have changed.
    verdict = gate(session) if gate else Verdict(Decision.SEND)
    if verdict.outcome == Decision.HELD:
        return Delivery(
            MessageStatus.HELD, message.id if message else None, verdict.reason, verdict.hold_until
        )
    status = MessageStatus.CLAIMED if verdict.outcome == Decision.SEND else verdict.outcome
    if message is not None:
        message.status, message.error = status, verdict.reason or message.error
        message.claim_token = token
        return message.id if status == MessageStatus.CLAIMED else Delivery(status, message.id, verdict.reason)
    row = {
        "idempotency_key": claim.key,
        "lead_id": claim.lead_id,
        "channel": claim.channel,
        "template": claim.template,
        "recipient": claim.recipient,
        "subject": claim.subject,
        "status": status,
        "claim_token": token,
        "error": verdict.reason or None,
        "created_at": now,
    }
    inserted = insert_ignoring_conflicts(
        session, Message, [row], ["idempotency_key"], returning=(Message.id,)
    )
    if not inserted:  # another attempt claimed it between our read and our insert: it owns the send
        return Delivery(MessageStatus.UNCERTAIN, None, "claimed concurrently")
    message_id = int(inserted[0][0])
    return message_id if status == MessageStatus.CLAIMED else Delivery(status, message_id, verdict.reason)


_MESSAGES = table_of(Message)
_HAND_OVER = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id == bindparam("message"),
        _MESSAGES.c.status.in_((MessageStatus.CLAIMED, MessageStatus.SENDING)),
        _MESSAGES.c.claim_token == bindparam("token"),
    )
    .values(status=MessageStatus.SENDING)
)


def _hand_over(runtime: Runtime, message_id: int, token: str) -> bool:
    """claimed -> sending, if this attempt still holds the claim. Run again on a new connection when the store
    connection broke: already `sending` under this attempt's token means the lost commit happened."""

    def hand_over(session: Session) -> bool:
        handed = session.connection().execute(_HAND_OVER, {"message": message_id, "token": token})
        return bool(handed.rowcount)

    return runtime.db.retrying(hand_over)


# Not when another attempt took the claim over, or a commit whose answer was lost recorded it already.
_RECORD_OUTCOME = update(_MESSAGES).where(
    _MESSAGES.c.id == bindparam("message"),
    _MESSAGES.c.claim_token == bindparam("token"),
    _MESSAGES.c.status != bindparam("outcome"),
)
_RECORD_FAILURE = _RECORD_OUTCOME.values(status=bindparam("outcome"), error=bindparam("failure"))
_RECORD_SENT = _RECORD_OUTCOME.values(
    status=bindparam("outcome"), error=None, provider_id=bindparam("provider"), sent_at=bindparam("at")
)


def _record_outcome(
    runtime: Runtime,
    claim: Claim,
    message_id: int,
    token: str,
    now: datetime,
    error: Exception | None,
    status: str,
    provider_id: str | None = None,
) -> None:
    """What came of this attempt's call (sent, or failed with `error`); nothing when another attempt took
    the claim over meanwhile. Run again on a new connection when the store connection broke (recording the
    same outcome twice changes nothing): a message the provider took must not be left `sending`, to be found
    `uncertain` by the retry."""
    values: dict[str, object] = {"message": message_id, "token": token, "outcome": status}
    if error is None:
        statement = _RECORD_SENT
        values.update(provider=provider_id, at=now)
    else:
        statement = _RECORD_FAILURE
        values.update(failure=str(error))

    def record(session: Session) -> None:
        recorded = session.connection().execute(statement, values)
        if recorded.rowcount and isinstance(error, PermanentDeliveryError):
            _consequences(session, claim, message_id, error.reason, str(error), now)

    runtime.db.retrying(record)


def _consequences(
    session: Session, claim: Claim, message_id: int, reason: str, error: str, now: datetime
) -> None:
    """What a permanent refusal means for the address: suppressed (and, for a bounce, an event on the lead),
    or (push) the subscription removed."""
    if reason == "subscription_gone":
        session.execute(delete(PushSubscription).where(PushSubscription.endpoint == claim.recipient))
        return
    if reason not in SUPPRESSING:
        return
    consent.suppress(session, claim.channel, claim.recipient, SUPPRESSING[reason], error, now)
    lead = session.get(Lead, claim.lead_id) if claim.lead_id else None
    if reason == "opted_out" and lead is not None:
        consent.record_consent(
            session, lead, claim.channel, consent.ConsentStatus.WITHDRAWN, f"provider: {error}", now
        )
    if reason in BOUNCES and lead is not None:
        record_bounce(session, lead.id, message_id, claim.channel, claim.template)


def record_bounce(session: Session, lead_id: int, message_id: int, channel: str, template: str) -> None:
    """An `email_bounced` / `sms_bounced` event on the lead, once per message (the refusal at send time and a
    later delivery report share its id), stamped when it is recorded. Its properties name the message, never
    the provider's text, which may quote the address."""
    event = EventIn(
        id=f"lf-bounce-{message_id}",
        type=f"{channel}_bounced",
        lead_id=lead_id,
        properties={"message_id": message_id, "template": template},
    )
    store_events(session, [event])


async def deliver_once(
    runtime: Runtime, claim: Claim, send: Send, gate: Gate | None = None, now: datetime | None = None
) -> Delivery:
    """Call `send` unless `claim.key` was sent (or possibly sent) before or `gate` says not now.

    Raises TemporaryDeliveryError for the caller's retry policy; a permanent refusal returns `bounced`; a
    message that cannot be composed is recorded `bounced` and raises UnsendableMessage.
    """
    now = now or clock.now()
    token = uuid.uuid4().hex

    def claim_in_store() -> Delivery | int:
        with runtime.db.transaction() as session:
            return _claim(claim, gate, now, token, session)

    claimed = await runtime.db.call(claim_in_store)
    if isinstance(claimed, Delivery):
        return claimed
    message_id = claimed

    async def hand_over() -> None:
        if not await runtime.db.call(_hand_over, runtime, message_id, token):
            raise TakenOver(f"message {message_id} was claimed by a later attempt")

    def record(error: Exception | None, status: str, provider_id: str | None = None) -> Awaitable[None]:
        return runtime.db.call(
            _record_outcome, runtime, claim, message_id, token, now, error, status, provider_id
        )

    try:
        provider_id = await send(message_id, hand_over)
    except TakenOver as error:
        return Delivery(MessageStatus.UNCERTAIN, message_id, str(error))  # the later attempt sends it, or has
    except TemporaryDeliveryError as error:
        await record(error, MessageStatus.DEFERRED)
        raise
    except PermanentDeliveryError as error:
        await record(error, MessageStatus.BOUNCED)
        return Delivery(MessageStatus.BOUNCED, message_id, str(error))
    except UnsendableMessage as error:  # it never left: recorded as bounced, the address is not suppressed
        await record(error, MessageStatus.BOUNCED)
        raise
    await record(None, MessageStatus.SENT, provider_id)
    return Delivery(MessageStatus.SENT, message_id)
