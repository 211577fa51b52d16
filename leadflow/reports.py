"""Reports: the funnel, sequence performance per step, the hand-off to sales and scoring health.

Everything is counted in SQL (SQLite and PostgreSQL alike): Python only receives one row per stage, step,
salesperson or week, never one per lead or event. Percentiles are picked in SQL with window functions (the
two rows around the wanted rank) and interpolated here, as `percentile_cont` would.

The period is a cohort: the funnel follows the leads *created* in it, sequence figures the enrollments
*started* in it, hand-off figures the hand-offs *assigned* in it. Weekly trends count the stage stamps made in
it. Sequence steps inside branches and A/B splits come from the enrollment journal (`enrollment_steps`),
undelivered messages from the send status and the provider's later delivery report.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from leadflow.scoring import FUNNEL as STAGE_ORDER
from leadflow.store.models import (
    Enrollment,
    EnrollmentStep,
    Event,
    Handoff,
    Lead,
    Message,
    ScoreSnapshot,
    SegmentMembership,
    StageChange,
)

# The funnel a report follows; a lead that skipped a stage (straight to SQL) counts as having passed it.
FUNNEL = STAGE_ORDER[1:]  # from lead on: subscribers are not yet in the funnel
STAGE_NAMES = {
    "lead": "Leads",
    "mql": "MQL",
    "sql": "SQL",
    "opportunity": "Opportunity",
    "customer": "Customer",
}
TEMPERATURES = ("hot", "warm", "cold")
GRADES = ("A", "B", "C", "D")
HANDED_TO_SALES = "handed to sales"
OPTED_OUT = "opted out"
BOUNCED_STATUSES = ("bounced", "failed")
UNDELIVERED = ("bounced", "failed", "undelivered", "complained")
# Time from creation to SQL, as the dashboard's histogram shows it: upper bounds in days.
CONVERT_BUCKETS = (1, 3, 7, 14, 30, 60)
SIGNIFICANCE = 0.05
EVERYONE = "all salespeople"


# --- SQL that differs between SQLite and PostgreSQL ---------------------------------------------------


class seconds_between(FunctionElement[float]):
    """`end - start` in seconds."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    # julianday's doubles carry ~50 µs of noise at today's dates: milliseconds are what it can promise.
    return f"round((julianday({end}) - julianday({start})) * 86400.0, 3)"


@compiles(seconds_between, "postgresql")
def _seconds_postgresql(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


class week_of(FunctionElement[str]):
    """The Monday starting the week of a time, as text YYYY-MM-DD."""

    type = String()
    inherit_cache = True


@compiles(week_of, "sqlite")
def _week_sqlite(element: week_of, compiler: Any, **kw: Any) -> str:
    (moment,) = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"date({moment}, 'weekday 0', '-6 days')"


@compiles(week_of, "postgresql")
def _week_postgresql(element: week_of, compiler: Any, **kw: Any) -> str:
    (moment,) = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"to_char(date_trunc('week', {moment}), 'YYYY-MM-DD')"


class position_in(FunctionElement[int]):
    """1-based position of `needle` in `text`, 0 when absent."""

    type = Integer()
    inherit_cache = True


@compiles(position_in, "sqlite")
def _position_sqlite(element: position_in, compiler: Any, **kw: Any) -> str:
    text, needle = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"instr({text}, {needle})"


@compiles(position_in, "postgresql")
def _position_postgresql(element: position_in, compiler: Any, **kw: Any) -> str:
    text, needle = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"strpos({text}, {needle})"


# --- the period ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @classmethod
    def last(cls, since: str, now: datetime) -> Period:
        """`since` as `30d`, `12w`, `48h` or `all` (from the beginning), ending now."""
        if since.strip().lower() == "all":
            return cls(datetime(1970, 1, 1, tzinfo=now.tzinfo), now)
        match = re.fullmatch(r"\s*(\d+)\s*([hdw])\s*", since.lower())
        if not match:
            raise ValueError(f"--since {since!r}: expected a number of hours, days or weeks (48h, 30d, 12w)")
        amount, unit = int(match[1]), match[2]
        length = {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}
        return cls(now - length[unit], now)

    def holds(self, column: Any) -> ColumnElement[bool]:
        return and_(column >= self.start, column < self.end)


# --- percentiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    count: int
    median: float | None
    p90: float | None


def spreads(session: Session, values: Select[Any]) -> dict[str, Spread]:
    """Median and 90th percentile (linear interpolation) of `values` (columns: grp, v) per group, picked in
    SQL: only the rows around the two ranks come back."""
    inner = values.subquery()
    ranked = select(
        inner.c.grp,
        inner.c.v,
        func.row_number().over(partition_by=inner.c.grp, order_by=inner.c.v).label("rn"),
        func.count().over(partition_by=inner.c.grp).label("n"),
    ).subquery()
    lows = [((ranked.c.n - 1) * numerator) // 10 + 1 for numerator in (5, 9)]
    rows = session.execute(
        select(ranked.c.grp, ranked.c.v, ranked.c.rn, ranked.c.n).where(
            or_(*(ranked.c.rn.between(low, low + 1) for low in lows))
        )
    ).all()
    by_group: dict[str, dict[int, float]] = {}
    counts: dict[str, int] = {}
    for group, value, rank, count in rows:
        by_group.setdefault(group, {})[int(rank)] = float(value)
        counts[group] = int(count)
    return {
        group: Spread(
            counts[group], _percentile(ranks, counts[group], 0.5), _percentile(ranks, counts[group], 0.9)
        )
        for group, ranks in by_group.items()
    }


def _percentile(ranks: dict[int, float], count: int, share: float) -> float | None:
    if count == 0:
        return None
    position = (count - 1) * share
    low = int(position)
    lower = ranks[low + 1]
    upper = ranks.get(low + 2, lower)
    return lower + (upper - lower) * (position - low)


# --- the funnel ------------------------------------------------------------------------------------


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
            .where(period.holds(StageChange.changed_at), StageChange.to_stage.in_(("mql", "sql")))
            .group_by(week, StageChange.to_stage)
        )
    }
    first = max(period.start, period.end - timedelta(weeks=26)).date()
    monday = first - timedelta(days=first.weekday())
    weeks: list[tuple[str, int, int]] = []
    while monday <= period.end.date():
        key = monday.isoformat()
        weeks.append((key, counts.get((key, "mql"), 0), counts.get((key, "sql"), 0)))
        monday += timedelta(weeks=1)
    return weeks


# --- sequences ---------------------------------------------------------------------------------------


@dataclass
class StepRow:
    step: str
    label: str
    entered: int = 0
    at_now: int = 0  # running enrollments waiting at this step
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    bounced: int = 0
    goal_reached: int = 0
    handed_to_sales: int = 0
    left: int = 0  # exited here for any other reason


@dataclass
class Variant:
    name: str
    leads: int
    converted: int
    rate: float | None


@dataclass
class SplitResult:
    sequence: str
    step: str
    variants: list[Variant]
    difference: float | None  # second variant's rate minus the first's
    z: float | None
    p_value: float | None
    significant: bool


@dataclass
class SequenceReport:
    sequence: str
    enrolled: int
    running: int
    converted: int
    handed_to_sales: int
    steps: list[StepRow]


@dataclass
class Sequences:
    sequences: list[SequenceReport]
    splits: list[SplitResult]
    biggest_drop: Drop | None


def step_label(step: dict[str, Any]) -> str:
    """A step of a stored sequence definition as a person reads it (`send email ebook_tips`, `wait 3d`)."""
    kind = next(iter(step), "step")
    value = step.get(kind)
    if kind == "send" and isinstance(value, dict):
        return f"send {value.get('channel', '')} {value.get('template', '')}".strip()
    if kind == "wait":
        return f"wait {_duration_text(value)}"
    return kind


def _duration_text(value: Any) -> str:
    """A stored duration (seconds, `259200s`, `P3D`) in the largest whole unit: `3d`."""
    text = str(value)
    iso = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text)
    plain = re.fullmatch(r"(\d+(?:\.\d+)?)s?", text)
    if iso and text != "P":
        days, hours, minutes, seconds = (float(part or 0) for part in iso.groups())
        total = int(days * 86400 + hours * 3600 + minutes * 60 + seconds)
    elif plain:
        total = int(float(plain[1]))
    else:
        return text
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total and total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def _natural(label: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in label.split(".")]


def sequence_definitions(session: Session) -> dict[str, list[dict[str, Any]]]:
    """The steps of each sequence as its newest enrollment took them."""
    newest = select(func.max(Enrollment.id)).group_by(Enrollment.sequence_id)
    return {
        sequence_id: list(definition.get("steps", []))
        for sequence_id, definition in session.execute(
            select(Enrollment.sequence_id, Enrollment.definition).where(Enrollment.id.in_(newest))
        )
    }


def sequences(session: Session, period: Period) -> Sequences:
    definitions = sequence_definitions(session)
    reports: dict[str, SequenceReport] = {}
    steps: dict[str, dict[str, StepRow]] = {}

    def row(sequence: str, step: str) -> StepRow:
        rows = steps.setdefault(sequence, {})
        if step not in rows:
            top = step.split(".")[0]
            definition = definitions.get(sequence, [])
            label = step_label(definition[int(top)]) if top.isdigit() and int(top) < len(definition) else step
            rows[step] = StepRow(step, label)
        return rows[step]

    for sequence, definition in definitions.items():
        for index in range(len(definition)):
            row(sequence, str(index))

    _enrollment_outcomes(session, period, reports, row)
    _journal_entries(session, period, row)
    _message_outcomes(session, period, row)
    report_list = []
    for sequence, report in sorted(reports.items()):
        report.steps = sorted(steps.get(sequence, {}).values(), key=lambda r: _natural(r.step))
        report_list.append(report)
    splits = _splits(session, period)
    return Sequences(report_list, splits, _biggest_step_drop(report_list))


def _enrollment_outcomes(
    session: Session, period: Period, reports: dict[str, SequenceReport], row: Any
) -> None:
    """Enrollments by where they are (or left) and how: who entered each step, who is waiting at it, who
    reached the goal, was handed to sales, opted out or left there."""
    found = session.execute(
        select(
            Enrollment.sequence_id,
            Enrollment.current_step,
            Enrollment.status,
            Enrollment.exit_reason,
            func.count(),
        )
        .where(period.holds(Enrollment.started_at))
        .group_by(Enrollment.sequence_id, Enrollment.current_step, Enrollment.status, Enrollment.exit_reason)
    ).all()
    for sequence, current, status, reason, count in found:
        report = reports.setdefault(sequence, SequenceReport(sequence, 0, 0, 0, 0, []))
        report.enrolled += count
        here = row(sequence, str(current))
        for index in range(current + 1):
            row(sequence, str(index)).entered += count
        if status == "running":
            report.running += count
            here.at_now += count
        elif status == "converted":
            report.converted += count
            here.goal_reached += count
        elif reason == HANDED_TO_SALES:
            report.handed_to_sales += count
            here.handed_to_sales += count
        elif reason == OPTED_OUT:
            here.unsubscribed += count
        elif status != "completed":
            here.left += count


def _journal_entries(session: Session, period: Period, row: Any) -> None:
    """From the enrollment journal: steps inside branches and splits (`4.then.0`, `5.B.0`) are counted by
    their label, once per enrollment (a step's decision notes share its label)."""
    journal = EnrollmentStep
    found = session.execute(
        select(Enrollment.sequence_id, journal.step, func.count(func.distinct(journal.workflow_id)))
        .join(Enrollment, Enrollment.workflow_id == journal.workflow_id)
        .where(period.holds(Enrollment.started_at), journal.step.contains("."))
        .group_by(Enrollment.sequence_id, journal.step)
    ).all()
    for sequence, step, count in found:
        row(sequence, step).entered = count


def _message_outcomes(session: Session, period: Period, row: Any) -> None:
    """Messages per step (the idempotency key is `<workflow id>:step-<label>`), with their opens and clicks
    (`email_opened` / `email_clicked` events name their `message_id`)."""
    key = Message.idempotency_key
    marker = position_in(key, literal(":step-"))
    workflow_id = func.substr(key, 1, marker - 1)
    step = func.substr(key, marker + 6)
    message_id = Event.properties["message_id"].as_integer()
    engaged = {
        kind: (
            select(message_id.label("message_id"))
            .where(Event.type == kind, Event.occurred_at >= period.start)
            .group_by(message_id)
            .subquery()
        )
        for kind in ("email_opened", "email_clicked")
    }
    # Refused when sent (an SMTP bounce), or reported undelivered later (an SMS delivery report). Most
    # messages have no delivery report: NULL must not make `~undelivered` unknown.
    undelivered: ColumnElement[bool] = or_(
        Message.status.in_(BOUNCED_STATUSES), func.coalesce(Message.delivery_status, "").in_(UNDELIVERED)
    )
    sent = Message.status.in_(("sent", *BOUNCED_STATUSES))
    opened, clicked = engaged["email_opened"], engaged["email_clicked"]
    query = (
        select(
            Enrollment.sequence_id,
            step.label("step"),
            func.count(case((sent, 1))),
            func.count(case((and_(sent, ~undelivered), 1))),
            func.count(opened.c.message_id),
            func.count(clicked.c.message_id),
            func.count(case((undelivered, 1))),
        )
        .select_from(Message)
        .join(Enrollment, Enrollment.workflow_id == workflow_id)
        .outerjoin(opened, opened.c.message_id == Message.id)
        .outerjoin(clicked, clicked.c.message_id == Message.id)
        .where(marker > 0, period.holds(Enrollment.started_at))
        .group_by(Enrollment.sequence_id, step)
    )
    for sequence, label, n_sent, delivered, n_opened, n_clicked, bounced in session.execute(query):
        target = row(sequence, str(label))
        target.sent, target.delivered, target.opened = n_sent, delivered, n_opened
        target.clicked, target.bounced = n_clicked, bounced


def _splits(session: Session, period: Period) -> list[SplitResult]:
    """A/B splits from the enrollment journal (`split: variant B` on the split step's label): each variant's
    enrollments and how many reached the sequence's goal, the difference and a two-proportion z-test."""
    journal = EnrollmentStep
    prefix = "split: variant "
    variant = func.substr(journal.detail, len(prefix) + 1)
    found = session.execute(
        select(
            Enrollment.sequence_id,
            journal.step,
            variant,
            func.count(func.distinct(Enrollment.id)),
            func.count(func.distinct(case((Enrollment.status == "converted", Enrollment.id)))),
        )
        .join(Enrollment, Enrollment.workflow_id == journal.workflow_id)
        .where(period.holds(Enrollment.started_at), journal.detail.startswith(prefix))
        .group_by(Enrollment.sequence_id, journal.step, variant)
    ).all()
    grouped: dict[tuple[str, str], list[Variant]] = {}
    for sequence, step, name, leads, converted in found:
        grouped.setdefault((sequence, step), []).append(
            Variant(str(name), int(leads), int(converted), converted / leads if leads else None)
        )
    results = []
    for (sequence, step), variants in sorted(grouped.items()):
        variants.sort(key=lambda v: v.name)
        test = (
            two_proportion_test(*(n for v in variants[:2] for n in (v.converted, v.leads)))
            if len(variants) >= 2
            else None
        )
        results.append(
            SplitResult(
                sequence,
                step,
                variants,
                test.difference if test else None,
                test.z if test else None,
                test.p_value if test else None,
                bool(test and test.p_value is not None and test.p_value < SIGNIFICANCE),
            )
        )
    return results


@dataclass(frozen=True)
class ProportionTest:
    difference: float
    z: float | None
    p_value: float | None


def two_proportion_test(
    successes_a: int, total_a: int, successes_b: int, total_b: int
) -> ProportionTest | None:
    """B's rate minus A's, and the two-sided two-proportion z-test with a pooled standard error."""
    if not total_a or not total_b:
        return None
    rate_a, rate_b = successes_a / total_a, successes_b / total_b
    pooled = (successes_a + successes_b) / (total_a + total_b)
    error = math.sqrt(pooled * (1 - pooled) * (1 / total_a + 1 / total_b))
    if error == 0:
        return ProportionTest(rate_b - rate_a, None, None)
    z = (rate_b - rate_a) / error
    p_value = 2 * (1 - _normal_cdf(abs(z)))
    return ProportionTest(rate_b - rate_a, z, p_value)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _biggest_step_drop(reports: list[SequenceReport]) -> Drop | None:
    """The step where most enrollments left without reaching the goal (opted out, bounced, or other)."""
    candidates = [
        Drop(f"{report.sequence} step {step.step} ({step.label})", step.unsubscribed + step.left, None)
        for report in reports
        for step in report.steps
    ]
    for drop in candidates:
        entered = next(
            s.entered
            for r in reports
            for s in r.steps
            if drop.where == f"{r.sequence} step {s.step} ({s.label})"
        )
        drop.rate = drop.lost / entered if entered else None
    return max((d for d in candidates if d.lost), key=lambda d: d.lost, default=None)


# --- hand-off ------------------------------------------------------------------------------------


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
            func.min(
                case((StageChange.to_stage.in_(("opportunity", "customer")), StageChange.changed_at))
            ).label("opportunity_at"),
            func.max(case((StageChange.to_stage == "recycled", StageChange.changed_at))).label("recycled_at"),
        )
        .where(StageChange.to_stage.in_(("opportunity", "customer", "recycled")))
        .group_by(StageChange.lead_id)
        .subquery()
    )
    accepted = or_(Handoff.status.in_(("accepted", "converted")), Handoff.accepted_at.is_not(None))
    recycled = or_(Handoff.status == "recycled", after.c.recycled_at >= Handoff.assigned_at)
    counted = (
        func.count(),
        func.count(Handoff.notified_at),
        func.count(case((accepted, 1))),
        func.count(case((Handoff.status == "rejected", 1))),
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
            func.min(case((StageChange.to_stage == "mql", StageChange.changed_at))).label("mql_at"),
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


# --- everything at once ----------------------------------------------------------------------------


@dataclass
class Report:
    period: Period
    funnel: Funnel
    sequences: Sequences
    handoffs: Handoffs
    scoring: ScoringHealth
    hot_leads: list[HotLead] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def build_report(session: Session, period: Period) -> Report:
    return Report(
        period=period,
        funnel=funnel(session, period),
        sequences=sequences(session, period),
        handoffs=handoffs(session, period),
        scoring=scoring_health(session, period),
        hot_leads=hot_leads(session),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value


# --- as tables (terminal, CSV) ---------------------------------------------------------------------


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def duration(seconds: float | None) -> str:
    """A time span as a person says it: 45 s, 12 min, 5.5 h, 3.2 d."""
    if seconds is None:
        return "–"
    for unit, size, limit in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172800)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit}" if unit != "h" else f"{seconds / size:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _funnel_rows_table(title: str, rows: list[FunnelRow]) -> Table:
    headers = [title.split(" by ")[-1], *(STAGE_NAMES[s] for s in FUNNEL), "lead → SQL"]
    body = []
    for row in rows:
        to_sql = row.counts[2] / row.counts[0] if row.counts[0] else None
        body.append([row.group, *(str(n) for n in row.counts), percent(to_sql)])
    return Table(title, headers, body)


def tables(report: Report) -> list[Table]:
    funnel_, sequences_, handoffs_, scoring_ = (
        report.funnel,
        report.sequences,
        report.handoffs,
        report.scoring,
    )
    result = [
        Table(
            "Funnel (leads created in the period)",
            ["stage", "leads", "conversion", "median time", "p90 time"],
            [
                [
                    s.name,
                    str(s.leads),
                    percent(s.conversion),
                    duration(s.median_seconds),
                    duration(s.p90_seconds),
                ]
                for s in funnel_.stages
            ],
        ),
        Table(
            "Where leads drop out",
            ["where", "lost", "rate"],
            [
                [drop.where, str(drop.lost), percent(drop.rate)]
                for drop in (funnel_.biggest_drop, sequences_.biggest_drop)
                if drop is not None
            ],
        ),
        _funnel_rows_table("Funnel by UTM source", funnel_.by_utm_source),
        _funnel_rows_table("Funnel by UTM medium", funnel_.by_utm_medium),
        _funnel_rows_table("Funnel by UTM campaign", funnel_.by_utm_campaign),
        _funnel_rows_table("Funnel by segment", funnel_.by_segment),
        _funnel_rows_table("Funnel by sequence", funnel_.by_sequence),
        Table(
            "MQL and SQL per week",
            ["week of", "MQL", "SQL"],
            [[week, str(mql), str(sql)] for week, mql, sql in funnel_.weekly],
        ),
        Table(
            "Time from lead to SQL",
            ["days", "leads"],
            [[label, str(n)] for label, n in funnel_.time_to_sql_histogram],
        ),
    ]
    step_headers = ["step", "entered", "at now", "sent", "delivered", "opened", "clicked", "unsubscribed"]
    step_headers += ["bounced", "goal reached", "to sales", "left"]
    for sequence in sequences_.sequences:
        result.append(
            Table(
                f"Sequence {sequence.sequence}: {sequence.enrolled} enrolled, {sequence.running} running, "
                f"{sequence.converted} reached the goal, {sequence.handed_to_sales} handed to sales",
                step_headers,
                [
                    [
                        f"{s.step} {s.label}",
                        *(str(getattr(s, name)) for name in _STEP_COUNTS),
                    ]
                    for s in sequence.steps
                ],
            )
        )
    if sequences_.splits:
        result.append(
            Table(
                "A/B splits (goal reached)",
                ["sequence", "step", "variants", "difference", "p-value", "significant"],
                [
                    [
                        split.sequence,
                        split.step,
                        ", ".join(
                            f"{v.name}: {v.converted}/{v.leads} ({percent(v.rate)})" for v in split.variants
                        ),
                        percent(split.difference),
                        "–" if split.p_value is None else f"{split.p_value:.4f}",
                        "yes" if split.significant else "no",
                    ]
                    for split in sequences_.splits
                ],
            )
        )
    result.append(
        Table(
            "Hand-off to sales",
            [
                "salesperson",
                "SQLs",
                "notified",
                "accepted",
                "rejected",
                "recycled",
                "opportunity",
                "conversion",
                "time to notify",
                "time to accept",
            ],
            [
                [
                    r.salesperson,
                    *(str(getattr(r, name)) for name in _COUNTED[:6]),
                    percent(r.conversion),
                    duration(r.median_seconds_to_notify),
                    duration(r.median_seconds_to_accept),
                ]
                for r in [*handoffs_.salespeople, handoffs_.total]
            ],
        )
    )
    result += [
        Table(
            "Score distribution (all leads now)",
            ["score", "leads"],
            [[b, str(n)] for b, n in scoring_.score_distribution],
        ),
        Table(
            "Leads per temperature and fit grade (now)",
            ["", *TEMPERATURES, *GRADES],
            [
                [
                    "leads",
                    *(str(scoring_.temperature[t]) for t in TEMPERATURES),
                    *(str(scoring_.grades[g]) for g in GRADES),
                ]
            ],
        ),
        Table(
            "MQLs of the period that never became SQL",
            ["MQLs", "never SQL", "share"],
            [[str(scoring_.mqls), str(scoring_.mql_never_sql), percent(scoring_.mql_never_sql_share)]],
        ),
    ]
    return result


_STEP_COUNTS = (
    "entered",
    "at_now",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "unsubscribed",
    "bounced",
    "goal_reached",
    "handed_to_sales",
    "left",
)
