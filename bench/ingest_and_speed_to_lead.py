"""Benchmark: event ingest rate, outbox routing rate and speed-to-lead on the embedded stack.

Runs what `leadflow dev` runs (a Temporal dev server subprocess on a SQLite file, the worker and outbox
router in-process, the API served by uvicorn, a SQLite store), in temporary directories on free 127.0.0.1
ports, plus an in-process SMTP server that timestamps every message it accepts. Figures go to stdout as
JSON, progress to stderr.

    .venv/bin/python bench/ingest_and_speed_to_lead.py > result.json

Two fresh stacks, one after the other. The first times speed-to-lead on the quiet system, then under a
background load. The second takes the ingest burst with no router running (acceptance alone), then starts
the worker and router and times the drain of the outbox. Two stacks, because working through the burst's
thousands of lead workflows takes this stack minutes: a shared stack would leave no quiet system to time,
or would make the drain compete with what the loaded run left queued.
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
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any, TextIO

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from leadflow.cli.dev import connect_when_ready, temporal_cli, temporal_dev_server
from leadflow.contracts import EventRef, LeadWorkflowInput, NewEvents, signal_name
from leadflow.http.app import create_app
from leadflow.intake.router import CONCURRENCY as ROUTER_CONCURRENCY
from leadflow.intake.router import OutboxRouter, outbox_status
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT, Settings
from worker import running_worker
from workflows.lead import LeadWorkflow

API_KEY = "bench-key"
log = logging.getLogger("bench")


@dataclass(frozen=True)
class Options:
    events: int
    leads: int
    batch_size: int
    concurrency: int
    drain_limit: float
    speed_leads: int
    gap_seconds: float
    background_eps: int
    active_visitors: int
    loaded_interval: float
    loaded_wait_limit: float

    @property
    def events_per_lead(self) -> int:
        return self.events // self.leads


def parse_options() -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--events", type=int, default=50_000, help="events posted in the ingest burst")
    add("--leads", type=int, default=5_000, help="distinct lead emails of the burst")
    add("--batch-size", type=int, default=500, help="events per POST /v1/events in the burst")
    add("--concurrency", type=int, default=4, help="burst POSTs in flight at once")
    add("--drain-limit", type=float, default=60, help="seconds to time the drain; then report the rate")
    add("--speed-leads", type=int, default=40, help="leads timed per speed-to-lead run")
    add("--gap", type=float, default=0.2, help="seconds between two timed leads on the quiet system")
    add("--background-eps", type=int, default=100, help="page_viewed events/s during the loaded run")
    add("--active-visitors", type=int, default=100, help="leads the background events are spread over")
    add("--loaded-interval", type=float, default=0.5, help="seconds between timed leads under load")
    add("--loaded-wait-limit", type=float, default=30, help="seconds a timed lead under load is waited for")
    args = parser.parse_args()
    if args.events % args.leads or args.batch_size % (args.events // args.leads):
        parser.error("--events must be a multiple of --leads, and --batch-size of events per lead")
    return Options(
        events=args.events,
        leads=args.leads,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        drain_limit=args.drain_limit,
        speed_leads=args.speed_leads,
        gap_seconds=args.gap,
        background_eps=args.background_eps,
        active_visitors=args.active_visitors,
        loaded_interval=args.loaded_interval,
        loaded_wait_limit=args.loaded_wait_limit,
    )


# --- peers: SMTP recorder, store + Temporal, API ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MailRecorder:
    """aiosmtpd handler: stamps each accepted message with perf_counter() and wakes whoever awaits it.

    It runs on aiosmtpd's own thread and loop, so it hands results to the benchmark's loop thread-safely.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.received: list[tuple[float, str, str]] = []  # (perf_counter, To, Subject)
        self._waiting: dict[str, asyncio.Future[float]] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        accepted_at = time.perf_counter()  # first thing: the whole message has arrived at this point
        message = message_from_bytes(envelope.content, policy=policy.default)
        # A long Subject is folded right after "Subject:", and parsing keeps the fold's leading space.
        to, subject = str(message["To"]), str(message["Subject"]).strip()
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
def smtp_server(handler: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


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
    """A throwaway data folder with the SQLite store, an SMTP server with handler `mail`, and a Temporal dev
    server started exactly as `leadflow dev` starts it; yields the runtime and a Temporal client.
    (bench/sequences.py builds on it too.)"""
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as directory, smtp_server(mail) as smtp_port:
        settings = bench_settings(Path(directory), smtp_port)
        runtime = Runtime.from_settings(settings)
        runtime.db.upgrade()
        try:
            with temporal_dev_server(settings):
                yield runtime, await connect_when_ready(settings, runtime.db)
        finally:
            runtime.db.dispose()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # leave Ctrl-C to asyncio.run, which unwinds every context manager here


@contextlib.asynccontextmanager
async def serving_api(runtime: Runtime, on_events_accepted: Callable[[], None]) -> AsyncIterator[str]:
    """The real API on a real socket, in this process and event loop, as `leadflow dev` runs it."""
    settings = runtime.settings
    app = create_app(runtime, on_events_accepted=on_events_accepted)
    config = uvicorn.Config(
        app, host=settings.api_host, port=settings.api_port, log_level="warning", access_log=False
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


def pid_of(marker: str) -> int:
    """The process whose command line holds `marker` (Linux /proc)."""
    for process in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if marker.encode() in (process / "cmdline").read_bytes():
                return int(process.name)
    raise LookupError(f"no process with {marker!r} in its command line")


@dataclass
class RouterSlot:
    """The API outlives the router (the burst is ingested with none running): wake whichever runs now."""

    router: OutboxRouter | None = None

    def wake(self) -> None:
        if self.router:
            self.router.wake()


@dataclass
class Stack:
    runtime: Runtime
    temporal: Client
    temporal_pid: int
    http: httpx.AsyncClient
    mail: MailRecorder
    slot: RouterSlot

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[OutboxRouter]:
        """The real worker and outbox router (worker.running_worker), hooked to the API's wake-up."""
        async with running_worker(self.temporal, self.runtime) as router:
            self.slot.router = router
            try:
                yield router
            finally:
                self.slot.router = None


@contextlib.asynccontextmanager
async def bench_stack() -> AsyncIterator[Stack]:
    """embedded_stack, the API on a socket and an HTTP client for it. The worker is started separately."""
    loop = asyncio.get_running_loop()
    mail, slot = MailRecorder(loop), RouterSlot()

    def wake() -> None:  # called after each accepted POST /v1/events, as `leadflow dev` wires it
        loop.call_soon_threadsafe(slot.wake)

    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        embedded_stack(mail) as (runtime, temporal),
        serving_api(runtime, wake) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http,
    ):
        temporal_pid = pid_of(str(runtime.settings.data_dir / "temporal.db"))
        yield Stack(runtime, temporal, temporal_pid, http, mail, slot)


# --- probes -------------------------------------------------------------------------------------------


class CpuUsage:
    """Cores this process and the Temporal server used since creation: tells "CPU-bound" from "waiting".
    load_1m is the machine's: the CPUs may be shared with other work."""

    def __init__(self, stack: Stack) -> None:
        self.temporal_pid = stack.temporal_pid
        self.started = (time.perf_counter(), time.process_time(), self._temporal_seconds())

    def _temporal_seconds(self) -> float:
        fields = Path(f"/proc/{self.temporal_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def cores(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started[0]
        python = (time.process_time() - self.started[1]) / wall
        temporal = (self._temporal_seconds() - self.started[2]) / wall
        return {"python": round(python, 2), "temporal": round(temporal, 2), "load_1m": os.getloadavg()[0]}


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Polls `check` until true; returns the seconds it took."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


async def outbox_depth(runtime: Runtime) -> int:
    return (await asyncio.to_thread(outbox_status, runtime.db)).depth


async def temporal_backlog(stack: Stack) -> int:
    """Workflow and activity tasks queued in Temporal's task queue, not yet taken by the worker
    (approximate; tasks on the worker's sticky queue are not counted)."""
    total = 0
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        request = DescribeTaskQueueRequest(
            namespace=stack.runtime.settings.temporal_namespace,
            task_queue=TaskQueue(name=stack.runtime.settings.task_queue),
            task_queue_type=kind,
            report_stats=True,
        )
        response = await stack.temporal.workflow_service.describe_task_queue(request)
        total += response.stats.approximate_backlog_count
    return total


async def settle(stack: Stack, timeout: float) -> float:
    """Until the outbox is empty and Temporal has no queued task, plus a moment for those in flight."""

    async def quiet() -> bool:
        return await outbox_depth(stack.runtime) == 0 and await temporal_backlog(stack) == 0

    waited = await wait_until(quiet, timeout, "working off the queued events")
    await asyncio.sleep(1)
    return waited + 1


async def post_events(http: httpx.AsyncClient, body: bytes) -> int:
    response = await http.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/events answered {response.status_code}: {response.text[:300]}")
    return int(response.json()["accepted"])


# --- speed to lead -----------------------------------------------------------------------------------------


async def time_one_lead(stack: Stack, email: str, index: int, wait_limit: float) -> float:
    """Seconds from just before the POST carrying the threshold-crossing events until the SMTP server
    accepted the salesperson's notification about this lead; math.inf if not within `wait_limit`."""
    # No fit points (job title, size, industry): the events alone take it to 50 + 15 + 15 = 80, the SQL mark.
    properties = {"first_name": "Pat", "last_name": f"Speed{index}", "company": f"Prospect {index}",
                  "job_title": "Marketing Manager"}  # fmt: skip
    (await stack.http.post("/v1/leads", json={"email": email, "properties": properties})).raise_for_status()
    events = [
        ("demo", "demo_requested", {"form": "contact-sales"}),
        ("pricing-1", "page_viewed", {"url": "/pricing"}),
        ("pricing-2", "page_viewed", {"url": "/pricing#faq"}),
    ]
    body = {"events": [{"id": f"{email}-{key}", "type": kind, "email": email, "properties": props}
                       for key, kind, props in events]}  # fmt: skip
    notified = stack.mail.expect(email)
    started = time.perf_counter()
    await post_events(stack.http, json.dumps(body).encode())
    try:
        return await asyncio.wait_for(notified, wait_limit) - started
    except TimeoutError:
        return math.inf


async def measure_quiet(stack: Stack, options: Options, warmup: int = 2) -> dict[str, Any]:
    """One lead after the other with a gap, so that each meets an otherwise quiet pipeline (latency, not
    throughput). The first `warmup` are not counted (first SMTP connection, first template render…)."""
    samples, cpu = [], CpuUsage(stack)
    for index in range(warmup + options.speed_leads):
        elapsed = await time_one_lead(stack, f"hot-quiet-{index}@prospect{index}.test", index, 90)
        if index >= warmup:
            samples.append(elapsed)
        await asyncio.sleep(options.gap_seconds)
    return {**summarize(samples), "gap_seconds": options.gap_seconds, "warmup_leads": warmup,
            "cpu_cores_used": cpu.cores()}  # fmt: skip


def visitor_email(index: int) -> str:
    return f"active{index}@visitors{index % 50}.test"


@dataclass
class BackgroundLoad:
    """page_viewed events for the active visitors at a steady rate, in batches every 100 ms.

    Posts are not awaited by the pacing loop, so slow answers do not lower the offered rate.
    """

    stack: Stack
    visitors: int
    events_per_second: int
    accepted: int = 0
    failed: int = 0
    max_outbox_depth: int = 0
    max_routing_lag_seconds: float = 0.0
    routing_lags: list[float] = field(default_factory=list)  # each sample's, in seconds
    _in_flight: set[asyncio.Task[int]] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        rng, per_tick = random.Random(11), max(1, round(self.events_per_second / 10))
        next_at, tick = time.perf_counter(), 0
        while not stop.is_set():
            batch = [
                {"id": f"background-{tick}-{n}", "type": "page_viewed",
                 "email": visitor_email(rng.randrange(self.visitors)), "properties": {"url": "/blog/scoring"}}
                for n in range(per_tick)
            ]  # fmt: skip
            task = asyncio.create_task(post_events(self.stack.http, json.dumps({"events": batch}).encode()))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
            if tick % 5 == 0:  # twice a second is enough to see whether the router keeps up
                await self._sample_outbox()
            tick, next_at = tick + 1, next_at + 0.1
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _done(self, task: asyncio.Task[int]) -> None:
        self._in_flight.discard(task)
        if task.cancelled() or task.exception() is not None:
            self.failed += 1
        else:
            self.accepted += task.result()

    async def _sample_outbox(self) -> None:
        status = await asyncio.to_thread(outbox_status, self.stack.runtime.db)
        self.max_outbox_depth = max(self.max_outbox_depth, status.depth)
        self.max_routing_lag_seconds = max(self.max_routing_lag_seconds, status.lag_seconds)
        self.routing_lags.append(status.lag_seconds)


async def seed_visitors(stack: Stack, visitors: int) -> float:
    """One event per active visitor, so the loaded run signals running workflows rather than starting
    new ones; returns how long it took until they were worked off."""
    started = time.perf_counter()
    for first in range(0, visitors, 500):
        batch = [{"id": f"seed-{index}", "type": "page_viewed", "email": visitor_email(index),
                  "properties": {"url": "/"}} for index in range(first, min(first + 500, visitors))]  # fmt: skip
        await post_events(stack.http, json.dumps({"events": batch}).encode())
    await settle(stack, timeout=120)
    return time.perf_counter() - started


async def measure_under_load(stack: Stack, options: Options) -> dict[str, Any]:
    """Timed leads started at a fixed interval while the background load runs. Open loop (not one after the
    other): when the pipeline falls behind, waiting for each lead would stretch the run by its latency.
    A lead not notified within --loaded-wait-limit counts as infinitely late."""
    load = BackgroundLoad(stack, options.active_visitors, options.background_eps)
    stop, cpu = asyncio.Event(), CpuUsage(stack)
    router = stack.slot.router
    assert router is not None
    inert = router.inert
    signals_before = router.signals
    assessed_before = (inert.assessed, inert.assessments) if inert else (0, 0)
    started = time.perf_counter()
    loading = asyncio.create_task(load.run(stop))
    await asyncio.sleep(3)  # reach a steady state before timing

    async def timed(index: int) -> float:
        await asyncio.sleep(index * options.loaded_interval)
        email = f"hot-loaded-{index}@prospect{index}.test"
        return await time_one_lead(stack, email, index, options.loaded_wait_limit)

    try:
        samples = await asyncio.gather(*(timed(index) for index in range(options.speed_leads)))
    finally:
        stop.set()
        await loading
    seconds, cores = time.perf_counter() - started, cpu.cores()
    events = load.accepted + 3 * options.speed_leads
    return {
        **summarize(samples),
        "not_notified_within_limit": sum(math.isinf(sample) for sample in samples),
        "wait_limit_ms": options.loaded_wait_limit * 1000,
        "timed_lead_every_seconds": options.loaded_interval,
        "active_visitors": options.active_visitors,
        "background_events_per_second_offered": options.background_eps,
        "background_events_per_second_accepted": round(load.accepted / seconds, 1),
        "background_posts_failed": load.failed,
        "max_outbox_depth": load.max_outbox_depth,
        "max_routing_lag_ms": round(load.max_routing_lag_seconds * 1000, 1),
        "routing_lag_sampled": summarize(load.routing_lags),  # twice a second over the run
        "temporal_task_backlog_at_end": await temporal_backlog(stack),
        "cpu_cores_used": cores,
        # Per event accepted in the run (background and timed): the Python process is the API, the worker
        # and the router together.
        "cpu_ms_per_event": {
            "python_process": round(cores["python"] * seconds * 1000 / events, 3),
            "temporal": round(cores["temporal"] * seconds * 1000 / events, 3),
        },
        "router_signals": router.signals - signals_before,
        "events_assessed_in_store": (inert.assessed if inert else 0) - assessed_before[0],
        "store_assessments": (inert.assessments if inert else 0) - assessed_before[1],
    }


# --- ingest burst and its routing ---------------------------------------------------------------------


def burst_email(index: int) -> str:
    return f"visitor{index}@company{index % 700}.test"


def burst_bodies(options: Options) -> list[bytes]:
    """Pre-encoded request bodies, so that the client's JSON encoding (same process, same CPUs) is not timed.

    Each batch holds whole browsing sessions of a few leads, shuffled together, the way a tracker flushes
    recent activity. The router sends one signal per lead per 1000 outbox rows it reads, so this shape
    means about one workflow signal per lead; were every lead's events spread over all batches, it would be
    nearly one signal per event.
    """
    rng = random.Random(7)
    paths = ["/blog/nurture-101", "/blog/scoring", "/docs/api", "/features", "/customers", "/integrations"]
    events = []
    for lead in range(options.leads):
        for n in range(options.events_per_lead):
            kind = "email_opened" if n % 10 == 9 else "page_viewed"
            props = {"campaign": "newsletter"} if kind == "email_opened" else {"url": rng.choice(paths)}
            events.append(
                {"id": f"burst-{lead}-{n}", "type": kind, "email": burst_email(lead), "properties": props}
            )
    bodies = []
    for start in range(0, len(events), options.batch_size):
        batch = events[start : start + options.batch_size]
        rng.shuffle(batch)
        bodies.append(json.dumps({"events": batch}).encode())
    return bodies


async def measure_ingest(stack: Stack, options: Options) -> dict[str, Any]:
    """POST the burst with `concurrency` requests in flight; no router runs, so this is acceptance alone
    (validation, then events and outbox rows written in one transaction per batch)."""
    bodies = burst_bodies(options)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def sender() -> int:
        accepted = 0
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            accepted += await post_events(stack.http, body)
            latencies.append(time.perf_counter() - started)
        return accepted

    log.info(
        "ingest: %d events in %d batches, %d in flight", options.events, len(bodies), options.concurrency
    )
    started, cpu = time.perf_counter(), CpuUsage(stack)
    accepted = sum(await asyncio.gather(*(sender() for _ in range(options.concurrency))))
    wall, cores = time.perf_counter() - started, cpu.cores()
    stored = await outbox_depth(stack.runtime)
    if accepted != options.events or stored != options.events:
        raise RuntimeError(f"accepted {accepted}, outbox holds {stored}; expected {options.events}")
    return {
        "events": accepted,
        "leads": options.leads,
        "batch_size": options.batch_size,
        "concurrency": options.concurrency,
        "wall_seconds": round(wall, 3),
        "ingest_events_per_second": round(accepted / wall),
        "batch_latency": summarize(latencies),
        "router_running": False,
        "cpu_cores_used": cores,
    }


def signals_needed(runtime: Runtime) -> int:
    """How many signal-with-starts the router will send for the current outbox: it reads 1000 rows at a
    time, oldest first, and sends one signal per lead present in each read."""
    path = runtime.settings.resolved_database_url.split("///", 1)[-1]
    with contextlib.closing(sqlite3.connect(path)) as connection:
        lead_ids = [row[0] for row in connection.execute("SELECT lead_id FROM outbox ORDER BY id")]
    return sum(len(set(lead_ids[start : start + 1000])) for start in range(0, len(lead_ids), 1000))


async def raw_signal_with_start(stack: Stack, count: int) -> dict[str, Any]:
    """Temporal's own ceiling on this stack: `count` signal-with-starts of new workflows straight from a
    client, with the router's concurrency and payload shape, on a task queue nobody polls."""
    event = EventRef(0, "page_viewed", datetime.now(UTC), {"url": "/blog/1"})
    in_flight = asyncio.Semaphore(ROUTER_CONCURRENCY)

    async def one(number: int) -> None:
        async with in_flight:
            await stack.temporal.start_workflow(
                LeadWorkflow.run,
                LeadWorkflowInput(10**9 + number),
                id=f"raw-signal-with-start-{number}",
                task_queue="bench-nobody-polls",
                start_signal=signal_name(LeadWorkflow.events),
                start_signal_args=[NewEvents([event])],
            )

    started, cpu = time.perf_counter(), CpuUsage(stack)
    await asyncio.gather(*(one(number) for number in range(count)))
    seconds = time.perf_counter() - started
    return {
        "signals": count,
        "seconds": round(seconds, 2),
        "signals_per_second": round(count / seconds, 1),
        "cpu_cores_used": cpu.cores(),
    }


async def measure_routing(stack: Stack, options: Options) -> dict[str, Any]:
    """The router alone (no worker yet) drains the burst's outbox, against raw signal-with-start on the
    same server just before; then the worker starts and works through the lead workflows it signalled."""
    signals = await asyncio.to_thread(signals_needed, stack.runtime)
    raw = await raw_signal_with_start(stack, signals)
    log.info("raw signal-with-start: %s", raw)
    router, stop = OutboxRouter(stack.runtime.db, stack.temporal, stack.runtime.settings), asyncio.Event()
    started, cpu = time.perf_counter(), CpuUsage(stack)
    routing = asyncio.create_task(router.run(stop))
    while router.routed < options.events and time.perf_counter() - started < options.drain_limit:
        await asyncio.sleep(0.05)
    seconds, cores, routed = time.perf_counter() - started, cpu.cores(), router.routed
    stop.set()
    await routing
    signal_rate = routed / seconds * signals / options.events
    log.info("router alone: %d events in %.1f s", routed, seconds)
    async with stack.worker():
        worked = await settle(stack, timeout=options.drain_limit * 10)
    return {
        "events": options.events,
        "workflow_signals": signals,
        "raw_signal_with_start": raw,
        "router": {
            "drained": routed >= options.events,
            "seconds": round(seconds, 2),
            "routed_events": routed,
            "events_per_second": round(routed / seconds),
            "signals_per_second": round(signal_rate, 1),
            "cpu_cores_used": cores,
        },
        "router_to_raw_ratio": round(signal_rate / raw["signals_per_second"], 3),
        "worker_then_worked_through_lead_workflows_seconds": round(worked, 1),
        "lead_workflows_per_second": round(options.leads / worked, 1),
    }


# --- figures ------------------------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def milliseconds(seconds: float) -> float | None:
    return None if math.isinf(seconds) else round(seconds * 1000, 1)  # None (null): beyond the wait limit


def summarize(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)
    figures = {f"p{p}_ms": milliseconds(percentile(ordered, p)) for p in (50, 90, 99)}
    return {**figures, "max_ms": milliseconds(ordered[-1]), "n": len(ordered)}


def figures_output() -> TextIO:
    """Where the bench writes its JSON: stdout. Anything else written there from now on, by this process or
    the processes it starts (Temporal's Rust core prints its warnings on stdout), goes to stderr."""
    figures = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return figures


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of a bench whose help is its module's docstring."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def run_bench(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]
) -> None:
    """Parse the options, log progress to stderr and print the figures `run(options)` returns."""
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    print_figures(lambda: asyncio.run(run(options)))


def print_figures(measure: Callable[[], dict[str, Any]]) -> None:
    """Runs a bench (`measure` returns its figures) and prints the figures as JSON on stdout, alone there."""
    figures = figures_output()
    result = measure()
    with figures:
        figures.write(json.dumps(result, indent=2) + "\n")


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    temporal = subprocess.run([temporal_cli(), "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "temporal": temporal,
        "store": "sqlite",
        "data_dir_parent": tempfile.gettempdir(),
        "load_1m_at_start": os.getloadavg()[0],  # the CPUs may be shared: read the figures with it
    }


# --- the run ------------------------------------------------------------------------------------------


async def speed_to_lead(options: Options) -> tuple[dict[str, Any], dict[str, Any]]:
    async with bench_stack() as stack, stack.worker():
        log.info("speed to lead on the quiet system: %d leads", options.speed_leads)
        quiet = await measure_quiet(stack, options)
        log.info("speed to lead, quiet: %s", quiet)
        seeded = await seed_visitors(stack, options.active_visitors)
        log.info("%d active visitors seeded in %.1f s; starting the load", options.active_visitors, seeded)
        loaded = await measure_under_load(stack, options)
        log.info("speed to lead, under load: %s", loaded)
        hand_offs = [to for _, to, subject in stack.mail.received if subject.startswith("Hot lead:")]
        log.info("%d hand-off emails, to %s", len(hand_offs), sorted(set(hand_offs)))
    return quiet, loaded


async def ingest_and_routing(options: Options) -> tuple[dict[str, Any], dict[str, Any]]:
    async with bench_stack() as stack:
        ingest = await measure_ingest(stack, options)
        log.info("ingest: %s", ingest)
        routing = await measure_routing(stack, options)
        log.info("routing: %s", routing)
    return ingest, routing


def temporal_cost_ratio(loaded: dict[str, Any], routing: dict[str, Any]) -> float:
    """The Temporal server's CPU per event under load over its CPU per raw signal-with-start (same run):
    1 is an event costing what signalling it costs; below 1, events that were never signalled."""
    raw = routing["raw_signal_with_start"]
    per_signal_ms = raw["cpu_cores_used"]["temporal"] * raw["seconds"] * 1000 / raw["signals"]
    return round(loaded["cpu_ms_per_event"]["temporal"] / per_signal_ms, 3)


async def run(options: Options) -> dict[str, Any]:
    # `timeout` and friends send SIGTERM: unwind like Ctrl-C, so the Temporal server and the data go too.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    about = machine()
    quiet, loaded = await speed_to_lead(options)
    ingest, routing = await ingest_and_routing(options)
    loaded["temporal_cpu_per_event_to_raw_signal_with_start"] = temporal_cost_ratio(loaded, routing)
    return {
        "benchmark": "ingest_and_speed_to_lead",
        "machine": {**about, "load_1m_at_end": os.getloadavg()[0]},
        "ingest": ingest,
        "routing": routing,
        "speed_to_lead_idle": quiet,
        f"speed_to_lead_under_{options.background_eps}_eps": loaded,
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    options = parse_options()
    figures = figures_output()
    started = time.perf_counter()
    try:
        result = asyncio.run(run(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted: the Temporal server is stopped and the data removed")
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    with figures:
        figures.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
