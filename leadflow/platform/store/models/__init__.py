"""The store's tables. Stage changes, scores and messages are append-only records the reports are built from.

One module per domain: `base` (the declarative base and column types), `leads` (leads, accounts, identities,
merges, their data keys), `intake` (events, the outbox, dead letters, leases), `scoring` (the score ledger,
model versions, rescore runs, stage changes), `sequences` (enrollments, their journal, segment
memberships), `messaging` (messages, consent, suppressions, push subscriptions, inbound messages),
`handoff` (hand-offs, their events, the round-robin cursor) and `apikeys`. Importing this package
registers every table with `Base.metadata` (migrations compare against it).
"""

from leadflow.platform.store.models.apikeys import ApiKey
from leadflow.platform.store.models.base import Base, BigId, Json, UTCDateTime, table_of
from leadflow.platform.store.models.handoff import AssignmentCursor, Handoff, HandoffEvent
from leadflow.platform.store.models.intake import DeadLetter, Event, Lease, Outbox, WorkflowTimer
from leadflow.platform.store.models.leads import Account, Identity, Lead, LeadKey, LeadMerge
from leadflow.platform.store.models.messaging import (
    Consent,
    ConsentChange,
    InboundMessage,
    Message,
    PushSubscription,
    Suppression,
)
from leadflow.platform.store.models.scoring import (
    RescoreRun,
    ScoreSnapshot,
    ScoringModelVersion,
    ScoringStateRow,
    StageChange,
)
from leadflow.platform.store.models.sequences import Enrollment, EnrollmentStep, SegmentMembership

__all__ = [
    "Account",
    "ApiKey",
    "AssignmentCursor",
    "Base",
    "BigId",
    "Consent",
    "ConsentChange",
    "DeadLetter",
    "Enrollment",
    "EnrollmentStep",
    "Event",
    "Handoff",
    "HandoffEvent",
    "Identity",
    "InboundMessage",
    "Json",
    "Lead",
    "LeadKey",
    "LeadMerge",
    "Lease",
    "Message",
    "Outbox",
    "PushSubscription",
    "RescoreRun",
    "ScoreSnapshot",
    "ScoringModelVersion",
    "ScoringStateRow",
    "SegmentMembership",
    "StageChange",
    "Suppression",
    "UTCDateTime",
    "WorkflowTimer",
    "table_of",
]
