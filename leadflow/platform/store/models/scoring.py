"""The score ledger, each lead's scoring state, the scoring model versions, rescore runs and stage changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from leadflow.platform.store.models.base import Base, BigId, Json, UTCDateTime


class ScoreSnapshot(Base):
    """The score ledger: every rescore appends the score and the contributions behind it."""

    __tablename__ = "score_snapshots"
    __table_args__ = (Index("ix_score_snapshots_lead_time", "lead_id", "computed_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    score: Mapped[int] = mapped_column(Integer)
    fit: Mapped[int] = mapped_column(Integer)
    behavior: Mapped[int] = mapped_column(Integer)
    breakdown: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    model_version: Mapped[str] = mapped_column(String(64))
    account: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    grade: Mapped[str | None] = mapped_column(String(1))
    temperature: Mapped[str | None] = mapped_column(String(8))
    # What the score was computed from besides the events (properties the fit rules read, colleagues'
    # activity, the recycle moment), so `leadflow leads score --at` can recompute it exactly.
    inputs: Mapped[dict[str, Any] | None] = mapped_column(Json)


class ScoringModelVersion(Base):
    """Every scoring model a score was computed with, by its version (a hash of the file), with its text."""

    __tablename__ = "scoring_models"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    first_used_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RescoreRun(Base):
    """`leadflow rescore`: progress kept per batch, so an interrupted run resumes where it stopped."""

    __tablename__ = "rescore_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_lead_id: Mapped[int] = mapped_column(BigInteger, default=0)
    leads_done: Mapped[int] = mapped_column(Integer, default=0)
    leads_changed_stage: Mapped[int] = mapped_column(Integer, default=0)
    stage_changes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # "lead→mql": count


class StageChange(Base):
    __tablename__ = "stage_changes"
    __table_args__ = (Index("ix_stage_changes_to_stage_changed_at", "to_stage", "changed_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    from_stage: Mapped[str] = mapped_column(String(32))
    to_stage: Mapped[str] = mapped_column(String(32))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)
    score: Mapped[int] = mapped_column(Integer)


class ScoringStateRow(Base):
    """A lead's incremental scoring state (leadflow.scoring.state): what its events add up to, folded once
    each, so an assessment reads this row and the events after it. `fingerprint` names the scoring model and
    segment counts it was built for; another one is rebuilt from the lead's events."""

    __tablename__ = "scoring_states"

    lead_id: Mapped[int] = mapped_column(BigId, ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[dict[str, Any]] = mapped_column(Json)
