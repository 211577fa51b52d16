"""Who gets the lead: the account's owner, else the assignment rules of `sales.yaml`, then round-robin kept in
the store; reassignment on escalation; every step recorded in `handoff_events`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadflow.content.conditions import filter_holds
from leadflow.handoff.model import Salesperson, SalesTeam
from leadflow.platform import clock
from leadflow.platform.errors import LeadflowError
from leadflow.platform.store.models import Account, AssignmentCursor, Handoff, HandoffEvent, Lead, StageChange
from leadflow.platform.store.upsert import insert_ignoring_conflicts

NOTIFICATION_TEMPLATE = "sales_handoff"


class HandoffStatus(StrEnum):
    ASSIGNED = "assigned"  # not accepted yet: the follow-up SLA runs
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RECYCLED = "recycled"
    CONVERTED = "converted"


OPEN = (HandoffStatus.ASSIGNED, HandoffStatus.ACCEPTED)  # a hand-off sales has not closed
WAITING = HandoffStatus.ASSIGNED
TIME_FORMAT = "%Y-%m-%d %H:%M UTC"


class NoSalespersonAvailable(LeadflowError):
    pass


class HandoffRefused(LeadflowError, ValueError):
    """Sales asked for something the hand-off's state does not allow (accept a closed one, …)."""

    http_status = 409


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
