"""The funnel: the leads created in the period, how far each got, how fast, and weekly qualified counts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, String, case, cast, func, literal, select, union_all
from sqlalchemy.orm import Session

from leadflow.leads.lifecycle import Stage
from leadflow.platform.store.models import Enrollment, Lead, SegmentMembership, StageChange
from leadflow.reports.period import CONVERT_BUCKETS, FUNNEL, STAGE_NAMES, Period
from leadflow.reports.sql import Spread, seconds_between, spreads, week_of


@dataclass
class FunnelStage:
    stage: str
    name: str
    leads: int
    conversion: float | None  # share of the previous stage that reached this one
    median_seconds: float | None = None  # time from the previous stage
    p90_seconds: float | None = None


@dataclass
class FunnelRow:
    """One group's funnel (a UTM source, a segment, a sequence): leads per stage and conversions."""

    group: str
    counts: list[int]
    conversions: list[float | None]


@dataclass
class Drop:
    where: str
    lost: int
    rate: float | None


@dataclass
class Funnel:
    stages: list[FunnelStage]
    by_utm_source: list[FunnelRow]
    by_utm_medium: list[FunnelRow]
    by_utm_campaign: list[FunnelRow]
    by_segment: list[FunnelRow]
    by_sequence: list[FunnelRow]
    biggest_drop: Drop | None
    time_to_sql: Spread
    time_to_sql_histogram: list[tuple[str, int]]
    weekly: list[tuple[str, int, int]]  # week (Monday), MQL stamps, SQL stamps


def _reached(stage: str) -> Any:
    later = FUNNEL[FUNNEL.index(stage) :]
    return func.min(case((StageChange.to_stage.in_(later), StageChange.changed_at))).label(f"{stage}_at")


def _cohort(period: Period) -> Any:
    """One row per lead created in the period: when it was created and first reached each stage."""
    times = (
        select(StageChange.lead_id, *(_reached(stage) for stage in FUNNEL[1:]))
        .where(StageChange.lead_id.in_(select(Lead.id).where(period.holds(Lead.created_at))))
        .group_by(StageChange.lead_id)
        .subquery()
    )
    return (
        select(
            Lead.id.label("lead_id"),
            Lead.created_at.label("lead_at"),
            *(times.c[f"{stage}_at"] for stage in FUNNEL[1:]),
            *(
                Lead.properties[key].as_string().label(key)
                for key in ("utm_source", "utm_medium", "utm_campaign")
            ),
        )
        .outerjoin(times, times.c.lead_id == Lead.id)
        .where(period.holds(Lead.created_at))
        # Computed once per statement, however many groupings read it (PostgreSQL 12+, SQLite 3.35+).
        .cte("cohort")
        .prefix_with("MATERIALIZED")
    )


def _stage_counts(cohort: Any, group: Any, joins: tuple[Any, ...] = ()) -> Select[Any]:
    """Leads per stage per group (distinct leads: a lead in two segments counts once in each)."""
    counted = [func.count(func.distinct(cohort.c.lead_id))] + [
        func.count(func.distinct(case((cohort.c[f"{stage}_at"].is_not(None), cohort.c.lead_id))))
        for stage in FUNNEL[1:]
    ]
    columns: list[Any] = [cast(group, String).label("grp"), *counted]
    query = select(*columns).select_from(cohort)
    for table, on in joins:
        query = query.join(table, on)
    return query.group_by(group)


def _grouped_rows(session: Session, cohort: Any) -> dict[str, list[FunnelRow]]:
    """The funnel per grouping (overall, UTM source / medium / campaign, segment, sequence) in one statement,
    so the cohort is computed once."""
    groupings: dict[str, tuple[Any, tuple[Any, ...]]] = {
        "all": (literal("all"), ()),
        "utm_source": (cohort.c.utm_source, ()),
        "utm_medium": (cohort.c.utm_medium, ()),
        "utm_campaign": (cohort.c.utm_campaign, ()),
        "segment": (
            SegmentMembership.segment_id,
            ((SegmentMembership, SegmentMembership.lead_id == cohort.c.lead_id),),
        ),
        "sequence": (Enrollment.sequence_id, ((Enrollment, Enrollment.lead_id == cohort.c.lead_id),)),
    }
    parts = [
        _stage_counts(cohort, group, joins).add_columns(cast(literal(name), String).label("grouping"))
        for name, (group, joins) in groupings.items()
    ]
    found: dict[str, list[FunnelRow]] = {name: [] for name in groupings}
    for group, *counts, grouping in session.execute(union_all(*parts)):
        numbers = [int(n) for n in counts]
        label = str(group) if group is not None else "(none)"
        found[grouping].append(FunnelRow(label, numbers, _conversions(numbers)))
    return {name: sorted(rows, key=lambda row: (-row.counts[0], row.group)) for name, rows in found.items()}


def _conversions(counts: list[int]) -> list[float | None]:
    return [None] + [(later / earlier if earlier else None) for earlier, later in itertools.pairwise(counts)]


def funnel(session: Session, period: Period) -> Funnel:
    cohort = _cohort(period)
    grouped = _grouped_rows(session, cohort)
    counts = grouped["all"][0].counts if grouped["all"] else [0] * len(FUNNEL)
    transitions = [
        select(
            literal(stage).label("grp"),
            seconds_between(cohort.c[f"{before}_at"], cohort.c[f"{stage}_at"]).label("v"),
        )
        .where(cohort.c[f"{stage}_at"].is_not(None))
        .where(cohort.c[f"{before}_at"].is_not(None))
        for before, stage in itertools.pairwise(FUNNEL)
    ]
    to_sql = select(
        literal("to_sql").label("grp"), seconds_between(cohort.c.lead_at, cohort.c.sql_at).label("v")
    ).where(cohort.c.sql_at.is_not(None))
    times = spreads(session, union_all(*transitions, to_sql).subquery().select())
    conversions = _conversions(counts)
    stages = [
        FunnelStage(
            stage,
            STAGE_NAMES[stage],
            counts[index],
            conversions[index],
            times[stage].median if stage in times else None,
            times[stage].p90 if stage in times else None,
        )
        for index, stage in enumerate(FUNNEL)
    ]
    return Funnel(
        stages=stages,
        by_utm_source=grouped["utm_source"],
        by_utm_medium=grouped["utm_medium"],
        by_utm_campaign=grouped["utm_campaign"],
        by_segment=grouped["segment"],
        by_sequence=grouped["sequence"],
        biggest_drop=_biggest_stage_drop(stages),
        time_to_sql=times.get("to_sql", Spread(0, None, None)),
        time_to_sql_histogram=_time_to_sql_histogram(session, cohort),
        weekly=weekly_qualified(session, period),
    )


def _biggest_stage_drop(stages: list[FunnelStage]) -> Drop | None:
    """The transition that keeps the smallest share of its leads (ties: the earlier one)."""
    candidates = [
        Drop(f"{before.name} → {after.name}", before.leads - after.leads, after.conversion)
        for before, after in itertools.pairwise(stages)
        if before.leads and after.conversion is not None
    ]
    return min(candidates, key=lambda drop: drop.rate or 0.0, default=None)


def _bucket_labels() -> list[str]:
    bounds = (0, *CONVERT_BUCKETS)
    return [f"{low}–{high} d" for low, high in itertools.pairwise(bounds)] + [f"{bounds[-1]}+ d"]


def _time_to_sql_histogram(session: Session, cohort: Any) -> list[tuple[str, int]]:
    days = seconds_between(cohort.c.lead_at, cohort.c.sql_at) / 86400.0
    bucket = case(
        *((days < bound, index) for index, bound in enumerate(CONVERT_BUCKETS)), else_=len(CONVERT_BUCKETS)
    )
    found: dict[int, int] = dict(
        session.execute(
            select(bucket, func.count()).where(cohort.c.sql_at.is_not(None)).group_by(bucket)
        ).all()
    )
    return [(label, int(found.get(index, 0))) for index, label in enumerate(_bucket_labels())]


def weekly_qualified(session: Session, period: Period) -> list[tuple[str, int, int]]:
    """MQL and SQL stamps per week (Monday first) in the period, every week present, empty ones as 0."""
    week = week_of(StageChange.changed_at)
    counts: dict[tuple[str, str], int] = {
        (str(w), stage): int(n)
        for w, stage, n in session.execute(
            select(week, StageChange.to_stage, func.count())
            .where(period.holds(StageChange.changed_at), StageChange.to_stage.in_((Stage.MQL, Stage.SQL)))
            .group_by(week, StageChange.to_stage)
        )
    }
    first = max(period.start, period.end - timedelta(weeks=26)).date()
    monday = first - timedelta(days=first.weekday())
    weeks: list[tuple[str, int, int]] = []
    while monday <= period.end.date():
        key = monday.isoformat()
        weeks.append((key, counts.get((key, Stage.MQL), 0), counts.get((key, Stage.SQL), 0)))
        monday += timedelta(weeks=1)
    return weeks
