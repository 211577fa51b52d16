"""`leadflow dev`, `worker`, `api` and `mail`: running Leadflow, and the development mail catcher."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer
from rich.table import Table

from leadflow.cli.common import configure_logs, console, content_or_exit, errors
from leadflow.platform.settings import get_settings


def dev(demo: Annotated[bool, typer.Option(help="Load two demo leads on a first start.")] = True) -> None:
    """Run the embedded stack: Temporal dev server, worker, API and mail catcher. Ctrl-C stops it."""
    from leadflow.cli.dev import run_dev

    settings = get_settings()
    content_or_exit(settings.content_dir)
    logging.basicConfig(level=logging.WARNING)
    raise typer.Exit(run_dev(settings, demo=demo))


def worker() -> None:
    """Run a worker: the Temporal worker and the outbox router (needs a running Temporal server)."""
    import worker as worker_process

    content_or_exit(get_settings().content_dir)
    configure_logs()
    try:
        asyncio.run(worker_process.main())
    except KeyboardInterrupt:
        pass


def api() -> None:
    """Serve the HTTP API alone (events are routed by the workers)."""
    import uvicorn
    from temporalio.client import Client

    from leadflow.http.app import create_app
    from leadflow.platform.runtime import Runtime
    from worker import connect

    settings = get_settings()
    content_or_exit(settings.content_dir)
    runtime = Runtime.from_settings(settings)
    runtime.db.upgrade()
    clients: list[Client] = []

    async def temporal_client() -> Client:  # connected on first use: the API serves while Temporal is down
        if not clients:
            clients.append(await connect(settings, runtime.db, patience=0))
        return clients[0]

    configure_logs()
    # log_config=None: uvicorn's records go through the handlers configure_logs set up, which mask personal data.
    app = create_app(runtime, temporal=temporal_client)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_config=None)


def mail(number: Annotated[int | None, typer.Argument(help="Show this email in full.")] = None) -> None:
    """List the emails the development mail catcher received, or show one."""
    from leadflow.cli.dev.mailcatcher import caught_mail

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
