"""Messages sent, consent and its changes, suppressions, push subscriptions and inbound messages."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from leadflow.platform.store.models.base import Base, BigId, UTCDateTime


class Message(Base):
    """One message to one recipient. The idempotency key is claimed before the provider is called."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(255))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    # claimed (an attempt holds it, the provider does not have it yet), sending (handed to the provider),
    # sent, deferred, bounced, uncertain; suppressed / skipped when the policy decided not to send
    status: Mapped[str] = mapped_column(String(16))
    claim_token: Mapped[str | None] = mapped_column(String(32))  # the attempt holding the claim
    provider_id: Mapped[str | None] = mapped_column(String(255), index=True)
    delivery_status: Mapped[str | None] = mapped_column(String(32))  # what the provider reported later
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class _ConsentState:
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # granted, withdrawn
    source: Mapped[str] = mapped_column(Text)  # where it was given or withdrawn: a form, a link, a keyword
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Consent(_ConsentState, Base):
    """A lead's current consent for one channel; every change is in consent_changes."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("lead_id", "channel"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))


class ConsentChange(_ConsentState, Base):
    __tablename__ = "consent_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)


class Suppression(Base):
    """Addresses never to message, kept only as a hash (so an erased person leaves no address behind)."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("channel", "address_hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    address_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))  # bounce, complaint, opt_out, invalid_number, erased
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PushSubscription(Base):
    """A browser's PushSubscription (endpoint and encryption keys) for a lead."""

    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    endpoint: Mapped[str] = mapped_column(String(2048), unique=True)
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboundMessage(Base):
    """A message a provider delivered to a webhook (Twilio's MessageSid), kept so that a webhook replayed
    or retried with the same id is acted on once."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
