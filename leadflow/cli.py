"""The `leadflow` command."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from leadflow.content.loader import Content, load_content
from leadflow.content.yamlfile import ContentError, ContentErrors
from leadflow.settings import get_settings

app = typer.Typer(
    help="Leadflow: events in, scored leads, durable nurture sequences, hand-off to sales.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
leads_app = typer.Typer(help="Look at leads.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(leads_app, name="leads")
console = Console()
errors = Console(stderr=True)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("temporalio").setLevel(logging.WARNING)


def _content_or_exit(directory: Path) -> None:
    try:
        load_content(directory)
    except (ContentError, ContentErrors) as problem:
        for line in str(problem).splitlines():
            errors.print(line, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def dev(demo: Annotated[bool, typer.Option(help="Load two demo leads on a first start.")] = True) -> None:
    """Run the embedded stack: Temporal dev server, worker, API and mail catcher. Ctrl-C stops it."""
    from leadflow.dev import run_dev

    settings = get_settings()
    _content_or_exit(settings.content_dir)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run_dev(settings, demo=demo))


@app.command()
def worker() -> None:
    """Run a worker: the Temporal worker and the outbox router (needs a running Temporal server)."""
    import worker as worker_process

    _content_or_exit(get_settings().content_dir)
    _logging()
    try:
        asyncio.run(worker_process.main())
    except KeyboardInterrupt:
        pass


@app.command()
def api() -> None:
    """Serve the HTTP API alone (events are routed by the workers)."""
    import uvicorn

    from leadflow.api import create_app
    from leadflow.runtime import Runtime

    settings = get_settings()
    _content_or_exit(settings.content_dir)
    runtime = Runtime.from_settings(settings)
    runtime.db.upgrade()
    uvicorn.run(create_app(runtime), host=settings.api_host, port=settings.api_port)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    from leadflow.store import Database

    settings = get_settings()
    Database(settings.resolved_database_url).upgrade()
    console.print(f"schema is up to date ({settings.resolved_database_url.split('@')[-1]})")


@app.command()
def check(
    directory: Annotated[
        Path | None, typer.Argument(help="Content directory (default: LEADFLOW_CONTENT_DIR).")
    ] = None,
) -> None:
    """Check every content file (scoring model, segments, sequences, templates, sales team)."""
    directory = directory or get_settings().content_dir
    _content_or_exit(directory)
    content = load_content(directory)
    console.print(
        f"[green]ok[/] {directory}: scoring model {content.scoring.version}, {len(content.segments)} segment(s), "
        f"{len(content.sequences)} sequence(s), {len(content.salespeople)} salespeople"
    )


@app.command()
def preview(
    template: Annotated[str, typer.Argument(help="CHANNEL/NAME (email/webinar_invite), or NAME for email.")],
    lead: Annotated[
        str | None, typer.Option("--lead", help="Render for this lead (id, email, anonymous id).")
    ] = None,
    sample: Annotated[
        Path | None,
        typer.Option("--sample", help="Render for the lead in this YAML/JSON file (its properties)."),
    ] = None,
) -> None:
    """Render a message template the way a lead would receive it: subject, text and HTML (or SMS / push)."""
    from leadflow.content.templates import TemplateRenderError

    channel, _, name = template.rpartition("/")
    channel = channel or "email"
    settings = get_settings()
    content = _content(settings.content_dir)
    problem = content.templates.problem_with(channel, name) if channel in ("email", "sms", "push") else None
    if channel not in ("email", "sms", "push") or problem:
        errors.print(
            problem or f"unknown channel {channel!r}: email, sms or push", highlight=False, markup=False
        )
        raise typer.Exit(1)
    if (lead is None) == (sample is None):
        errors.print("give one of --lead EMAIL or --sample FILE")
        raise typer.Exit(2)
    context = _lead_context(lead) if lead else _sample_context(sample)  # type: ignore[arg-type]
    try:
        parts = content.templates.render(channel, name, context)
    except TemplateRenderError as error:
        errors.print(f"cannot render: {error}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    for part, text in parts.items():
        console.rule(f"[bold]{part}[/]", align="left")
        console.print(text, highlight=False, markup=False)


def _lead_context(reference: str) -> dict[str, Any]:
    from leadflow.leads import find_lead, template_context
    from leadflow.store import Database

    db = Database(get_settings().resolved_database_url)
    with db.read() as session:
        found = find_lead(session, reference)
        if found is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        return template_context(session, found)


def _sample_context(path: Path) -> dict[str, Any]:
    """A sample lead file: its properties, plus email / stage / score when given (defaults otherwise)."""
    from leadflow.content.yamlfile import YamlFile

    try:
        data = YamlFile(path).data
    except (ContentError, OSError) as problem:
        errors.print(str(problem), highlight=False, markup=False)
        raise typer.Exit(1) from None
    if not isinstance(data, dict):
        errors.print(f"{path}: a sample is a mapping of lead properties (first_name: Ada, …)")
        raise typer.Exit(1)
    lead = {"id": 0, "email": "sample@example.com", "stage": "lead", "score": 0, "company": None, **data}
    return {"lead": lead}


@app.command()
def simulate(
    sequence: Annotated[str, typer.Argument(help="The sequence id (templates/sequences/ID.yaml).")],
    events: Annotated[Path, typer.Option("--events", help="The script: what leads do and when (YAML/JSON).")],
    leads: Annotated[int, typer.Option("--leads", min=1, help="How many leads play the script.")] = 1,
    timelines: Annotated[int, typer.Option(help="Print the timelines of this many leads.")] = 10,
) -> None:
    """Run a sequence on the real workflows, on a time-skipping Temporal server: every lead's timeline and
    the totals, in seconds, before the campaign touches a real lead."""
    from leadflow.simulation import load_script
    from leadflow.simulation import simulate as run_simulation

    settings = get_settings()
    content = _content(settings.content_dir)
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
    report = asyncio.run(
        run_simulation(content, sequence, script, leads, lambda line: errors.print(line, highlight=False))
    )
    for timeline in report.leads[:timelines]:
        table = Table("when", "what", title=f"{timeline.email}: {timeline.outcome}", title_justify="left")
        for entry in timeline.entries:
            table.add_row(_offset(entry.at - report.started_at), entry.what)
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


def _offset(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    return f"day {days} {rest // 3600:02d}:{rest % 3600 // 60:02d}"


def _content(directory: Path) -> Content:
    _content_or_exit(directory)
    return load_content(directory)


@app.command()
def mail(number: Annotated[int | None, typer.Argument(help="Show this email in full.")] = None) -> None:
    """List the emails the development mail catcher received, or show one."""
    from leadflow.mailcatcher import caught_mail

    directory = get_settings().data_dir / "mail"
    caught = caught_mail(directory)
    if number is None:
        table = Table("#", "Date", "To", "Subject", title=f"{len(caught)} email(s) in {directory}")
        for item in caught:
            summary = item.summary
            table.add_row(str(item.number), summary["Date"], summary["To"], summary["Subject"])
        console.print(table)
        return
    if not 1 <= number <= len(caught):
        errors.print(f"no email number {number}: there are {len(caught)}")
        raise typer.Exit(1)
    item = caught[number - 1]
    for key, value in item.summary.items():
        console.print(f"[bold]{key}:[/] {value}", highlight=False)
    console.print()
    console.print(item.body("plain"), highlight=False, markup=False)


@leads_app.command("show")
def leads_show(reference: Annotated[str, typer.Argument(help="Lead id, email or anonymous id.")]) -> None:
    """A lead with its score breakdown, stage history, sequences and timeline."""
    from leadflow.leads import find_lead, lead_document
    from leadflow.store import Database

    db = Database(get_settings().resolved_database_url)
    with db.read() as session:
        lead = find_lead(session, reference)
        if lead is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        document = lead_document(session, lead)
    console.print(
        f"[bold]{document['email'] or reference}[/]  stage {document['stage']}  "
        f"score {document['score']['total']} (fit {document['score']['fit']}, "
        f"behavior {document['score']['behavior']})"
    )
    table = Table("Rule", "Points", "Event", "When", title="Score breakdown")
    for item in document["score"]["breakdown"]:
        table.add_row(
            item["rule"], f"{item['points']:+d}", item["event_type"] or "(fit)", item["occurred_at"] or ""
        )
    console.print(table)
    console.print_json(json.dumps({k: document[k] for k in ("stage_history", "sequences")}, default=str))
