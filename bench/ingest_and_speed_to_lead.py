"""Benchmark: event ingest rate, outbox routing rate and speed-to-lead on the embedded stack.

Runs what `leadflow dev` runs (a Temporal dev server subprocess, the worker and outbox router in-process,
the API served by uvicorn, a SQLite store), all in a temporary directory on free 127.0.0.1 ports, plus an
in-process SMTP server that timestamps every message it accepts. Figures go to stdout as JSON, progress to
stderr.

    .venv/bin/python bench/ingest_and_speed_to_lead.py > result.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from temporalio.client import Client

from leadflow.api import create_app
from leadflow.dev import connect_when_ready, temporal_cli
from leadflow.router import OutboxRouter, outbox_status
from leadflow.runtime import Runtime
from leadflow.settings import PROJECT_ROOT, Settings
from leadflow.store.models import Lead
from worker import running_worker

API_KEY = "bench-key"
log = logging.getLogger("bench")


@dataclass(frozen=True)
class Options:
    events: int
    leads: int
    batch_size: int
    concurrency: int
    speed_leads: int
    gap_seconds: float
    background_eps: int


def parse_options() -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000, help="events posted in the ingest phase")
    parser.add_argument("--leads", type=int, default=5_000, help="distinct lead emails they belong to")
    parser.add_argument("--batch-size", type=int, default=500, help="events per POST /v1/events")
    parser.add_argument("--concurrency", type=int, default=4, help="POSTs in flight at once")
    parser.add_argument("--speed-leads", type=int, default=40, help="leads timed per speed-to-lead run")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between two timed leads")
    parser.add_argument("--background-eps", type=int, default=100, help="events/s during the loaded run")
    args = parser.parse_args()
    if args.batch_size % (args.events // args.leads):
        parser.error("--batch-size must be a multiple of events per lead (--events / --leads)")
    return Options(
        args.events,
        args.leads,
        args.batch_size,
        args.concurrency,
        args.speed_leads,
        args.gap,
        args.background_eps,
    )


# --- peers: free ports, SMTP recorder, Temporal dev server, API ----------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MailRecorder:
    """aiosmtpd handler: stamps each accepted message with perf_counter() and wakes whoever awaits it.

    It runs on aiosmtpd's own thread and loop, so it hands results to the benchmark loop thread-safely.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.received: list[tuple[float, str, str]] = []  # (perf_counter, To, Subject)
        self._waiting: dict[str, asyncio.Future[float]] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        accepted_at = time.perf_counter()  # first thing: the message is fully received at this point
        message = message_from_bytes(envelope.content, policy=policy.default)  # type: ignore[arg-type]
        to, subject = str(message["To"]), str(message["Subject"])
        self.received.append((accepted_at, to, subject))
        if subject.startswith("Hot lead:"):
            self.loop.call_soon_threadsafe(self._resolve, subject, accepted_at)
        return "250 OK"

    def expect(self, lead_email: str) -> asyncio.Future[float]:
        """A future resolved with the arrival time of the hand-off notification about `lead_email`."""
        future = self.loop.create_future()
        self._waiting[f"<{lead_email}>"] = future
        return future

    def _resolve(self, subject: str, accepted_at: float) -> None:
        for marker, future in list(self._waiting.items()):
            if marker in subject:
                del self._waiting[marker]
                if not future.done():
                    future.set_result(accepted_at)


@contextlib.contextmanager
def smtp_server(recorder: MailRecorder) -> Iterator[int]:
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@contextlib.contextmanager
def temporal_server(settings: Settings) -> Iterator[None]:
    """Like leadflow.dev.temporal_dev_server, but headless: its Web UI port is fixed at 8233, which would
    collide with a `leadflow dev` running on the same machine."""
    host, _, port = settings.temporal_address.partition(":")
    log_path = settings.data_dir / "temporal.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                temporal_cli(),
                "server",
                "start-dev",
                "--headless",
                "--log-level",
                "warn",
                "--db-filename",
                str(settings.data_dir / "temporal.db"),
                "--ip",
                host,
                "--port",
                port,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it after the worker
        )
        try:
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the benchmark owns Ctrl-C


@contextlib.asynccontextmanager
async def serving_api(runtime: Runtime, on_events_accepted: Callable[[], None]) -> AsyncIterator[str]:
    """The real API on the real socket, in this process and loop as `leadflow dev` runs it."""
    settings = runtime.settings
    config = uvicorn.Config(
        create_app(runtime, on_events_accepted=on_events_accepted),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises why it could not start
        await asyncio.sleep(0.02)
    try:
        yield f"http://{settings.api_host}:{settings.api_port}"
    finally:
        server.should_exit = True
        await serving


@dataclass
class RouterSlot:
    """The API exists before the router (ingest is measured without it): wake whichever router runs now."""

    router: OutboxRouter | None = None

    def wake(self) -> None:
        if self.router:
            self.router.wake()


# --- phase 1: ingest -----------------------------------------------------------------------------------


def visitor_email(index: int) -> str:
    return f"visitor{index}@company{index % 700}.test"


def ingest_bodies(options: Options) -> list[bytes]:
    """Pre-encoded request bodies, so that the client's JSON encoding is not timed (it shares the CPU).

    Each batch holds whole browsing sessions of a few leads (events per lead, shuffled together), the way
    a tracker flushes recent activity. The router coalesces everything waiting for one lead into one
    signal, so this shape means about one workflow signal per lead; with events of every lead spread over
    all batches it would be one signal per event.
    """
    rng = random.Random(7)
    per_lead = options.events // options.leads
    paths = ["/blog/nurture-101", "/blog/scoring", "/docs/api", "/features", "/customers", "/integrations"]
    events = []
    for lead in range(options.leads):
        for n in range(per_lead):
            kind = "email_opened" if n % 10 == 9 else "page_viewed"
            props = {"campaign": "newsletter"} if kind == "email_opened" else {"url": rng.choice(paths)}
            events.append(
                {"id": f"ingest-{lead}-{n}", "type": kind, "email": visitor_email(lead), "properties": props}
            )
    bodies = []
    for start in range(0, len(events), options.batch_size):
        batch = events[start : start + options.batch_size]
        rng.shuffle(batch)
        bodies.append(json.dumps({"events": batch}).encode())
    return bodies


async def post_events(client: httpx.AsyncClient, body: bytes) -> int:
    response = await client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/events answered {response.status_code}: {response.text[:300]}")
    return int(response.json()["accepted"])


async def measure_ingest(client: httpx.AsyncClient, runtime: Runtime, options: Options) -> dict[str, Any]:
    bodies = ingest_bodies(options)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def sender() -> int:
        accepted = 0
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            accepted += await post_events(client, body)
            latencies.append(time.perf_counter() - started)
        return accepted

    log.info(
        "ingest: %d events in %d batches of %d, %d in flight",
        options.events,
        len(bodies),
        options.batch_size,
        options.concurrency,
    )
    started = time.perf_counter()
    accepted = sum(await asyncio.gather(*(sender() for _ in range(options.concurrency))))
    wall = time.perf_counter() - started
    depth = (await asyncio.to_thread(outbox_status, runtime.db)).depth
    if accepted != options.events or depth != options.events:
        raise RuntimeError(f"accepted {accepted} and outbox holds {depth}, expected {options.events}")
    return {
        "events": accepted,
        "leads": options.leads,
        "batch_size": options.batch_size,
        "concurrency": options.concurrency,
        "wall_seconds": round(wall, 3),
        "ingest_events_per_second": round(accepted / wall),
        "batch_latency_ms": summarize(latencies),
        "router_running": False,
    }


# --- phase 2: routing ---------------------------------------------------------------------------------


def signals_needed(runtime: Runtime) -> int:
    """How many signal-with-starts the router will send for the current outbox: it reads 1000 rows at a
    time (by id) and sends one signal per lead present in each read."""
    path = runtime.settings.resolved_database_url.split("///", 1)[-1]
    with contextlib.closing(sqlite3.connect(path)) as connection:
        lead_ids = [row[0] for row in connection.execute("SELECT lead_id FROM outbox ORDER BY id")]
    return sum(len(set(lead_ids[start : start + 1000])) for start in range(0, len(lead_ids), 1000))


def leads_assessed(runtime: Runtime) -> int:
    """Leads whose workflow has run assess_lead at least once (it stamps last_activity_at)."""
    with runtime.db.read() as session:
        return int(session.scalar(select(func.count(Lead.id)).where(Lead.last_activity_at.is_not(None))) or 0)


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Polls `check` (in a thread: it reads the store) until true; returns the seconds it took."""
    started = time.perf_counter()
    while not await asyncio.to_thread(check):
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def measure_routing(runtime: Runtime, started: float, options: Options, signals: int) -> dict[str, Any]:
    """`started` is when the router was started; the drain is over when the outbox is empty."""
    await wait_until(lambda: outbox_status(runtime.db).depth == 0, 120, "outbox drain")
    drained = time.perf_counter() - started
    log.info("routing: outbox drained in %.1f s; waiting for every lead's first assessment", drained)
    await wait_until(lambda: leads_assessed(runtime) >= options.leads, 150, "lead assessments")
    assessed = time.perf_counter() - started
    return {
        "events": options.events,
        "workflow_signals": signals,
        "drain_seconds": round(drained, 3),
        "routing_events_per_second": round(options.events / drained),
        "signals_per_second": round(signals / drained),
        "router_poll_seconds": runtime.settings.router_poll_seconds,
        "all_leads_assessed_seconds": round(assessed, 3),
        "assessed_leads_per_second": round(options.leads / assessed),
    }


# --- phase 3: speed to lead -------------------------------------------------------------------------------


async def time_one_lead(client: httpx.AsyncClient, mail: MailRecorder, email: str, index: int) -> float:
    """Milliseconds from just before the POST carrying the threshold-crossing events until the SMTP server
    accepted the salesperson's notification."""
    # No fit points (job title, size, industry): the events alone take it to 50 + 15 + 15 = 80, the SQL mark.
    lead = {
        "email": email,
        "properties": {
            "first_name": "Pat",
            "last_name": f"Speed{index}",
            "company": f"Prospect {index}",
            "job_title": "Marketing Manager",
        },
    }
    response = await client.post("/v1/leads", json=lead)
    response.raise_for_status()
    events = {
        "events": [
            {
                "id": f"{email}-demo",
                "type": "demo_requested",
                "email": email,
                "properties": {"form": "contact-sales"},
            },
            {
                "id": f"{email}-pricing-1",
                "type": "page_viewed",
                "email": email,
                "properties": {"url": "/pricing"},
            },
            {
                "id": f"{email}-pricing-2",
                "type": "page_viewed",
                "email": email,
                "properties": {"url": "/pricing#faq"},
            },
        ]
    }
    notified = mail.expect(email)
    started = time.perf_counter()
    await post_events(client, json.dumps(events).encode())
    arrived = await asyncio.wait_for(notified, timeout=60)
    return (arrived - started) * 1000


async def measure_speed_to_lead(
    client: httpx.AsyncClient, mail: MailRecorder, run: str, options: Options, warmup: int = 2
) -> dict[str, Any]:
    """Leads one after the other with a gap, so each sees an otherwise quiet pipeline (latency, not
    throughput). The first `warmup` are not counted (first SMTP connection, first template render…)."""
    samples = []
    for index in range(warmup + options.speed_leads):
        elapsed = await time_one_lead(client, mail, f"hot-{run}-{index}@prospect{index}.test", index)
        if index >= warmup:
            samples.append(elapsed / 1000)
        await asyncio.sleep(options.gap_seconds)
    return summarize(samples)


@dataclass
class BackgroundLoad:
    """page_viewed events for the ingest leads at a steady rate, in batches of 10 every 100 ms.

    Posts are not awaited in the pacing loop, so a slow answer does not lower the offered rate.
    """

    client: httpx.AsyncClient
    runtime: Runtime
    leads: int
    events_per_second: int
    accepted: int = 0
    max_outbox_depth: int = 0
    max_routing_lag_seconds: float = 0.0
    _in_flight: set[asyncio.Task[int]] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        rng, tick, per_tick = random.Random(11), 0.1, max(1, round(self.events_per_second / 10))
        next_at, sequence = time.perf_counter(), 0
        while not stop.is_set():
            batch = [
                {
                    "id": f"background-{sequence + n}",
                    "type": "page_viewed",
                    "email": visitor_email(rng.randrange(self.leads)),
                    "properties": {"url": "/blog/scoring"},
                }
                for n in range(per_tick)
            ]
            sequence += per_tick
            task = asyncio.create_task(post_events(self.client, json.dumps({"events": batch}).encode()))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
            await self._sample_outbox(sequence // per_tick)
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*self._in_flight)

    def _done(self, task: asyncio.Task[int]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is None:
            self.accepted += task.result()

    async def _sample_outbox(self, tick: int) -> None:
        if tick % 5 == 0:  # twice a second is enough to see whether the router keeps up
            status = await asyncio.to_thread(outbox_status, self.runtime.db)
            self.max_outbox_depth = max(self.max_outbox_depth, status.depth)
            self.max_routing_lag_seconds = max(self.max_routing_lag_seconds, status.lag_seconds)


async def measure_under_load(
    client: httpx.AsyncClient, mail: MailRecorder, runtime: Runtime, options: Options
) -> dict[str, Any]:
    load = BackgroundLoad(client, runtime, options.leads, options.background_eps)
    stop = asyncio.Event()
    started = time.perf_counter()
    loading = asyncio.create_task(load.run(stop))
    await asyncio.sleep(3)  # reach a steady state before timing
    try:
        result = await measure_speed_to_lead(client, mail, "loaded", options, warmup=0)
    finally:
        stop.set()
        await loading
    seconds = time.perf_counter() - started
    return {
        **result,
        "background_events_per_second_offered": options.background_eps,
        "background_events_per_second_accepted": round(load.accepted / seconds, 1),
        "max_outbox_depth": load.max_outbox_depth,
        "max_routing_lag_ms": round(load.max_routing_lag_seconds * 1000, 1),
    }


# --- figures ------------------------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summarize(seconds: list[float]) -> dict[str, Any]:
    ordered = sorted(seconds)
    figures: dict[str, Any] = {f"p{p}_ms": round(percentile(ordered, p) * 1000, 1) for p in (50, 90, 99)}
    return {**figures, "max_ms": round(ordered[-1] * 1000, 1), "n": len(ordered)}


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    temporal = subprocess.run([temporal_cli(), "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "temporal": temporal,
        "store": "sqlite",
    }


# --- the run ------------------------------------------------------------------------------------------


def bench_settings(data_dir: Path, smtp_port: int) -> Settings:
    """Everything the run touches, explicitly: LEADFLOW_* variables of the shell must not redirect it."""
    return Settings(
        data_dir=data_dir,
        database_url="",  # SQLite under data_dir
        temporal_address=f"127.0.0.1:{free_port()}",
        temporal_namespace="default",
        task_queue="bench",
        workflow_id_prefix="",
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        content_dir=PROJECT_ROOT,
        api_keys=[API_KEY],
        api_host="127.0.0.1",
        api_port=free_port(),
        public_url="",
    )


@contextlib.asynccontextmanager
async def embedded_stack(mail: Any) -> AsyncIterator[tuple[Runtime, Client]]:
    """A throwaway SQLite store, the SMTP server with handler `mail`, a Temporal dev server and a client."""
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as directory, smtp_server(mail) as smtp_port:
        settings = bench_settings(Path(directory), smtp_port)
        runtime = Runtime.from_settings(settings)
        runtime.db.upgrade()
        try:
            with temporal_server(settings):
                yield runtime, await connect_when_ready(settings)
        finally:
            runtime.db.dispose()


async def run(options: Options) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    mail, slot = MailRecorder(loop), RouterSlot()
    async with (
        embedded_stack(mail) as (runtime, client),
        serving_api(runtime, lambda: loop.call_soon_threadsafe(slot.wake)) as base_url,
        httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=60,
            limits=httpx.Limits(max_connections=32),
        ) as http,
    ):
        ingest = await measure_ingest(http, runtime, options)
        log.info("ingest: %s events/s", ingest["ingest_events_per_second"])
        signals = await asyncio.to_thread(signals_needed, runtime)
        started = time.perf_counter()
        async with running_worker(client, runtime) as router:
            slot.router = router
            routing = await measure_routing(runtime, started, options, signals)
            log.info("routing: %s", routing)
            await asyncio.sleep(1)  # let the last workflow tasks of the backlog finish
            idle = await measure_speed_to_lead(http, mail, "idle", options)
            log.info("speed to lead, idle: %s", idle)
            loaded = await measure_under_load(http, mail, runtime, options)
            log.info("speed to lead, under load: %s", loaded)
            slot.router = None
    return {
        "benchmark": "ingest_and_speed_to_lead",
        "machine": machine(),
        "ingest": ingest,
        "routing": routing,
        "speed_to_lead_idle": idle,
        f"speed_to_lead_under_{options.background_eps}_eps": loaded,
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    options = parse_options()
    result = asyncio.run(run(options))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
