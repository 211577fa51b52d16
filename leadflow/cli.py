"""The `leadflow` command."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leadflow.content.loader import load_content
from leadflow.content.yamlfile import ContentError, ContentErrors
from leadflow.settings import get_settings

app = typer.Typer(
    help="Leadflow: events in, scored leads, durable nurture sequences, hand-off to sales.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
leads_app = typer.Typer(help="Look at leads.", no_args_is_help=True)
keys_app = typer.Typer(help="Generate keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
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
    from temporalio.client import Client

    from leadflow.api import create_app
    from leadflow.runtime import Runtime
    from worker import connect

    settings = get_settings()
    _content_or_exit(settings.content_dir)
    runtime = Runtime.from_settings(settings)
    runtime.db.upgrade()
    clients: list[Client] = []

    async def temporal_client() -> Client:  # connected on first use: the API serves while Temporal is down
        if not clients:
            clients.append(await connect(settings))
        return clients[0]

    uvicorn.run(create_app(runtime, temporal=temporal_client), host=settings.api_host, port=settings.api_port)


@keys_app.command("vapid")
def keys_vapid() -> None:
    """Generate a VAPID key pair for web push: the private key goes into LEADFLOW_VAPID_PRIVATE_KEY, the
    public one is the applicationServerKey your web page subscribes with (also at GET /v1/push/key)."""
    from leadflow.channels.webpush import generate_vapid_keys

    keys = generate_vapid_keys()
    console.print(f"LEADFLOW_VAPID_PRIVATE_KEY={keys.private_key}", highlight=False, soft_wrap=True)
    console.print(f"# applicationServerKey (public): {keys.public_key}", highlight=False, soft_wrap=True)


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
