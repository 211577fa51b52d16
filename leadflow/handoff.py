"""Hand-off to sales: who gets the lead (account owner, else the assignment rules of `sales.yaml` and then
round-robin kept in the store), what the salesperson reads, the follow-up (remind, escalate, reassign) and
how sales answers (accept, reject, recycle, converted). Every step is recorded in `handoff_events`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadflow import clock
from leadflow.content.conditions import filter_holds
from leadflow.content.models import Salesperson, SalesTeam, ScoringModel
from leadflow.leads import latest_score, recent_events, template_context, top_reasons
from leadflow.qualification import recycle
from leadflow.store.models import (
    Account,
    AssignmentCursor,
    Handoff,
    HandoffEvent,
    Lead,
    Message,
    StageChange,
)
from leadflow.store.upsert import insert_ignoring_conflicts

NOTIFICATION_TEMPLATE = "sales_handoff"
OPEN = ("assigned", "accepted")  # a hand-off sales has not closed (rejected, recycled or converted)
WAITING = "assigned"  # not accepted yet: the follow-up SLA runs
CONVERTED_STAGES = ("opportunity", "customer")
TIME_FORMAT = "%Y-%m-%d %H:%M UTC"


class NoSalespersonAvailable(Exception):
    pass


class HandoffRefused(ValueError):
    """Sales asked for something the hand-off's state does not allow (accept a closed one, …)."""


# --- assignment ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    salesperson: Salesperson
    team: str | None
    rule: str


def assign(session: Session, lead: Lead, stage_change: StageChange, sales: SalesTeam) -> Handoff:
    """The hand-off for this promotion, created once: the account's owner keeps its accounts, everyone
    else goes to the team of the first matching assignment rule and is dealt round-robin among its
    available salespeople."""
    existing = session.scalars(select(Handoff).where(Handoff.stage_change_id == stage_change.id)).first()
    if existing:
        return existing
    account = session.get(Account, lead.account_id) if lead.account_id else None
    choice = _choose(session, lead, account, sales)
    email = choice.salesperson.email
    if account and not account.owner:
        account.owner = email
    lead.owner = email
    handoff = Handoff(
        stage_change_id=stage_change.id,
        lead_id=lead.id,
        salesperson=email,
        team=choice.team,
        rule=choice.rule,
        status=WAITING,
        assigned_at=clock.now(),
    )
    session.add(handoff)
    session.flush()
    record(session, handoff, "assigned", f"{choice.rule}; promoted because {stage_change.reason}")
    return handoff


def _choose(session: Session, lead: Lead, account: Account | None, sales: SalesTeam) -> Choice:
    available = [person for person in sales.salespeople if person.available]
    owner = next((p for p in available if account and p.email == account.owner), None)
    if account and owner:
        return Choice(owner, owner.team, f"account owner of {account.domain}")
    for rule in sales.assignment:
        members = [person for person in available if person.team == rule.team]
        if members and filter_holds(rule.when, lead.properties):
            return _deal(session, members, f"round-robin in team {rule.team} (rule: {rule.name})")
    if not available:
        raise NoSalespersonAvailable("no salesperson is available in sales.yaml")
    team = available[0].team
    # No rules, or none matched an available salesperson: better anyone than no one, and say so.
    unmatched = " (no assignment rule matched an available salesperson)" if sales.assignment else ""
    members = [person for person in available if person.team == team]
    return _deal(session, members, f"round-robin in team {team}{unmatched}")


def _deal(session: Session, members: list[Salesperson], rule: str) -> Choice:
    team = members[0].team
    return Choice(members[_next_position(session, team) % len(members)], team, rule)


def _next_position(session: Session, team: str) -> int:
    """The team's round-robin position, kept in the store (row-locked), so fairness survives restarts and
    several workers."""
    insert_ignoring_conflicts(session, AssignmentCursor, [{"team": team, "position": 0}], ["team"])
    cursor = session.scalars(
        select(AssignmentCursor).where(AssignmentCursor.team == team).with_for_update()
    ).one()
    position = cursor.position
    cursor.position = position + 1
    return position


def salesperson(sales: SalesTeam, email: str) -> Salesperson:
    """The salesperson with `email`, or a stand-in (email only) when sales.yaml no longer lists them."""
    found = next((person for person in sales.salespeople if person.email == email), None)
    return found or Salesperson(name=email, email=email, available=False)


def reassign(session: Session, handoff: Handoff, lead: Lead, sales: SalesTeam) -> Salesperson | None:
    """Give an unaccepted hand-off to the next available salesperson of its team (anyone available when
    the team has nobody else); None when there is nobody else."""
    available = [p for p in sales.salespeople if p.available and p.email != handoff.salesperson]
    members = [p for p in available if p.team == handoff.team] or available
    if not members:
        return None
    person = _deal(session, members, "").salesperson
    team = person.team
    previous = handoff.salesperson
    handoff.salesperson, handoff.team = person.email, team
    handoff.reassignments += 1
    lead.owner = person.email
    record(session, handoff, "reassigned", f"not accepted by {previous} in time")
    return person


def record(session: Session, handoff: Handoff, kind: str, detail: str = "") -> None:
    session.add(
        HandoffEvent(
            handoff_id=handoff.id, at=clock.now(), kind=kind, salesperson=handoff.salesperson, detail=detail
        )
    )


# --- what the salesperson reads ----------------------------------------------------------------------


def notification_context(
    session: Session, lead: Lead, handoff: Handoff, lead_url: str, notice: str = ""
) -> dict[str, Any]:
    """What the salesperson needs to open the conversation: who, score and grade with the reasons,
    temperature, what they viewed and downloaded, the last touches, and a link. JSON-ready (webhooks)."""
    snapshot = latest_score(session, lead.id)
    events = recent_events(session, lead.id, limit=50)
    touches = session.scalars(
        select(Message)
        .where(Message.lead_id == lead.id, Message.status == "sent")
        .order_by(Message.id.desc())
        .limit(5)
    ).all()
    promotion = session.get(StageChange, handoff.stage_change_id)
    person = handoff.salesperson
    return {
        **template_context(session, lead),
        "score": {
            "total": lead.score,
            "fit": snapshot.fit if snapshot else 0,
            "behavior": snapshot.behavior if snapshot else 0,
            "account": snapshot.account if snapshot else 0,
            "grade": lead.grade,
            "temperature": lead.temperature,
        },
        "reasons": top_reasons(snapshot.breakdown if snapshot else []),
        "why_now": promotion.reason if promotion else "",
        "viewed": _distinct(e.properties.get("url") for e in events if e.type == "page_viewed")[:10],
        "downloaded": _distinct(
            e.properties.get("title") or e.properties.get("url") or e.type
            for e in events
            if e.type.endswith("_downloaded")
        )[:10],
        "recent_activity": [
            {"type": e.type, "at": e.occurred_at.strftime(TIME_FORMAT), "properties": e.properties}
            for e in events[:10]
        ],
        "last_touches": [
            {
                "channel": m.channel,
                "template": m.template,
                "subject": m.subject or "",
                "at": (m.sent_at or m.created_at).strftime(TIME_FORMAT),
            }
            for m in touches
        ],
        "assignment": {"salesperson": person, "team": handoff.team or "", "rule": handoff.rule},
        "handoff_id": handoff.id,
        "notice": notice,
        "lead_url": lead_url,
    }


def _distinct(values: Any) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if value:
            seen.setdefault(str(value), None)
    return list(seen)


def slack_payload(context: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message (text for notifications, blocks for the channel)."""
    lead, score = context["lead"], context["score"]
    name = " ".join(filter(None, [lead.get("first_name"), lead.get("last_name")])) or lead["email"]
    company = f" at {lead['company']}" if lead.get("company") else ""
    headline = f"{context['notice'] or 'Hot lead'}: {name}{company} (score {score['total']}, grade {score['grade']}, {score['temperature']})"
    reasons = "\n".join(f"• {r['rule']}: {r['points']:+g}" for r in context["reasons"]) or "—"
    viewed = ", ".join(context["viewed"][:5]) or "—"
    downloaded = ", ".join(context["downloaded"][:5]) or "—"
    return {
        "text": f"{headline} <{context['lead_url']}|open the lead>",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{name}* <mailto:{lead['email']}|{lead['email']}>"
                    f"{' · ' + lead['job_title'] if lead.get('job_title') else ''}{company}\n"
                    f"*Why now:* {context['why_now']}\n*Top reasons:*\n{reasons}",
                },
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Viewed:* {viewed}"},
                    {"type": "mrkdwn", "text": f"*Downloaded:* {downloaded}"},
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Assigned to {context['assignment']['salesperson']} by {context['assignment']['rule']}",
                    }
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the lead"},
                        "url": context["lead_url"],
                    }
                ],
            },
        ],
    }


def crm_payload(context: dict[str, Any]) -> dict[str, Any]:
    """A generic JSON document for a CRM: the whole context, under a stable event name."""
    return {"event": "lead.reminder" if context["notice"] else "lead.handed_off", **context}


# --- how sales answers -------------------------------------------------------------------------------

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
        reply.action == "converted" and handoff.status == "converted" and lead.stage != reply.to
    )
    if handoff.status not in OPEN and not converting_further:
        raise HandoffRefused(f"the hand-off of lead {lead.id} is already {handoff.status}")
    who = reply.by or handoff.salesperson
    if reply.action == "accept":
        if handoff.status == WAITING:
            handoff.status, handoff.accepted_at = "accepted", now
            record(session, handoff, "accepted", f"by {who}")
        return handoff
    if reply.action in ("reject", "recycle"):
        recycle(session, lead.id, f"{reply.action}ed by {who}: {reply.reason}", model, now)
        handoff.status = "rejected" if reply.action == "reject" else "recycled"
        handoff.closed_at, handoff.outcome_reason = now, reply.reason
        record(session, handoff, handoff.status, f"by {who}: {reply.reason}")
        return handoff
    _convert(session, lead, handoff, reply, who, now)
    return handoff


def _convert(
    session: Session, lead: Lead, handoff: Handoff, reply: SalesAnswer, who: str, now: datetime
) -> None:
    order = ["sql", *CONVERTED_STAGES]
    if lead.stage not in order or order.index(reply.to) <= order.index(lead.stage):
        raise HandoffRefused(f"lead {lead.id} is {lead.stage!r}: it cannot become {reply.to!r}")
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
    handoff.status, handoff.closed_at = "converted", now
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
