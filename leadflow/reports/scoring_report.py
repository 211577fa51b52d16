"""Scoring health (score distribution, temperatures, grades, MQLs that never became SQL), hot leads and a lead's score history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from leadflow.leads.lifecycle import Stage
from leadflow.platform.store.models import Lead, ScoreSnapshot, StageChange
from leadflow.reports.period import FUNNEL, GRADES, TEMPERATURES, Period

# --- scoring health --------------------------------------------------------------------------------


@dataclass
class ScoringHealth:
    score_distribution: list[tuple[str, int]]
    temperature: dict[str, int]
    grades: dict[str, int]
    mqls: int  # leads that became MQL in the period
    mql_never_sql: int  # …and have not reached SQL
    mql_never_sql_share: float | None


SCORE_BUCKET = 10
SCORE_TOP = 100


def scoring_health(session: Session, period: Period) -> ScoringHealth:
    """Current scores of every lead (the distribution now), and the period's MQLs that never became SQL."""
    bucket = case(
        (Lead.score < 0, -SCORE_BUCKET),
        (Lead.score >= SCORE_TOP, SCORE_TOP),
        else_=(Lead.score // SCORE_BUCKET) * SCORE_BUCKET,
    )
    found: dict[int, int] = dict(session.execute(select(bucket, func.count()).group_by(bucket)).all())
    distribution = [("< 0", int(found.get(-SCORE_BUCKET, 0)))] + [
        (f"{low}–{low + SCORE_BUCKET - 1}", int(found.get(low, 0)))
        for low in range(0, SCORE_TOP, SCORE_BUCKET)
    ]
    distribution.append((f"{SCORE_TOP}+", int(found.get(SCORE_TOP, 0))))
    temperature = dict(
        session.execute(select(Lead.temperature, func.count()).group_by(Lead.temperature)).all()
    )
    grades = dict(session.execute(select(Lead.grade, func.count()).group_by(Lead.grade)).all())
    stamps = (
        select(
            StageChange.lead_id,
            func.min(case((StageChange.to_stage == Stage.MQL, StageChange.changed_at))).label("mql_at"),
            func.count(case((StageChange.to_stage.in_(FUNNEL[2:]), 1))).label("later"),
        )
        .where(StageChange.to_stage.in_(FUNNEL[1:]))
        .group_by(StageChange.lead_id)
        .subquery()
    )
    mqls, never = session.execute(
        select(func.count(), func.count(case((stamps.c.later == 0, 1)))).where(period.holds(stamps.c.mql_at))
    ).one()
    return ScoringHealth(
        distribution,
        {name: int(temperature.get(name, 0)) for name in TEMPERATURES},
        {name: int(grades.get(name, 0)) for name in GRADES},
        int(mqls),
        int(never),
        never / mqls if mqls else None,
    )


# --- hot leads -------------------------------------------------------------------------------------


@dataclass
class HotLead:
    id: int
    email: str | None
    name: str
    score: int
    grade: str
    temperature: str
    stage: str
    last_activity_at: datetime | None
    owner: str | None


def hot_leads(session: Session, limit: int = 20) -> list[HotLead]:
    """The hottest leads first (hot, then by score): who a salesperson should call now."""
    rank = case((Lead.temperature == "hot", 0), (Lead.temperature == "warm", 1), else_=2)
    leads = session.scalars(
        select(Lead).where(Lead.temperature == "hot").order_by(rank, Lead.score.desc(), Lead.id).limit(limit)
    ).all()
    return [
        HotLead(
            lead.id,
            lead.email,
            " ".join(str(lead.properties.get(k, "")) for k in ("first_name", "last_name")).strip(),
            lead.score,
            lead.grade,
            lead.temperature,
            lead.stage,
            lead.last_activity_at,
            lead.owner,
        )
        for lead in leads
    ]


# --- score history -------------------------------------------------------------------------------


def score_history(session: Session, lead_id: int, limit: int = 200) -> list[tuple[datetime, int]]:
    """The lead's score from the ledger, oldest first (the newest `limit` entries)."""
    rows = session.execute(
        select(ScoreSnapshot.computed_at, ScoreSnapshot.score)
        .where(ScoreSnapshot.lead_id == lead_id)
        .order_by(ScoreSnapshot.computed_at.desc(), ScoreSnapshot.id.desc())
        .limit(limit)
    ).all()
    return [(at, score) for at, score in reversed(rows)]
