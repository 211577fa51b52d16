"""What crosses the workflow/activity boundary: small dataclasses, new fields always with defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from temporalio import workflow

from leadflow.sequences.model import Moment, SendWindow, Sequence

HANDED_TO_SALES = "handed to sales"  # the reason running sequences are told to exit
OPTED_OUT = "opted out"


class EnrollmentStatus(StrEnum):
    """An enrollment's status (its sequence workflow's outcome once finished), stored as the string."""

    RUNNING = "running"
    COMPLETED = "completed"  # went through every step
    CONVERTED = "converted"  # reached a goal
    EXITED = "exited"  # left early: opted out, left the segment, handed to sales, bounced


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


@dataclass(frozen=True)
class AbsenceTimer:
    """An absence window a lead's event opened (form started: submitted within 30 minutes?), closed by a
    durable timer in the lead workflow, which then asks the segments again."""

    event_id: int
    closes_at: datetime


@dataclass
class LeadWorkflowInput:
    lead_id: int
    pending: list[EventRef] = field(default_factory=list)
    running_sequences: list[str] = field(default_factory=list)
    recent_event_ids: list[int] = field(default_factory=list)
    # The wake-up with no event: a quiet lead's score or temperature moves, or a segment's count window
    # slides past (activities.leads folds both into this one moment).
    next_rescore_at: datetime | None = None
    rescore_requested: bool = False  # a colleague made the account hot, or the model changed
    merged_into: int | None = None  # set once the lead was merged into another: the workflow winds down
    absence_timers: list[AbsenceTimer] = field(default_factory=list)
    stage: str = ""  # after the last assessment: an MQL's next event may make it sales-ready


@dataclass
class AssessLeadInput:
    lead_id: int
    event_ids: list[int]
    started_sequences: list[str] = field(default_factory=list)
    closed_windows: list[int] = field(default_factory=list)  # trigger event ids whose absence window ended
    as_of: datetime | None = None  # the workflow's time; None: the clock's
    # What decides whether the assessment is urgent (leadflow.platform.lanes): the new events' types (a demo request)
    # and the lead's stage before them (an MQL may cross the SQL threshold with any event).
    event_types: list[str] = field(default_factory=list)
    stage: str = ""


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
    merged_into: int | None = None  # the lead was merged into this one: its workflow stops
    left_segments: list[str] = field(default_factory=list)
    absence_timers: list[AbsenceTimer] = field(default_factory=list)


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
class StepReached:
    workflow_id: str
    step: int
    label: str = ""  # "4.then.0" for nested steps; empty: str(step)
    kind: str = ""
    detail: str = ""
    lead_id: int | None = None
    at: datetime | None = None


@dataclass
class StepsReached:
    steps: list[StepReached]


@dataclass
class SendInput:
    lead_id: int
    idempotency_key: str
    channel: str
    template: str
    sequence_id: str
    step: int
    at: datetime | None = None  # the workflow's time, for quiet hours and caps; None: the clock's
    sender: str = ""  # the sequence's From for emails; empty: the installation's
    reply_to: str = ""
    journal: list[StepReached] = field(default_factory=list)  # the steps reached since the last activity


@dataclass
class SendResult:
    # sent, already_sent, uncertain, bounced; suppressed (opted out: leave the sequence), skipped (this
    # channel cannot reach the lead: go on), held (not now: wait until `hold_until`, then ask again)
    status: str
    message_id: int | None = None
    reason: str = ""
    hold_until: datetime | None = None
    retry_at: datetime | None = None  # "deferred" results recorded before held existed: read like hold_until


@dataclass
class LeadSnapshotInput:
    lead_id: int


@dataclass
class LeadSnapshot:
    """What a branch condition reads about the lead besides events."""

    properties: dict[str, Any] = field(default_factory=dict)
    score: int = 0
    temperature: str = "cold"
    stage: str = "lead"
    # The channels that can reach the lead now (send_policy.reachable_channels); absent from snapshots recorded
    # before `reachable:` existed, whose branches never ask.
    reachable: list[str] = field(default_factory=list)


@dataclass
class SendWindowInput:
    lead_id: int
    window: SendWindow
    after: datetime


@dataclass
class MomentInput:
    """A moment read from the store: the enrollment's entering event, or the lead's properties."""

    workflow_id: str
    lead_id: int
    moment: Moment


@dataclass
class EnrollmentFinished:
    workflow_id: str
    status: str  # completed, converted, exited
    reason: str = ""
    at: datetime | None = None  # the workflow's time
    journal: list[StepReached] = field(default_factory=list)  # the steps reached since the last activity


def signal_name(method: Callable[..., Any]) -> str:
    """The name Temporal knows a `@workflow.signal` method by, for the client calls that take a name
    (`start_signal` of signal-with-start): the method is named in code, so a renamed or removed signal is
    caught by mypy instead of by a lead that never wakes."""
    return workflow._SignalDefinition.must_name_from_fn_or_str(method)
