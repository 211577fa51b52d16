"""The run: start everything in order, print the banner, stop everything on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
import uvicorn
from rich.console import Console
from temporalio.client import Client

from leadflow.cli.dev.ports import DevPorts, _host_port, _mail_catcher, claim_ports
from leadflow.cli.dev.processes import (
    StartFailed,
    _last_line,
    connect_when_ready,
    kill_running_processes,
    temporal_dev_server,
    temporal_host_port,
    worker_processes,
)
from leadflow.cli.dev.seeding import DEV_KEY, seed_demo, seed_dev_key
from leadflow.http.app import create_app
from leadflow.intake.tracking.sample_site import SAMPLE_SITE_KEY, sample_site
from leadflow.messaging.providers.webpush import generate_vapid_keys
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import Settings, kept_in_data_dir

console = Console()


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `leadflow dev` owns Ctrl-C and shuts uvicorn down itself


class _Signals:
    """Ctrl-C and SIGTERM: the first stops everything `leadflow dev` started, in whatever state it is (the
    event loop does it in order); a second one kills what is left at once. A Python-level handler, so it
    also works while the event loop is blocked waiting for a child process to stop."""

    def __init__(self) -> None:
        self.received = 0
        self.on_first: Callable[[], object] | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.received == 1 and self.on_first is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing left to stop in order
                self.on_first()
                return
        kill_running_processes()
        os._exit(128 + signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {signum: signal.signal(signum, self) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def run_dev(settings: Settings, demo: bool = True) -> int:
    """Runs the stack until Ctrl-C or SIGTERM; the exit code: 0 after a stop asked for, 1 when it could not
    start (the reason printed on stderr, one line per problem)."""
    signals = _Signals()
    with signals.installed():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings = with_dev_vapid_key(settings)
        try:
            ports = claim_ports(settings)
        except StartFailed as failure:
            return _failed(failure)
        try:
            return asyncio.run(_run(settings, ports, demo, signals))
        except StartFailed as failure:
            return _failed(failure)
        finally:
            ports.api.close()


def with_dev_vapid_key(settings: Settings) -> Settings:
    """Without LEADFLOW_VAPID_PRIVATE_KEY, a VAPID key pair made on the first start and kept in the data
    folder (`vapid.key`), so the sample site's push opt-in works; kept, because every browser subscribed
    with its public key must be sent with its private key."""
    if settings.vapid_private_key:
        return settings
    key = kept_in_data_dir(settings.data_dir / "vapid.key", lambda: generate_vapid_keys().private_key)
    return settings.model_copy(update={"vapid_private_key": key})


def _failed(failure: StartFailed) -> int:
    for line in str(failure).splitlines():
        print(f"leadflow dev: {line}", file=sys.stderr)
    return 1


async def _run(settings: Settings, ports: DevPorts, demo: bool, signals: _Signals) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    serving = asyncio.Event()
    stack = asyncio.create_task(_stack(settings, ports, demo, stop, serving))

    def stop_everything() -> None:
        console.print("\nStopping: API, worker, Temporal…")
        stop.set()
        if not serving.is_set():
            stack.cancel()  # still starting: unwind what has started so far

    signals.on_first = lambda: loop.call_soon_threadsafe(stop_everything)
    try:
        await stack
    except asyncio.CancelledError:
        pass  # stopped while starting
    finally:
        signals.on_first = None
    console.print("Stopped. Run it again to resume where it stopped.")
    return 0


async def _stack(
    settings: Settings, ports: DevPorts, demo: bool, stop: asyncio.Event, serving: asyncio.Event
) -> None:
    runtime = Runtime.from_settings(settings)
    try:
        runtime.db.upgrade()
        seed_dev_key(runtime)
        with (
            _mail_catcher(settings, ports.mail),
            temporal_dev_server(settings, ports.temporal_ui) as temporal,
        ):
            client = await connect_when_ready(settings, runtime.db, server=temporal)
            with worker_processes(settings, settings.worker_processes - 1) as workers:
                children = [_Child("the Temporal dev server", temporal, settings.data_dir / "temporal.log")]
                children += [
                    _Child(f"worker process {number}", worker, settings.data_dir / "workers.log")
                    for number, worker in enumerate(workers, start=2)  # this process runs worker 1
                ]
                await _serve(settings, runtime, client, ports, demo, stop, serving, children)
    finally:
        runtime.db.dispose()


async def _serve(
    settings: Settings,
    runtime: Runtime,
    client: Client,
    ports: DevPorts,
    demo: bool,
    stop: asyncio.Event,
    serving: asyncio.Event,
    children: list[_Child],
) -> None:
    """The API, and this process's worker and router, until `stop` (or until a part of the stack dies)."""
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
            uvicorn.Config(
                app,
                host=settings.api_host,
                port=settings.api_port,
                log_level="warning",
                timeout_graceful_shutdown=3,  # a browser's keep-alive connection must not hold up a stop
            )
        )
        api = asyncio.create_task(server.serve(sockets=[ports.api]))
        try:
            await _until_api_answers(ports.api, api)
            seeded = demo and seed_demo(runtime)
            _check_alive(children)
            serving.set()
            _banner(settings, ports, seeded, sample)
            watch = asyncio.create_task(_first_to_exit(children))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({api, watch, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (watch, stopping):
                task.cancel()
            if not stop.is_set():
                _check_alive(children)
                raise StartFailed("the API stopped on its own; see the lines above")
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await api


def _api_health_url(api: socket.socket) -> str:
    host, port = api.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{_host_port(host, port)}/v1/health"


async def _until_api_answers(api: socket.socket, serving: asyncio.Task[None], timeout: float = 30.0) -> None:
    """Until the API answers GET /v1/health over HTTP (any answer: the development key may be revoked)."""
    url = _api_health_url(api)
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            if serving.done():
                raise StartFailed("the API stopped as it started; see the lines above")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code < 500:
                    return
            if time.monotonic() > deadline:
                raise StartFailed(f"the API did not answer {url} within {timeout:.0f} s")
            await asyncio.sleep(0.1)


@dataclass(frozen=True)
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _check_alive(children: list[_Child]) -> None:
    for child in children:
        if child.process.poll() is not None:
            raise StartFailed(
                f"{child.name} stopped (exit {child.process.returncode}): {_last_line(child.log)}"
            )


async def _first_to_exit(children: list[_Child]) -> None:
    while all(child.process.poll() is None for child in children):
        await asyncio.sleep(0.5)


def _banner(settings: Settings, ports: DevPorts, seeded: bool, sample: bool) -> None:
    api = settings.resolved_public_url
    key = DEV_KEY
    site = (
        f"{api}/sample/   (the tracking snippet at work)"
        if sample
        else f"off (no {SAMPLE_SITE_KEY} in sites.yaml)"
    )
    temporal_ui = f"http://{_host_port(temporal_host_port(settings)[0], ports.temporal_ui)}"
    if ports.temporal_ui_taken:
        temporal_ui += f"   (port {ports.temporal_ui_taken} is taken by another program)"
    # soft_wrap: a terminal narrower than a line (or none, under a pipe) must not break the commands to copy
    console.print(
        f"""
[bold green]Leadflow is running[/] (data in {settings.data_dir})
  API            {api}   (docs: {api}/docs, key: {key})
  Sample site    {site}
  Temporal UI    {temporal_ui}
  {"Mail catcher" if ports.mail.catcher else "Email       "}   {ports.mail.banner}
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
       -d '{{"id": "my-1", "type": "ebook_downloaded", "email": "you@yourcompany.test"}}'{
            '''
  leadflow mail'''
            if ports.mail.catcher
            else ""
        }
Press Ctrl-C to stop.""",
        soft_wrap=True,
    )
