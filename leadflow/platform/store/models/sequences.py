"""Enrollments in sequences, their journal, and segment memberships."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from leadflow.platform.store.models.base import Base, BigId, Json, UTCDateTime


class Enrollment(Base):
    __tablename__ = "enrollments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(255), unique=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    sequence_id: Mapped[str] = mapped_column(String(100))
    sequence_version: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]] = mapped_column(Json)  # the sequence as it was at enrollment
    status: Mapped[str] = mapped_column(String(32), default="running")
    exit_reason: Mapped[str | None] = mapped_column(Text)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The event that made the lead enter the segment: the sequence's templates see it as `event`. None when
    # the segment was entered on properties, score or stage alone (or the event was erased). Indexed: deleting
    # events (erasure) looks up the enrollments naming them.
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"), index=True)


class EnrollmentStep(Base):
    """The journal of one enrollment: each step as it was reached, with what it decided (the branch taken,
    the A/B variant drawn for this lead, a send deferred by quiet hours). Timeline and A/B reports read it."""

    __tablename__ = "enrollment_steps"
    __table_args__ = (Index("ix_enrollment_steps_workflow_id", "workflow_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(255))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    step: Mapped[str] = mapped_column(String(100))  # "3", or "4.then.0" inside a branch, "5.B.0" in a split
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # workflow time
    detail: Mapped[str] = mapped_column(Text, default="")


class SegmentMembership(Base):
    __tablename__ = "segment_memberships"
    __table_args__ = (UniqueConstraint("lead_id", "segment_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    segment_id: Mapped[str] = mapped_column(String(100))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
