"""The store's tables. Stage changes, scores and messages are append-only records the reports are built from."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite has no 64-bit autoincrement type distinct from INTEGER; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite keeps no zone), always hands back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use leadflow.platform.clock.now()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, for the few prebuilt statements of hot paths (an ORM statement built at
    every call costs more than running it)."""
    return Base.metadata.tables[model.__tablename__]


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


class WorkflowTimer(Base):
    """The moment a lead's workflow will wake to rescore the lead by itself (its cooling timer; null: none),
    as its latest assessment told it. A row exists once the workflow has assessed the lead. The outbox router
    reads it to tell events that change nothing the workflow acts on (assessed in the store, never signalled)
    from those that must reach it (leadflow.intake.inert)."""

    __tablename__ = "workflow_timers"

    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    rescore_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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


class ScoringStateRow(Base):
    """A lead's incremental scoring state (leadflow.scoring.state): what its events add up to, folded once
    each, so an assessment reads this row and the events after it. `fingerprint` names the scoring model and
    segment counts it was built for; another one is rebuilt from the lead's events."""

    __tablename__ = "scoring_states"

    lead_id: Mapped[int] = mapped_column(BigId, ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[dict[str, Any]] = mapped_column(Json)


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


class SegmentMembership(Base):
    __tablename__ = "segment_memberships"
    __table_args__ = (UniqueConstraint("lead_id", "segment_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    segment_id: Mapped[str] = mapped_column(String(100))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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


class LeadKey(Base):
    """The data key that encrypts the lead's payloads in Temporal's histories (leadflow.platform.converter): erasing
    the lead deletes it (the foreign key cascades), and what Temporal still holds of the person is noise."""

    __tablename__ = "lead_keys"

    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary(32))


class PushSubscription(Base):
    """A browser's PushSubscription (endpoint and encryption keys) for a lead."""

    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    endpoint: Mapped[str] = mapped_column(String(2048), unique=True)
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """A server-side API key, kept only as a keyed hash (leadflow.http.apikeys): the key itself is shown once,
    when it is created, and never stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # hex HMAC-SHA256 under the secret key
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InboundMessage(Base):
    """A message a provider delivered to a webhook (Twilio's MessageSid), kept so that a webhook replayed
    or retried with the same id is acted on once."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
