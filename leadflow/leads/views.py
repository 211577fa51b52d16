"""Reading a lead as people see it: the API's lead document and the context templates render with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from leadflow.http.inputs import MAX_ID, cut_to_depth
from leadflow.messaging.consent import addresses, consent_document
from leadflow.platform.store.models import (
    Account,
    Enrollment,
    EnrollmentStep,
    Event,
    Handoff,
    Identity,
    Lead,
    LeadMerge,
    Message,
    ScoreSnapshot,
    SegmentMembership,
    StageChange,
)
from leadflow.scoring.score import tidy
from leadflow.sequences.model import SendStep, Sequence, walk_steps

TIMELINE_LENGTH = 50
# What a template's `lead` always has, and the properties leads are known to carry (see DESIGN.md): a
# template reading any other property, or one of these without `| default(...)`, fails for some leads.
LEAD_FIELDS_ALWAYS = ("id", "email", "stage", "score", "company")
LEAD_PROPERTIES_KNOWN = (
    "first_name",
    "last_name",
    "job_title",
    "industry",
    "company_size",
    "country",
    "timezone",
    "phone",
    "utm_source",
    "ebook_title",
)


def find_lead(session: Session, reference: str) -> Lead | None:
    """A lead by id, email or anonymous id; a lead merged into another is found as the one it joined."""
    if reference.isascii() and reference.isdigit():  # "²".isdigit() too, and ids end at 64 bits
        lead = session.get(Lead, int(reference)) if int(reference) <= MAX_ID else None
    elif "@" in reference:
        lead = session.scalars(select(Lead).where(Lead.email == reference.strip().lower())).first()
    else:
        lead = session.scalars(
            select(Lead).join(Identity, Identity.lead_id == Lead.id).where(Identity.anonymous_id == reference)
        ).first()
    if lead is not None and lead.merged_into_id is not None:
        return session.get(Lead, lead.merged_into_id)
    return lead


def latest_score(session: Session, lead_id: int) -> ScoreSnapshot | None:
    return session.scalars(
        select(ScoreSnapshot)
        .where(ScoreSnapshot.lead_id == lead_id)
        .order_by(ScoreSnapshot.id.desc())
        .limit(1)
    ).first()


def recent_events(session: Session, lead_id: int, limit: int = TIMELINE_LENGTH) -> list[Event]:
    return list(
        session.scalars(
            select(Event)
            .where(Event.lead_id == lead_id)
            .order_by(Event.occurred_at.desc(), Event.id.desc())
            .limit(limit)
        )
    )


# Every message renders with these: statements built once.
_COMPANY = select(Account.name).where(Account.id == bindparam("account"))
_ENROLLING_EVENT = (
    select(Event)
    .join(Enrollment, Enrollment.event_id == Event.id)
    .where(Enrollment.workflow_id == bindparam("workflow"))
)


def template_context(session: Session, lead: Lead) -> dict[str, Any]:
    """What a message template can use: `lead` (email, id, stage, score and every property)."""
    company = session.scalar(_COMPANY, {"account": lead.account_id}) if lead.account_id else None
    return {
        "lead": {
            **lead.properties,
            "id": lead.id,
            "email": lead.email,
            "phone": lead.phone,
            "stage": lead.stage,
            "score": lead.score,
            "company": lead.properties.get("company") or company,
        }
    }


EVENT_FIELDS = ("type", "occurred_at", "properties")  # what a template's `event` has


def event_context(event: Event | None) -> dict[str, Any]:
    """A template's `event`: the event that made the lead enter the sequence's segment. Without one (a
    segment entered on its score alone, an enrollment older than this record) only empty properties, so
    `event.properties.title | default(…)` still renders, and a bare `event.type` fails loudly."""
    if event is None:
        return {"properties": {}}
    return {"type": event.type, "occurred_at": event.occurred_at, "properties": dict(event.properties)}


def enrolling_event(session: Session, workflow_id: str) -> Event | None:
    """The event that made the lead enter the segment of the enrollment `workflow_id` (the sequence workflow's
    id); None when it entered without one, or the event was erased."""
    return session.scalars(_ENROLLING_EVENT, {"workflow": workflow_id}).first()


def sequence_message_context(session: Session, lead: Lead, workflow_id: str | None) -> dict[str, Any]:
    """What a sequence's message renders with: `lead`, and `event` as the enrollment `workflow_id` recorded it."""
    event = enrolling_event(session, workflow_id) if workflow_id is not None else None
    return {**template_context(session, lead), "event": event_context(event)}


def preview_context(session: Session, lead: Lead, channel: str, template: str) -> dict[str, Any]:
    """A template's context for a stored lead, as its latest enrollment in a sequence sending that template
    saw it (`leadflow preview --lead`, the dashboard's preview)."""
    enrollments = session.scalars(
        select(Enrollment).where(Enrollment.lead_id == lead.id).order_by(Enrollment.id.desc())
    )
    for enrollment in enrollments:
        steps = Sequence.model_validate(enrollment.definition).steps
        if any(
            isinstance(step, SendStep) and (step.send.channel, step.send.template) == (channel, template)
            for _, step in walk_steps(steps)
        ):
            return sequence_message_context(session, lead, enrollment.workflow_id)
    return {**template_context(session, lead), "event": event_context(None)}


def lead_document(session: Session, lead: Lead) -> dict[str, Any]:
    """Everything `GET /v1/leads/{id}` shows: properties, score and breakdown, stage, segments, sequences,
    and the recent timeline of events and messages."""
    snapshot = latest_score(session, lead.id)
    stages = session.scalars(
        select(StageChange).where(StageChange.lead_id == lead.id).order_by(StageChange.id)
    ).all()
    memberships = session.scalars(
        select(SegmentMembership).where(
            SegmentMembership.lead_id == lead.id, SegmentMembership.left_at.is_(None)
        )
    ).all()
    enrollments = session.scalars(
        select(Enrollment).where(Enrollment.lead_id == lead.id).order_by(Enrollment.id)
    ).all()
    messages = session.scalars(
        select(Message).where(Message.lead_id == lead.id).order_by(Message.id.desc()).limit(TIMELINE_LENGTH)
    ).all()
    decisions: dict[str, list[dict[str, Any]]] = {}
    for step in session.scalars(
        select(EnrollmentStep)
        .where(EnrollmentStep.lead_id == lead.id, EnrollmentStep.detail != "")
        .order_by(EnrollmentStep.id)
    ):
        decisions.setdefault(step.workflow_id, []).append(
            {"at": step.at, "step": step.step, "what": step.detail}
        )
    timeline: list[dict[str, Any]] = [
        {
            "at": e.occurred_at,
            "kind": "event",
            "type": e.type,
            "id": e.key,
            "properties": cut_to_depth(e.properties),
        }
        for e in recent_events(session, lead.id)
    ] + [
        {
            "at": m.sent_at or m.created_at,
            "kind": "message",
            "type": f"{m.channel}_{m.status}",
            "template": m.template,
            "subject": m.subject,
        }
        for m in messages
    ]
    timeline.sort(key=lambda item: item["at"], reverse=True)
    account = session.get(Account, lead.account_id) if lead.account_id else None
    return {
        "id": lead.id,
        "email": lead.email,
        "phone": lead.phone,
        "properties": cut_to_depth(lead.properties),
        "source": {"first_touch": lead.first_touch, "last_touch": lead.last_touch},
        "anonymous_ids": list(
            session.scalars(
                select(Identity.anonymous_id).where(Identity.lead_id == lead.id).order_by(Identity.created_at)
            )
        ),
        "merged_leads": [
            {
                "id": m.merged_lead_id,
                "anonymous_id": m.anonymous_id,
                "events_moved": m.events_moved,
                "at": m.merged_at,
            }
            for m in session.scalars(
                select(LeadMerge).where(LeadMerge.into_lead_id == lead.id).order_by(LeadMerge.merged_at)
            )
        ],
        "account": _account(account),
        "owner": lead.owner,
        "stage": lead.stage,
        "stage_history": [
            {"from": s.from_stage, "to": s.to_stage, "at": s.changed_at, "reason": s.reason, "score": s.score}
            for s in stages
        ],
        "score": score_document(lead, snapshot),
        "segments": [{"id": m.segment_id, "entered_at": m.entered_at} for m in memberships],
        "sequences": [
            {
                "id": e.sequence_id,
                "version": e.sequence_version,
                "status": e.status,
                "step": e.current_step,
                "exit_reason": e.exit_reason,
                "started_at": e.started_at,
                "finished_at": e.finished_at,
                "decisions": decisions.get(e.workflow_id, []),  # branches taken, variant drawn, sends held
            }
            for e in enrollments
        ],
        "handoffs": _handoffs(session, lead),
        "consent": consent_document(session, lead.id),
        "push_subscriptions": len(addresses(session, lead, "push")),
        "timeline": timeline[:TIMELINE_LENGTH],
        "created_at": lead.created_at,
        "last_activity_at": lead.last_activity_at,
    }


def _handoffs(session: Session, lead: Lead) -> list[dict[str, Any]]:
    from leadflow.handoff.answers import handoff_document  # the hand-off builds on this module

    found = session.scalars(select(Handoff).where(Handoff.lead_id == lead.id).order_by(Handoff.id.desc()))
    return [handoff_document(session, handoff) for handoff in found]


def _account(account: Account | None) -> dict[str, Any] | None:
    if account is None:
        return None
    return {
        "id": account.id,
        "domain": account.domain,
        "name": account.name,
        "hot": account.hot_since is not None,
        "hot_since": account.hot_since,
    }


def score_document(lead: Lead, snapshot: ScoreSnapshot | None) -> dict[str, Any]:
    """The score as a person reads it: total = fit + behavior + account, the fit grade, the temperature,
    the reasons that weigh most, and every contribution with its rule, event and points before and after
    decay (the latest ledger entry)."""
    breakdown = snapshot.breakdown if snapshot else []
    return {
        "total": lead.score,
        "fit": snapshot.fit if snapshot else 0,
        "behavior": snapshot.behavior if snapshot else 0,
        "account": snapshot.account if snapshot else 0,
        "grade": lead.grade,
        "temperature": lead.temperature,
        "computed_at": snapshot.computed_at if snapshot else None,
        "model_version": snapshot.model_version if snapshot else None,
        "counts_behavior_since": lead.scoring_since,
        "top_reasons": top_reasons(breakdown),
        "breakdown": breakdown,
    }


def top_reasons(breakdown: list[dict[str, Any]], limit: int = 5) -> list[dict[str, Any]]:
    """Rules by the points they add now, largest first: what a salesperson reads first."""
    totals: dict[str, float] = {}
    for item in breakdown:
        totals[item["rule"]] = totals.get(item["rule"], 0) + item["points"]
    ranked = sorted(((rule, tidy(points)) for rule, points in totals.items()), key=lambda r: -abs(r[1]))
    return [{"rule": rule, "points": points} for rule, points in ranked if points][:limit]
