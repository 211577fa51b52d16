"""The hand-off to sales: per salesperson, counts and how long leads waited to be notified and accepted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from leadflow.handoff.assignment import HandoffStatus
from leadflow.leads.lifecycle import CONVERTED_STAGES, Stage
from leadflow.platform.store.models import Handoff, StageChange
from leadflow.reports.period import EVERYONE, Period
from leadflow.reports.sql import Spread, seconds_between, spreads


@dataclass
class SalespersonRow:
    salesperson: str
    handed: int = 0
    notified: int = 0
    accepted: int = 0
    rejected: int = 0
    recycled: int = 0
    opportunities: int = 0
    conversion: float | None = None
    median_seconds_to_notify: float | None = None
    median_seconds_to_accept: float | None = None


@dataclass
class Handoffs:
    salespeople: list[SalespersonRow]
    total: SalespersonRow


def handoffs(session: Session, period: Period) -> Handoffs:
    after = (
        select(
            StageChange.lead_id,
            func.min(case((StageChange.to_stage.in_(CONVERTED_STAGES), StageChange.changed_at))).label(
                "opportunity_at"
            ),
            func.max(case((StageChange.to_stage == Stage.RECYCLED, StageChange.changed_at))).label(
                "recycled_at"
            ),
        )
        .where(StageChange.to_stage.in_((*CONVERTED_STAGES, Stage.RECYCLED)))
        .group_by(StageChange.lead_id)
        .subquery()
    )
    accepted = or_(
        Handoff.status.in_((HandoffStatus.ACCEPTED, HandoffStatus.CONVERTED)),
        Handoff.accepted_at.is_not(None),
    )
    recycled = or_(Handoff.status == HandoffStatus.RECYCLED, after.c.recycled_at >= Handoff.assigned_at)
    counted = (
        func.count(),
        func.count(Handoff.notified_at),
        func.count(case((accepted, 1))),
        func.count(case((Handoff.status == HandoffStatus.REJECTED, 1))),
        func.count(case((recycled, 1))),
        func.count(case((after.c.opportunity_at >= Handoff.assigned_at, 1))),
    )
    query = (
        select(Handoff.salesperson, *counted)
        .outerjoin(after, after.c.lead_id == Handoff.lead_id)
        .where(period.holds(Handoff.assigned_at))
        .group_by(Handoff.salesperson)
    )
    rows = {person: SalespersonRow(person, *map(int, numbers)) for person, *numbers in session.execute(query)}
    total = SalespersonRow(EVERYONE, *(sum(getattr(r, f) for r in rows.values()) for f in _COUNTED))
    notify = _waits(session, period, Handoff.notified_at) if rows else {}
    accept = _waits(session, period, Handoff.accepted_at) if rows else {}
    for person, entry in [*rows.items(), (EVERYONE, total)]:
        entry.conversion = entry.opportunities / entry.handed if entry.handed else None
        entry.median_seconds_to_notify = notify[person].median if person in notify else None
        entry.median_seconds_to_accept = accept[person].median if person in accept else None
    return Handoffs(sorted(rows.values(), key=lambda r: (-r.handed, r.salesperson)), total)


def _waits(session: Session, period: Period, until: Any) -> dict[str, Spread]:
    """Time from assignment to `until` per salesperson, and for everyone (EVERYONE)."""
    wait = seconds_between(Handoff.assigned_at, until).label("v")
    where = (period.holds(Handoff.assigned_at), until.is_not(None))
    each = select(Handoff.salesperson.label("grp"), wait).where(*where)
    everyone = select(literal(EVERYONE).label("grp"), wait).where(*where)
    return spreads(session, union_all(each, everyone).subquery().select())


_COUNTED = ("handed", "notified", "accepted", "rejected", "recycled", "opportunities")
