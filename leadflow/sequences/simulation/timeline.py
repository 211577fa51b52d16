"""What a simulation reports: each simulated lead's timeline and the totals, read back from the store."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from leadflow.platform.store import Database
from leadflow.platform.store.models import Enrollment, EnrollmentStep, Event, Lead, Message
from leadflow.sequences.simulation.script import SIMULATED_DOMAIN


@dataclass
class TimelineEntry:
    at: datetime
    what: str


@dataclass
class LeadTimeline:
    email: str
    entries: list[TimelineEntry] = field(default_factory=list)
    outcome: str = "not enrolled"


@dataclass
class SimulationReport:
    sequence_id: str
    started_at: datetime
    horizon: timedelta
    leads: list[LeadTimeline]
    totals: dict[str, Any]
    wall_seconds: float = 0.0
    first_send_seconds: list[float] = field(default_factory=list)  # per enrollment, sorted


def build_report(db: Database, sequence_id: str, start: datetime, horizon: timedelta) -> SimulationReport:
    """Each simulated lead's timeline and the totals for `sequence_id`, read from the store."""
    with db.read() as session:
        leads = {
            lead.id: lead.email
            for lead in session.scalars(select(Lead).where(Lead.email.like(f"%.{SIMULATED_DOMAIN}")))
        }
        timelines = {lead_id: LeadTimeline(email or "") for lead_id, email in leads.items()}
        for event in session.scalars(select(Event).where(Event.lead_id.in_(leads))):
            detail = " ".join(f"{k}={v}" for k, v in event.properties.items())
            timelines[event.lead_id].entries.append(
                TimelineEntry(event.occurred_at, f"event {event.type} {detail}".rstrip())
            )
        enrollments = list(
            session.scalars(select(Enrollment).where(Enrollment.lead_id.in_(leads)).order_by(Enrollment.id))
        )
        for enrollment in enrollments:
            timeline = timelines[enrollment.lead_id]
            timeline.entries.append(
                TimelineEntry(enrollment.started_at, f"enrolled in {enrollment.sequence_id}")
            )
            if enrollment.finished_at:
                reason = f" ({enrollment.exit_reason})" if enrollment.exit_reason else ""
                timeline.entries.append(
                    TimelineEntry(
                        enrollment.finished_at, f"{enrollment.sequence_id} {enrollment.status}{reason}"
                    )
                )
            if enrollment.sequence_id == sequence_id:
                timeline.outcome = enrollment.status + (
                    f": {enrollment.exit_reason}" if enrollment.exit_reason else ""
                )
        steps = list(
            session.scalars(
                select(EnrollmentStep).where(EnrollmentStep.lead_id.in_(leads)).order_by(EnrollmentStep.id)
            )
        )
        for step in steps:
            if step.detail:
                timelines[step.lead_id].entries.append(
                    TimelineEntry(step.at, f"step {step.step}: {step.detail}")
                )
        messages = list(
            session.scalars(select(Message).where(Message.lead_id.in_(leads)).order_by(Message.id))
        )
        for message in messages:
            if message.lead_id is None:
                continue
            subject = f' "{message.subject}"' if message.subject else ""
            timelines[message.lead_id].entries.append(
                TimelineEntry(
                    message.sent_at or message.created_at,
                    f"{message.channel} {message.template} {message.status}{subject}",
                )
            )
    for timeline in timelines.values():
        timeline.entries.sort(key=lambda entry: entry.at)
    ours = [e for e in enrollments if e.sequence_id == sequence_id]
    our_ids = {e.workflow_id for e in ours}
    decisions = Counter(
        f"step {s.step}: {s.detail}"
        for s in steps
        if s.workflow_id in our_ids and s.detail.startswith(("branch", "split", "skipped", "deferred"))
    )
    first_sends = _time_to_first_send(ours, messages)
    totals = {
        "leads": len(leads),
        "enrolled": len({e.lead_id for e in ours}),
        "enrollments": len(ours),
        "outcomes": dict(Counter(e.status + (f": {e.exit_reason}" if e.exit_reason else "") for e in ours)),
        "messages": dict(Counter(f"{m.channel} {m.template} {m.status}" for m in messages)),
        "decisions": dict(sorted(decisions.items())),
        "enrollment_to_first_send_p50_seconds": _median(first_sends),
    }
    return SimulationReport(
        sequence_id, start, horizon, list(timelines.values()), totals, first_send_seconds=first_sends
    )


def _median(values: list[float]) -> float | None:
    return values[len(values) // 2] if values else None


def _time_to_first_send(enrollments: list[Enrollment], messages: list[Message]) -> list[float]:
    first: dict[str, datetime] = {}
    for message in messages:
        workflow_id = message.idempotency_key.split(":step-", 1)[0]
        if message.status == "sent" and message.sent_at and workflow_id not in first:
            first[workflow_id] = message.sent_at
    return sorted(
        (first[e.workflow_id] - e.started_at).total_seconds() for e in enrollments if e.workflow_id in first
    )
