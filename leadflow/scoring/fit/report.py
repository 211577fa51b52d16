"""The evaluation report three ways: terminal tables (rich), JSON, and one self-contained HTML page with
inline SVG charts (no scripts, no network)."""

from __future__ import annotations

import dataclasses
import html
import statistics
from typing import Any

from rich.console import Console
from rich.table import Table

from leadflow.scoring.fit.evaluation import Evaluation
from leadflow.scoring.fit.fitting import Report

TOP_RULES = 10
ROC_POINTS = 200


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def report_json(report: Report) -> dict[str, Any]:
    document = dataclasses.asdict(report)
    for name in ("model", "held_out"):
        if document[name]:
            roc = document[name]["roc"]
            step = max(len(roc) // ROC_POINTS, 1)
            document[name]["roc"] = [*roc[::step], roc[-1]] if roc else []
    if report.cross_validation:
        cv = report.cross_validation
        document["cross_validation"] |= {
            "mean_auc": cv.mean_auc,
            "sd_auc": _sd(cv.auc),
            "mean_model_auc": cv.mean_model_auc,
            "sd_model_auc": _sd(cv.model_auc),
            "mean_lift_top_10": statistics.fmean(cv.lift_top_10),
        }
    return document


# --- the rows every rendering shares ----------------------------------------------------------------


def _ranking_rows(report: Report) -> list[list[str]]:
    def row(name: str, evaluation: Evaluation) -> list[str]:
        model = f"{evaluation.model_auc:.3f}" if evaluation.model_auc is not None else "–"
        return [name, f"{evaluation.rows:,}", f"{evaluation.auc:.3f}", model, *_lifts(evaluation)]

    rows = []
    if report.held_out:
        rows.append(row("held-out split", report.held_out))
    if cv := report.cross_validation:
        rows.append(
            [
                f"{cv.folds}-fold cross-validation",
                f"{report.rows:,}",
                f"{cv.mean_auc:.3f} ± {_sd(cv.auc):.3f}",
                f"{cv.mean_model_auc:.3f} ± {_sd(cv.model_auc):.3f}",
                f"{statistics.fmean(cv.lift_top_10):.2f}×",
                "",
            ]
        )
    rows.append(row("all rows (in-sample)" if report.command == "fit" else "this table", report.model))
    return rows


def _lifts(evaluation: Evaluation) -> list[str]:
    return [f"{evaluation.lift.get(key, 0):.2f}×" for key in ("top 10%", "top 20%")]


RANKING_HEADER = ["", "Leads", "AUC (points)", "AUC (model)", "Lift top 10%", "Lift top 20%"]
THRESHOLD_HEADER = ["Stage", "Score ≥", "Leads", "Share of leads", "Conversion", "Share of conversions"]
CALIBRATION_HEADER = ["Score band", "Leads", "Predicted", "Observed"]
RULE_HEADER = ["Rule", "Points", "Leads", "Conversion when matched", "Otherwise"]
COLUMN_HEADER = ["Column", "Kind", "Levels", "AUC alone", "Status"]


def _threshold_rows(evaluation: Evaluation) -> list[list[str]]:
    return [
        [
            t.stage,
            str(t.score),
            f"{t.leads:,}",
            f"{t.share_of_leads:.1%}",
            f"{t.conversion:.1%}",
            f"{t.share_of_conversions:.1%}",
        ]
        for t in evaluation.thresholds
    ]


def _calibration_rows(evaluation: Evaluation) -> list[list[str]]:
    return [
        [f"{b.low}–{b.high}", f"{b.leads:,}", f"{b.predicted:.1%}", f"{b.observed:.1%}"]
        for b in evaluation.calibration
    ]


def _rule_rows(evaluation: Evaluation) -> list[list[str]]:
    return [
        [
            r.rule,
            f"{r.points:+d}",
            f"{r.leads:,} ({r.share_of_leads:.0%})",
            f"{r.conversion_when_matched:.1%}",
            f"{r.conversion_otherwise:.1%}",
        ]
        for r in evaluation.rules[:TOP_RULES]
    ]


def _column_rows(report: Report) -> list[list[str]]:
    return [
        [c.column, c.kind, str(c.levels or ""), f"{c.auc:.3f}" if c.auc is not None else "", c.status]
        for c in report.columns
    ]


def _sections(report: Report) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, in reading order."""
    final, tested = report.model, report.held_out or report.model
    split = " (held-out split)" if report.held_out else ""
    sections = [("Ranking", RANKING_HEADER, _ranking_rows(report))]
    if report.held_out:
        sections.append(
            ("Thresholds on the held-out split", THRESHOLD_HEADER, _threshold_rows(report.held_out))
        )
    sections += [
        (
            "Thresholds" + (" of the written model, all rows" if report.held_out else ""),
            THRESHOLD_HEADER,
            _threshold_rows(final),
        ),
        (
            f"Calibration by score band{split}; predicted: {tested.calibration_source}",
            CALIBRATION_HEADER,
            _calibration_rows(tested),
        ),
        (f"Top {TOP_RULES} contributing rules", RULE_HEADER, _rule_rows(final)),
        ("Columns", COLUMN_HEADER, _column_rows(report)),
    ]
    return sections


def _title(report: Report) -> str:
    return (
        f"{report.history}: {report.rows:,} leads, {report.conversion_rate:.1%} converted "
        f"(outcome {report.target!r})"
    )


# --- terminal ------------------------------------------------------------------------------------------


def print_report(report: Report, console: Console) -> None:
    console.print(f"[bold]{_title(report)}[/]", highlight=False)
    if report.points_to_double_odds:
        console.print(f"about {report.points_to_double_odds:.0f} points double a lead's odds of converting")
    for title, header, rows in _sections(report):
        table = Table(*header, title=title, title_justify="left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


# --- HTML ------------------------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .75em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.warning { background: #fff4d6; padding: .5em 1em; border-left: 4px solid #e0a000; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
"""
SIZE, PAD = 320, 40


def report_html(report: Report) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(_title(report))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Scoring model {html.escape(report.command)}</h1><p>{html.escape(_title(report))}</p>",
    ]
    parts += [f"<p class='warning'>{html.escape(warning)}</p>" for warning in report.warnings]
    shown = report.held_out or report.model
    parts.append("<div class='charts'>")
    split = " (held-out split)" if report.held_out else ""
    parts.append(_figure(f"ROC curve{split}", _roc_svg(shown)))
    parts.append(_figure(f"Predicted and observed conversion by score band{split}", _calibration_svg(shown)))
    parts.append("</div>")
    for title, header, rows in _sections(report):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>")
        parts += [f"<th>{html.escape(cell)}</th>" for cell in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _figure(caption: str, svg: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _x(fraction: float) -> float:
    return PAD + fraction * (SIZE - 2 * PAD)


def _y(fraction: float) -> float:
    return SIZE - PAD - fraction * (SIZE - 2 * PAD)


def _axes(x_label: str, y_label: str, top: float) -> str:
    ticks = "".join(
        f"<text x='{PAD - 4}' y='{_y(i / 4) + 4:.1f}' text-anchor='end'>{top * i / 4:.0%}</text>"
        f"<line x1='{PAD}' x2='{SIZE - PAD}' y1='{_y(i / 4):.1f}' y2='{_y(i / 4):.1f}' stroke='#eee'/>"
        for i in range(5)
    )
    return (
        f"{ticks}<line x1='{PAD}' y1='{_y(0)}' x2='{SIZE - PAD}' y2='{_y(0)}' stroke='#888'/>"
        f"<line x1='{PAD}' y1='{_y(0)}' x2='{PAD}' y2='{_y(1)}' stroke='#888'/>"
        f"<text x='{SIZE / 2}' y='{SIZE - 8}' text-anchor='middle'>{html.escape(x_label)}</text>"
        f"<text x='12' y='{SIZE / 2}' transform='rotate(-90 12 {SIZE / 2})' text-anchor='middle'>"
        f"{html.escape(y_label)}</text>"
    )


def _svg(body: str) -> str:
    return f"<svg width='{SIZE}' height='{SIZE}' role='img'>{body}</svg>"


def _roc_svg(evaluation: Evaluation) -> str:
    step = max(len(evaluation.roc) // ROC_POINTS, 1)
    points = " ".join(f"{_x(fpr):.1f},{_y(tpr):.1f}" for fpr, tpr in [*evaluation.roc[::step], (1.0, 1.0)])
    return _svg(
        _axes("share of non-converting leads ranked above", "share of converting leads", 1.0)
        + f"<line x1='{_x(0)}' y1='{_y(0)}' x2='{_x(1)}' y2='{_y(1)}' stroke='#bbb' stroke-dasharray='4'/>"
        + f"<polyline points='{points}' fill='none' stroke='#1f6fb2' stroke-width='2'/>"
        + f"<text x='{_x(0.55)}' y='{_y(0.2)}'>AUC {evaluation.auc:.3f}</text>"
    )


def _calibration_svg(evaluation: Evaluation) -> str:
    bands = evaluation.calibration
    top = max([0.05, *(b.observed for b in bands), *(b.predicted for b in bands)])
    width = (SIZE - 2 * PAD) / max(len(bands), 1)
    bars, line = [], []
    for i, band in enumerate(bands):
        left = PAD + i * width
        height = band.observed / top * (SIZE - 2 * PAD)
        bars.append(
            f"<rect x='{left + 2:.1f}' y='{_y(0) - height:.1f}' width='{width - 4:.1f}' height='{height:.1f}' "
            f"fill='#9cc3e6'><title>{band.low}–{band.high}: {band.observed:.1%} observed</title></rect>"
        )
        line.append(f"{left + width / 2:.1f},{_y(band.predicted / top):.1f}")
    return _svg(
        _axes("score band (low to high)", "conversion", top)
        + "".join(bars)
        + f"<polyline points='{' '.join(line)}' fill='none' stroke='#c0392b' stroke-width='2'/>"
        + f"<text x='{PAD + 6}' y='{PAD - 8}'>bars: observed · line: predicted</text>"
    )
