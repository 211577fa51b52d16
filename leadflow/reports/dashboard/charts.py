"""Charts as inline SVG, drawn on the server: no script, no library, readable on a phone (they scale to the
width of their box through the viewBox). Every text is escaped; every bar carries its number as text."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from markupsafe import Markup

COLORS = ("#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2")
WIDTH = 640
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _svg(height: float, body: list[str], title: str) -> Markup:
    return Markup(
        f'<svg viewBox="0 0 {WIDTH} {height:.0f}" width="100%" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMinYMin meet" {FONT}><title>{escape(title)}</title>{"".join(body)}</svg>'
    )


def _empty(title: str) -> Markup:
    return _svg(40, ['<text x="8" y="24" fill="#6b7280">No data for this period</text>'], title)


def funnel(stages: Sequence[tuple[str, int, float | None]], title: str = "Funnel") -> Markup:
    """Centred bars narrowing by stage, each with its count and the conversion from the stage before."""
    top = max((count for _, count, _ in stages), default=0)
    if not top:
        return _empty(title)
    row, body = 34, []
    label_width, chart = 150, WIDTH - 150 - 70
    for index, (name, count, conversion) in enumerate(stages):
        y = index * row + 4
        width = max(2.0, chart * count / top)
        x = label_width + (chart - width) / 2
        color = COLORS[index % len(COLORS)]
        body.append(f'<text x="4" y="{y + 18}" font-size="14">{escape(name)}</text>')
        body.append(
            f'<text x="{label_width - 10}" y="{y + 18}" font-size="14" font-weight="bold" text-anchor="end">'
            f"{count}</text>"
        )
        body.append(
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{row - 8}" rx="3" fill="{color}">'
            f"<title>{escape(name)}: {count}</title></rect>"
        )
        if conversion is not None:
            body.append(
                f'<text x="{WIDTH - 4}" y="{y + 18}" font-size="14" text-anchor="end" fill="#374151">'
                f"{conversion * 100:.1f} %</text>"
            )
    return _svg(len(stages) * row + 4, body, title)


def bars(
    categories: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    height: int = 220,
) -> Markup:
    """Vertical bars, grouped by category, one color per series, with a legend and the values on top."""
    peak = max((value for values in series.values() for value in values), default=0)
    if not categories or not peak:
        return _empty(title)
    left, bottom, top_margin = 36, 40, 26
    plot_h = height - bottom - top_margin
    slot = (WIDTH - left - 8) / len(categories)
    bar = max(2.0, slot * 0.8 / len(series))
    body = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{WIDTH}" y2="{height - bottom}" stroke="#9ca3af"/>'
    ]
    for index, name in enumerate(series):
        body.append(f'<rect x="{left + index * 90}" y="4" width="10" height="10" fill="{COLORS[index]}"/>')
        body.append(f'<text x="{left + index * 90 + 14}" y="13">{escape(name)}</text>')
    step = max(1, len(categories) // 12)  # keep labels legible when there are many weeks
    for position, category in enumerate(categories):
        x0 = left + position * slot + slot * 0.1
        for index, values in enumerate(series.values()):
            value = values[position]
            h = plot_h * value / peak
            x = x0 + index * bar
            y = height - bottom - h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" fill="{COLORS[index]}">'
                f"<title>{escape(category)}: {value:g}</title></rect>"
            )
            if value and bar >= 14:
                body.append(
                    f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{value:g}</text>'
                )
        if position % step == 0:
            body.append(
                f'<text x="{left + position * slot + slot / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle" fill="#374151">{escape(category)}</text>'
            )
    body.append(f'<text x="4" y="{top_margin + 10}" fill="#6b7280">{peak:g}</text>')
    return _svg(height, body, title)


def line(points: Sequence[tuple[datetime, float]], title: str, height: int = 200) -> Markup:
    """A line over time with dots, the first and last times under the axis and the highest value."""
    if not points:
        return _empty(title)
    left, bottom, top_margin = 36, 28, 12
    values = [value for _, value in points]
    low, high = min(0.0, min(values)), max(values) or 1.0
    start, end = points[0][0].timestamp(), points[-1][0].timestamp()
    span = (end - start) or 1.0

    def xy(moment: datetime, value: float) -> tuple[float, float]:
        x = left + (WIDTH - left - 12) * ((moment.timestamp() - start) / span if len(points) > 1 else 0.5)
        y = top_margin + (height - bottom - top_margin) * (1 - (value - low) / ((high - low) or 1))
        return x, y

    coords = [xy(moment, value) for moment, value in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    body = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{WIDTH}" y2="{height - bottom}" stroke="#9ca3af"/>',
        f'<polyline points="{path}" fill="none" stroke="{COLORS[0]}" stroke-width="2"/>',
        f'<text x="4" y="{top_margin + 4}" fill="#6b7280">{high:g}</text>',
        f'<text x="4" y="{height - bottom}" fill="#6b7280">{low:g}</text>',
        f'<text x="{left}" y="{height - 8}" fill="#374151">{points[0][0]:%Y-%m-%d %H:%M}</text>',
        f'<text x="{WIDTH - 4}" y="{height - 8}" text-anchor="end" fill="#374151">{points[-1][0]:%Y-%m-%d %H:%M}</text>',
    ]
    body += [
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[0]}"><title>{moment:%Y-%m-%d %H:%M}: {value:g}</title></circle>'
        for (x, y), (moment, value) in zip(coords, points, strict=True)
    ]
    return _svg(height, body, title)


def sequence_diagram(steps: Sequence[tuple[str, int, int]], title: str) -> Markup:
    """The steps as boxes joined by arrows, each with how many leads are at it now and have passed it."""
    if not steps:
        return _empty(title)
    box_h, gap = 46, 22
    body = [
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#6b7280"/></marker></defs>'
    ]
    for index, (label, at, passed) in enumerate(steps):
        y = index * (box_h + gap) + 4
        fill = "#dbeafe" if at else "#f3f4f6"
        body.append(
            f'<rect x="40" y="{y}" width="{WIDTH - 80}" height="{box_h}" rx="8" fill="{fill}" stroke="#2563eb"/>'
        )
        body.append(
            f'<text x="56" y="{y + 20}" font-size="15" font-weight="bold">{index}. {escape(label)}</text>'
        )
        body.append(
            f'<text x="56" y="{y + 39}" font-size="14" fill="#374151"><tspan class="at">{at}</tspan> here now · '
            f'<tspan class="passed">{passed}</tspan> passed</text>'
        )
        if index < len(steps) - 1:
            body.append(
                f'<line x1="{WIDTH / 2}" y1="{y + box_h}" x2="{WIDTH / 2}" y2="{y + box_h + gap - 2}" '
                'stroke="#6b7280" stroke-width="2" marker-end="url(#arrow)"/>'
            )
    return _svg(len(steps) * (box_h + gap), body, title)
