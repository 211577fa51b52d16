"""What crosses the workflow/activity boundary: small dataclasses, new fields always with defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from leadflow.content.models import Sequence

HANDED_TO_SALES = "handed to sales"  # the reason running sequences are told to exit


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
    next_rescore_at: datetime | None = None  # the cooling timer: a quiet lead's score or temperature moves
    rescore_requested: bool = False  # a colleague made the account hot, or the model changed


@dataclass
class AssessLeadInput:
    lead_id: int
    event_ids: list[int]
    started_sequences: list[str] = field(default_factory=list)
    as_of: datetime | None = None  # the workflow's time (decay follows it on the time-skipping server too)


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
    temperature: str = ""
    next_rescore_at: datetime | None = None
    rescore_lead_workflows: list[str] = field(default_factory=list)  # colleagues of a newly hot account


@dataclass
class HandOffInput:
    lead_id: int
    stage_change_id: int


@dataclass
class WebhookTarget:
    url: str
    format: str  # slack, json


@dataclass
class HandoffFollowUp:
    """What the hand-off workflow needs: the webhooks to call at once and the SLA, snapshot at hand-off."""

    workflow_id: str
    handoff_id: int
    lead_id: int
    webhooks: list[WebhookNotice] = field(default_factory=list)
    remind_after: timedelta | None = None
    escalate_after: timedelta | None = None
    max_reassignments: int = 0


@dataclass
class HandOffResult:
    salesperson: str
    notified: bool
    follow_up: HandoffFollowUp | None = None


@dataclass
class WebhookNotice:
    handoff_id: int
    key: str  # the idempotency key: one per hand-off, notice and webhook
    target: WebhookTarget
    notice: str = ""  # empty for the hand-off itself; "Reminder", "Reassigned to you", …


@dataclass
class FollowUpStep:
    handoff_id: int
    round: int  # reassignments so far: keys of this round's reminder and escalation
    may_reassign: bool = False


@dataclass
class FollowUpResult:
    open: bool  # still waiting for the salesperson to accept
    status: str = ""  # when not open: what sales answered (accepted, converted, rejected, recycled)
    salesperson: str = ""
    webhooks: list[WebhookNotice] = field(default_factory=list)  # to call now
    reassigned: bool = False


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


@dataclass
class SendResult:
    status: str  # sent, already_sent, uncertain, suppressed
    message_id: int | None = None


@dataclass
class StepReached:
    workflow_id: str
    step: int


@dataclass
class EnrollmentFinished:
    workflow_id: str
    status: str  # completed, converted, exited
    reason: str = ""
