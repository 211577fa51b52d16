"""Sequence performance per step, from the enrollment journal and messages, and A/B split significance."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from leadflow.contracts import EnrollmentStatus
from leadflow.platform.store.models import Enrollment, EnrollmentStep, Event, Message
from leadflow.reports.funnel_report import Drop
from leadflow.reports.period import (
    BOUNCED_STATUSES,
    HANDED_TO_SALES,
    OPTED_OUT,
    SIGNIFICANCE,
    UNDELIVERED,
    Period,
)
from leadflow.reports.sql import position_in


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
        if status == EnrollmentStatus.RUNNING:
            report.running += count
            here.at_now += count
        elif status == EnrollmentStatus.CONVERTED:
            report.converted += count
            here.goal_reached += count
        elif reason == HANDED_TO_SALES:
            report.handed_to_sales += count
            here.handed_to_sales += count
        elif reason == OPTED_OUT:
            here.unsubscribed += count
        elif status != EnrollmentStatus.COMPLETED:
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
            func.count(func.distinct(case((Enrollment.status == EnrollmentStatus.CONVERTED, Enrollment.id)))),
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
