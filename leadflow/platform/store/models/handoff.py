"""Hand-offs to sales, their events, and the round-robin cursor per team."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from leadflow.platform.store.models.base import Base, BigId, Json, UTCDateTime


class Handoff(Base):
    """A lead handed to a salesperson; one per SQL promotion (the stage change that caused it)."""

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    stage_change_id: Mapped[int] = mapped_column(
        ForeignKey("stage_changes.id", ondelete="CASCADE"), unique=True
    )
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    salesperson: Mapped[str] = mapped_column(String(320))
    rule: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="assigned")  # see HANDOFF_OUTCOMES
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    team: Mapped[str | None] = mapped_column(String(100))
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reassignments: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # rejected, recycled or converted
    outcome_reason: Mapped[str | None] = mapped_column(Text)
    outcome_details: Mapped[dict[str, Any] | None] = mapped_column(Json)  # the opportunity, the customer


class HandoffEvent(Base):
    """What happened to a hand-off, in order (assigned, notified, reminded, reassigned, accepted, …): who,
    when, and why, for the reports."""

    __tablename__ = "handoff_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(32))
    salesperson: Mapped[str | None] = mapped_column(String(320))
    detail: Mapped[str] = mapped_column(Text, default="")


class AssignmentCursor(Base):
    """Round-robin position per team, kept in the store so fairness survives restarts."""

    __tablename__ = "assignment_cursors"
    __table_args__ = (UniqueConstraint("team"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer, default=0)
