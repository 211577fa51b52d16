"""A report as tables, for the terminal and CSV."""

from __future__ import annotations

from dataclasses import dataclass

from leadflow.reports.full import Report
from leadflow.reports.funnel_report import FunnelRow
from leadflow.reports.handoff_report import _COUNTED
from leadflow.reports.period import FUNNEL, GRADES, STAGE_NAMES, TEMPERATURES
from leadflow.reports.sequence_report import _STEP_COUNTS


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
