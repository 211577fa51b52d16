"""Leads and what identifies them: accounts, identities, merges, and each lead's data key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from leadflow.platform.store.models.base import Base, BigId, Json, UTCDateTime


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str | None] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(255))  # salesperson email
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    hot_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # several contacts engaged at once


class Lead(Base):
    __tablename__ = "leads"
    # Never reuse an erased lead's id: its workflow id ("lead-<id>") must not reach a new person.
    __table_args__ = (
        Index("ix_leads_created_at", "created_at"),  # report cohorts
        Index("ix_leads_temperature_score", "temperature", "score"),  # the hot-leads list
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)  # E.164, for SMS and its replies
    properties: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    stage: Mapped[str] = mapped_column(String(32), default="lead")
    score: Mapped[int] = mapped_column(Integer, default=0)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The newest event that earned points: what "active" means for temperature and the account signal.
    last_activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    grade: Mapped[str] = mapped_column(String(1), default="D", server_default="D")  # fit grade A–D
    temperature: Mapped[str] = mapped_column(String(8), default="cold", server_default="cold")
    # Set when sales hands the lead back (recycled): only behavior from then on counts toward qualifying.
    scoring_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when this anonymous lead was merged into an identified one: a tombstone from then on (erasing the
    # identified lead erases its tombstones too).
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    # Where the lead came from: the earliest and the latest visit with UTM parameters or an outside referrer.
    first_touch: Mapped[dict[str, Any] | None] = mapped_column(Json)
    last_touch: Mapped[dict[str, Any] | None] = mapped_column(Json)


class LeadMerge(Base):
    """An anonymous lead merged into an identified one when a visitor identified (the merge's audit record)."""

    __tablename__ = "lead_merges"

    merged_lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    into_lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    anonymous_id: Mapped[str] = mapped_column(String(200))
    events_moved: Mapped[int] = mapped_column(Integer)
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Identity(Base):
    """An anonymous id (a browser cookie) and the lead it belongs to."""

    __tablename__ = "identities"

    anonymous_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LeadKey(Base):
    """The data key that encrypts the lead's payloads in Temporal's histories (leadflow.platform.converter): erasing
    the lead deletes it (the foreign key cascades), and what Temporal still holds of the person is noise."""

    __tablename__ = "lead_keys"

    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary(32))
