"""Hand-off to sales: who gets the lead (account owner, else round-robin kept in the store) and what the
salesperson reads in the notification."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadflow import clock
from leadflow.content.models import Salesperson
from leadflow.leads import latest_score, recent_events, template_context, top_reasons
from leadflow.store.models import Account, AssignmentCursor, Handoff, Lead, StageChange
from leadflow.store.upsert import insert_ignoring_conflicts

NOTIFICATION_TEMPLATE = "sales_handoff"


class NoSalespersonAvailable(Exception):
    pass


def assign(
    session: Session, lead: Lead, stage_change: StageChange, salespeople: list[Salesperson]
) -> Handoff:
    """The hand-off for this promotion, created once: the account's owner keeps its accounts, everyone
    else is dealt round-robin among the available salespeople of the team."""
    existing = session.scalars(select(Handoff).where(Handoff.stage_change_id == stage_change.id)).first()
    if existing:
        return existing
    account = session.get(Account, lead.account_id) if lead.account_id else None
    available = [person for person in salespeople if person.available]
    if account and account.owner and any(p.email == account.owner for p in available):
        salesperson, rule = account.owner, f"account owner of {account.domain}"
    else:
        if not available:
            raise NoSalespersonAvailable("no salesperson is available in sales.yaml")
        team = available[0].team
        members = [person for person in available if person.team == team]
        salesperson = members[_next_position(session, team) % len(members)].email
        rule = f"round-robin in team {team}"
    if account and not account.owner:
        account.owner = salesperson
    lead.owner = salesperson
    handoff = Handoff(
        stage_change_id=stage_change.id,
        lead_id=lead.id,
        salesperson=salesperson,
        rule=rule,
        status="assigned",
        assigned_at=clock.now(),
    )
    session.add(handoff)
    session.flush()
    return handoff


def _next_position(session: Session, team: str) -> int:
    insert_ignoring_conflicts(session, AssignmentCursor, [{"team": team, "position": 0}], ["team"])
    cursor = session.scalars(
        select(AssignmentCursor).where(AssignmentCursor.team == team).with_for_update()
    ).one()
    position = cursor.position
    cursor.position = position + 1
    return position


def notification_context(session: Session, lead: Lead, handoff: Handoff, lead_url: str) -> dict[str, Any]:
    """What the salesperson needs to open the conversation: who, score with its reasons, what they did."""
    snapshot = latest_score(session, lead.id)
    return {
        **template_context(session, lead),
        "score": {
            "total": lead.score,
            "fit": snapshot.fit if snapshot else 0,
            "behavior": snapshot.behavior if snapshot else 0,
        },
        "reasons": top_reasons(snapshot.breakdown if snapshot else []),
        "recent_activity": [
            {"type": e.type, "at": e.occurred_at.strftime("%Y-%m-%d %H:%M UTC"), "properties": e.properties}
            for e in recent_events(session, lead.id, limit=10)
        ],
        "assignment": {"salesperson": handoff.salesperson, "rule": handoff.rule},
        "lead_url": lead_url,
    }
