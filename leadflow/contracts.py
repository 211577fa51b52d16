"""What crosses the workflow/activity boundary: small dataclasses, new fields always with defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leadflow.content.models import Sequence


@dataclass(frozen=True)
class EventRef:
    """An accepted event as its lead's workflow sees it: enough to match goals, never the whole record."""

    event_id: int
    type: str
    occurred_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class NewEvents:
    events: list[EventRef]


@dataclass
class LeadWorkflowInput:
    lead_id: int
    pending: list[EventRef] = field(default_factory=list)
    running_sequences: list[str] = field(default_factory=list)
    recent_event_ids: list[int] = field(default_factory=list)


@dataclass
class AssessLeadInput:
    lead_id: int
    event_ids: list[int]
    started_sequences: list[str] = field(default_factory=list)


@dataclass
class SequenceStart:
    workflow_id: str
    sequence: Sequence


@dataclass
class AssessLeadResult:
    score: int
    stage: str
    new_stages: list[str] = field(default_factory=list)
    to_start: list[SequenceStart] = field(default_factory=list)
    handoff_stage_change_id: int | None = None


@dataclass
class HandOffInput:
    lead_id: int
    stage_change_id: int


@dataclass
class HandOffResult:
    salesperson: str
    notified: bool


@dataclass
class SequenceInput:
    lead_id: int
    sequence: Sequence


@dataclass
class SendInput:
    lead_id: int
    idempotency_key: str
    channel: str
    template: str
    sequence_id: str
    step: int
    sender: str = ""  # the sequence's From for emails; empty: the installation's
    reply_to: str = ""


@dataclass
class SendResult:
    # sent, already_sent, uncertain, bounced; suppressed (opted out: leave the sequence), skipped (this
    # channel cannot reach the lead: go on), held (not now: wait until `hold_until`, then ask again)
    status: str
    message_id: int | None = None
    reason: str = ""
    hold_until: datetime | None = None


@dataclass
class StepReached:
    workflow_id: str
    step: int


@dataclass
class EnrollmentFinished:
    workflow_id: str
    status: str  # completed, converted, exited
    reason: str = ""
