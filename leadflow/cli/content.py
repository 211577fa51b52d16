"""`leadflow check`, `preview` and `simulate`: the marketer's content checked, rendered and rehearsed."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from leadflow.cli.common import (
    FormatOption,
    Output,
    console,
    content_or_exit,
    database,
    errors,
    load_checked_content,
    print_json,
    print_warnings,
    problems_as_json,
)
from leadflow.content.loader import load_content
from leadflow.content.yamlfile import ContentError, ContentErrors
from leadflow.platform.settings import get_settings


def check(
    directory: Annotated[
        Path | None, typer.Argument(help="Content directory (default: LEADFLOW_CONTENT_DIR).")
    ] = None,
    output: FormatOption = Output.table,
) -> None:
    """Check every content file (scoring model, segments, sequences, templates, sales team, sites)."""
    directory = directory or get_settings().content_dir
    if output is Output.table:
        content = content_or_exit(directory)
        print_warnings(content)
        console.print(
            f"[green]ok[/] {directory}: scoring model {content.scoring.version}, "
            f"{len(content.segments)} segment(s), {len(content.sequences)} sequence(s), "
            f"{len(content.salespeople)} salespeople, {len(content.sites)} site(s)"
        )
        return
    try:
        content = load_content(directory)
    except (ContentError, ContentErrors) as problem:
        found = problem.errors if isinstance(problem, ContentErrors) else [problem]
        print_json({"ok": False, "directory": str(directory), "problems": problems_as_json(found)})
        raise typer.Exit(1) from None
    print_warnings(content)
    print_json(
        {
            "ok": True,
            "directory": str(directory),
            "problems": [],
            "warnings": problems_as_json(content.warnings),
            "scoring_model": content.scoring.version,
            "segments": sorted(content.segments),
            "sequences": sorted(content.sequences),
            "salespeople": len(content.salespeople),
            "sites": len(content.sites),
        }
    )


def preview(
    template: Annotated[str, typer.Argument(help="CHANNEL/NAME (email/webinar_invite), or NAME for email.")],
    lead: Annotated[
        str | None, typer.Option("--lead", help="Render for this lead (id, email, anonymous id).")
    ] = None,
    sample: Annotated[
        Path | None,
        typer.Option(
            "--sample",
            help="Render for the lead in this YAML/JSON file (its properties; `event:` the entering event).",
        ),
    ] = None,
) -> None:
    """Render a message template the way a lead would receive it: subject, text and HTML (or SMS / push)."""
    from leadflow.content.templates import TemplateRenderError

    channel, _, name = template.rpartition("/")
    channel = channel or "email"
    settings = get_settings()
    content = load_checked_content(settings.content_dir)
    problem = content.templates.problem_with(channel, name) if channel in ("email", "sms", "push") else None
    if channel not in ("email", "sms", "push") or problem:
        errors.print(
            problem or f"unknown channel {channel!r}: email, sms or push", highlight=False, markup=False
        )
        raise typer.Exit(1)
    if (lead is None) == (sample is None):
        errors.print("give one of --lead EMAIL or --sample FILE")
        raise typer.Exit(2)
    context = _lead_context(lead, channel, name) if lead else _sample_context(sample)  # type: ignore[arg-type]
    try:
        parts = content.templates.render(channel, name, context)
    except TemplateRenderError as error:
        errors.print(f"cannot render: {error}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    for part, text in parts.items():
        console.rule(f"[bold]{part}[/]", align="left")
        console.print(text, highlight=False, markup=False)


def _lead_context(reference: str, channel: str, template: str) -> dict[str, Any]:
    from leadflow.leads.views import find_lead, preview_context

    db = database()
    with db.read() as session:
        found = find_lead(session, reference)
        if found is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        return preview_context(session, found, channel, template)


def _sample_context(path: Path) -> dict[str, Any]:
    """A sample lead file: its properties, plus email / stage / score when given (defaults otherwise), and
    optionally `event:` (type, occurred_at, properties), the event that made the lead enter the segment."""
    from leadflow.content.yamlfile import YamlFile
    from leadflow.leads.views import EVENT_FIELDS, event_context

    try:
        data = YamlFile(path).data
    except (ContentError, OSError) as problem:
        errors.print(str(problem), highlight=False, markup=False)
        raise typer.Exit(1) from None
    if not isinstance(data, dict):
        errors.print(f"{path}: a sample is a mapping of lead properties (first_name: Ada, …)")
        raise typer.Exit(1)
    event = data.pop("event", None)
    if event is None:
        event = event_context(None)
    elif (
        not isinstance(event, dict)
        or set(event) - set(EVENT_FIELDS)
        or not isinstance(event.get("properties", {}), dict)
    ):
        errors.print(
            f"{path}: `event` is the event that made the lead enter the segment: a mapping of "
            "type, occurred_at and properties (event: {type: ebook_downloaded, properties: {title: …}})",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)
    lead = {"id": 0, "email": "sample@example.com", "stage": "lead", "score": 0, "company": None, **data}
    return {"lead": lead, "event": {"properties": {}, **event}}


def simulate(
    sequence: Annotated[str, typer.Argument(help="The sequence id (templates/sequences/ID.yaml).")],
    events: Annotated[Path, typer.Option("--events", help="The script: what leads do and when (YAML/JSON).")],
    leads: Annotated[int, typer.Option("--leads", min=1, help="How many leads play the script.")] = 1,
    timelines: Annotated[int, typer.Option(help="Print the timelines of this many leads.")] = 10,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1, help="Processes sharing the leads (default: one per CPU, 50 leads or more each)."
        ),
    ] = None,
    output: FormatOption = Output.table,
) -> None:
    """Run a sequence on the real workflows, on a time-skipping Temporal server: every lead's timeline and
    the totals, in seconds, before the campaign touches a real lead."""
    from leadflow.sequences.simulation import load_script, quiet_temporal_core
    from leadflow.sequences.simulation import simulate as run_simulation

    settings = get_settings()
    content = load_checked_content(settings.content_dir)
    if sequence not in content.sequences:
        errors.print(f"unknown sequence {sequence!r} (known: {', '.join(sorted(content.sequences))})")
        raise typer.Exit(1)
    try:
        script = load_script(events)
    except (ContentError, ContentErrors) as problem:
        for line in str(problem).splitlines():
            errors.print(line, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    quiet_temporal_core()
    report = asyncio.run(
        run_simulation(
            content, sequence, script, leads, lambda line: errors.print(line, highlight=False), processes
        )
    )
    if output is Output.json:
        print_json(_simulation_json(report, timelines))
        return
    for timeline in report.leads[:timelines]:
        table = Table("when", "what")
        for entry in timeline.entries:
            table.add_row(_offset(entry.at - report.started_at), entry.what)
        # On its own line: a table's title is cut to the table's width.
        console.print(f"[italic]{timeline.email}: {timeline.outcome}", highlight=False)
        console.print(table)
    totals = Table(
        "total", "count", title=f"{sequence}: {len(report.leads)} lead(s), {report.horizon.days} days"
    )
    for name in ("leads", "enrolled", "enrollments"):
        totals.add_row(name, str(report.totals[name]))
    for group in ("outcomes", "messages", "decisions"):
        for key, count in report.totals[group].items():
            totals.add_row(f"{group[:-1]}: {key}", str(count))
    console.print(totals)
    console.print(f"simulated in {report.wall_seconds:.1f}s of real time")


def _simulation_json(report: Any, timelines: int) -> dict[str, Any]:
    return {
        "sequence": report.sequence_id,
        "started_at": report.started_at.isoformat(),
        "horizon_days": report.horizon.days,
        "wall_seconds": round(report.wall_seconds, 3),
        "totals": report.totals,
        "leads": [
            {
                "email": timeline.email,
                "outcome": timeline.outcome,
                "timeline": [
                    {
                        "at": entry.at.isoformat(),
                        "offset_seconds": int((entry.at - report.started_at).total_seconds()),
                        "what": entry.what,
                    }
                    for entry in timeline.entries
                ],
            }
            for timeline in report.leads[:timelines]
        ],
    }


def _offset(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    return f"day {days} {rest // 3600:02d}:{rest % 3600 // 60:02d}"
