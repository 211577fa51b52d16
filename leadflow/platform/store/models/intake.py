"""What comes in: events, the outbox on their way to the workflows, dead letters, the router's lease, and the workflows' timers the router keeps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from leadflow.platform.store.models.base import Base, BigId, Json, UTCDateTime


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_lead_time", "lead_id", "occurred_at"),
        Index("ix_events_type_occurred_at", "type", "occurred_at"),  # opens and clicks in reports
        Index(
            "ix_events_lead_id", "lead_id", "id"
        ),  # an assessment reads the lead's events after its state's
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # the client's idempotency id
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    properties: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class Outbox(Base):
    """Accepted events not yet delivered to their lead's workflow; drained in id order."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(BigId)
    event_id: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeadLetter(Base):
    """An outbox row that can never be delivered (its event cannot be encoded for Temporal), set aside so the
    rest flows: listed, retried or dropped with `leadflow outbox dead-letters`. The outbox's columns and the
    error, nothing more."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(BigId, index=True)
    event_id: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the event entered the outbox
    set_aside_at: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str] = mapped_column(String(1000))


class Lease(Base):
    """Work only one process may do at a time (the outbox router): held until `expires_at`, renewed by its
    holder, taken over by another process once it lapses (its holder died)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkflowTimer(Base):
    """The moment a lead's workflow will wake to rescore the lead by itself (its cooling timer; null: none),
    as its latest assessment told it. A row exists once the workflow has assessed the lead. The outbox router
    reads it to tell events that change nothing the workflow acts on (assessed in the store, never signalled)
    from those that must reach it (leadflow.intake.inert)."""

    __tablename__ = "workflow_timers"

    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    rescore_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
