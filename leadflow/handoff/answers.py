"""How sales answers a hand-off (accept, reject, recycle, converted), and the hand-off as the API shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadflow.handoff.assignment import OPEN, WAITING, HandoffRefused, HandoffStatus, record
from leadflow.leads.lifecycle import CONVERTED_STAGES, Stage
from leadflow.platform.store.models import Handoff, HandoffEvent, Lead, StageChange
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.qualification import recycle

Action = Literal["accept", "reject", "recycle", "converted"]


@dataclass(frozen=True)
class SalesAnswer:
    action: Action
    reason: str = ""
    by: str | None = None
    to: Literal["opportunity", "customer"] = "opportunity"
    details: dict[str, Any] = field(default_factory=dict)


def latest_handoff(session: Session, lead_id: int) -> Handoff | None:
    return session.scalars(
        select(Handoff).where(Handoff.lead_id == lead_id).order_by(Handoff.id.desc()).limit(1)
    ).first()


def answer(session: Session, lead: Lead, reply: SalesAnswer, model: ScoringModel, now: datetime) -> Handoff:
    """Apply sales' answer to the lead's latest hand-off. Accept and converted stop the follow-up; reject
    and recycle send the lead back to nurture, stamped `recycled` (it qualifies again on new engagement)."""
    handoff = latest_handoff(session, lead.id)
    if handoff is None:
        raise HandoffRefused(f"lead {lead.id} has not been handed to sales")
    converting_further = (
        reply.action == "converted" and handoff.status == HandoffStatus.CONVERTED and lead.stage != reply.to
    )
    if handoff.status not in OPEN and not converting_further:
        raise HandoffRefused(f"the hand-off of lead {lead.id} is already {handoff.status}")
    who = reply.by or handoff.salesperson
    if reply.action == "accept":
        if handoff.status == WAITING:
            handoff.status, handoff.accepted_at = HandoffStatus.ACCEPTED, now
            record(session, handoff, "accepted", f"by {who}")
        return handoff
    if reply.action in ("reject", "recycle"):
        recycle(session, lead.id, f"{reply.action}ed by {who}: {reply.reason}", model, now)
        handoff.status = HandoffStatus.REJECTED if reply.action == "reject" else HandoffStatus.RECYCLED
        handoff.closed_at, handoff.outcome_reason = now, reply.reason
        record(session, handoff, handoff.status, f"by {who}: {reply.reason}")
        return handoff
    _convert(session, lead, handoff, reply, who, now)
    return handoff


def _convert(
    session: Session, lead: Lead, handoff: Handoff, reply: SalesAnswer, who: str, now: datetime
) -> None:
    order: list[str] = [Stage.SQL, *CONVERTED_STAGES]
    if lead.stage not in order or order.index(reply.to) <= order.index(lead.stage):
        raise HandoffRefused(f"lead {lead.id} is '{lead.stage}': it cannot become {reply.to!r}")
    session.add(
        StageChange(
            lead_id=lead.id,
            from_stage=lead.stage,
            to_stage=reply.to,
            changed_at=now,
            reason=f"converted by {who}" + (f": {reply.reason}" if reply.reason else ""),
            score=lead.score,
        )
    )
    lead.stage = reply.to
    handoff.accepted_at = handoff.accepted_at or now
    handoff.status, handoff.closed_at = HandoffStatus.CONVERTED, now
    handoff.outcome_details = {**(handoff.outcome_details or {}), reply.to: reply.details}
    record(session, handoff, "converted", f"to {reply.to} by {who}")


def close_open_handoff(
    session: Session, lead_id: int, status: str, reason: str, now: datetime
) -> Handoff | None:
    """Close the lead's open hand-off when the lead leaves sales another way (`POST …/recycle`)."""
    handoff = latest_handoff(session, lead_id)
    if handoff is None or handoff.status not in OPEN:
        return None
    handoff.status, handoff.closed_at, handoff.outcome_reason = status, now, reason
    record(session, handoff, status, reason)
    return handoff


def handoff_document(session: Session, handoff: Handoff) -> dict[str, Any]:
    """A hand-off as the reports read it: who, when, which rule, how long until sales accepted."""
    events = session.scalars(
        select(HandoffEvent).where(HandoffEvent.handoff_id == handoff.id).order_by(HandoffEvent.id)
    ).all()
    accepted_after = (
        (handoff.accepted_at - handoff.assigned_at).total_seconds() if handoff.accepted_at else None
    )
    return {
        "id": handoff.id,
        "status": handoff.status,
        "salesperson": handoff.salesperson,
        "team": handoff.team,
        "rule": handoff.rule,
        "assigned_at": handoff.assigned_at,
        "notified_at": handoff.notified_at,
        "reminded_at": handoff.reminded_at,
        "escalated_at": handoff.escalated_at,
        "reassignments": handoff.reassignments,
        "accepted_at": handoff.accepted_at,
        "seconds_to_accept": accepted_after,
        "closed_at": handoff.closed_at,
        "outcome_reason": handoff.outcome_reason,
        "outcome_details": handoff.outcome_details,
        "history": [
            {"at": e.at, "kind": e.kind, "salesperson": e.salesperson, "detail": e.detail} for e in events
        ],
    }
