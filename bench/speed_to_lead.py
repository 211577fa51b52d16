"""Benchmark: speed-to-lead of the hand-off, on the embedded stack, under background load.

Time from the moment the API accepted (202) the event that makes a lead sales-ready (a demo request on the
contact-sales form) until (a) the SMTP server accepted the salesperson's email and (b) the salesperson's
signed webhook was received; p50 / p99 / max, with 10 and 100 background events/s (page views of other,
known leads) going through the same API, router and workers. Each timed lead's workflow history then
splits its time into routing, waiting in the task queue, and the worker's first task (`where_the_time_went`);
and how far the background leads' scores lag behind their newest events (`background_scoring_lag_seconds`).

What runs is what `leadflow dev` runs: a Temporal dev server subprocess (SQLite file), the worker and
outbox router in-process, the API served by uvicorn over a socket, a SQLite store, all in a temporary
directory on free 127.0.0.1 ports; plus an aiosmtpd server and a loopback webhook receiver that note when
each message arrives. JSON on stdout, progress on stderr.

    .venv/bin/python bench/speed_to_lead.py > result.json
    .venv/bin/python bench/speed_to_lead.py --leads 20 --rates 10 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from ingest_and_speed_to_lead import print_figures  # the bench's own folder is on sys.path
from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from leadflow.cli.dev import connect_when_ready, temporal_dev_server, worker_processes
from leadflow.http.app import create_app
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT, Settings
from leadflow.platform.store import Database
from leadflow.platform.store.models import Event, Lead
from worker import running_worker

API_KEY = "bench-key"
SECRET = "bench-webhook-secret"
log = logging.getLogger("bench")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Arrivals:
    """When each lead's email and webhook arrived (time.monotonic), keyed by the lead's email."""

    def __init__(self) -> None:
        self.email: dict[str, float] = {}
        self.webhook: dict[str, float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        subject = str(message["Subject"])
        if "Hot lead:" in subject and "<" in subject:
            self.email.setdefault(subject.split("<", 1)[1].split(">", 1)[0], time.monotonic())
        return "250 OK"


def webhook_receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            arrived = time.monotonic()
            arrivals.webhook.setdefault(json.loads(body)["lead"]["email"], arrived)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def content_with_webhook(directory: Path, url: str) -> Path:
    for part in ("scoring.yaml", "segments", "templates"):
        source = PROJECT_ROOT / part
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, directory / part)
    (directory / "sales.yaml").write_text(
        "salespeople:\n"
        "  - name: Sam Rivera\n    email: sam@bench.test\n"
        f"    notify: {{webhooks: [{{url: '{url}', format: json}}]}}\n"
        "  - name: Alex Chen\n    email: alex@bench.test\n"
        f"    notify: {{webhooks: [{{url: '{url}', format: json}}]}}\n"
    )
    return directory


@dataclass
class Stack:
    api: httpx.AsyncClient
    client: Client
    settings: Settings
    db: Database


@contextlib.asynccontextmanager
async def embedded_stack(workdir: Path, arrivals: Arrivals, processes: int) -> AsyncIterator[Stack]:
    smtp_port, api_port = free_port(), free_port()
    receiver = webhook_receiver(arrivals)
    smtp = Controller(arrivals, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    settings = Settings(
        data_dir=workdir,
        temporal_address=f"127.0.0.1:{free_port()}",
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        content_dir=content_with_webhook(workdir, f"http://127.0.0.1:{receiver.server_address[1]}/hook"),
        api_keys=[API_KEY],
        api_port=api_port,
        webhook_secret=SECRET,
        router_poll_seconds=0.05,
    )
    runtime = Runtime.from_settings(settings)
    runtime.db.upgrade()
    try:
        with temporal_dev_server(settings), worker_processes(settings, processes - 1):
            client = await connect_when_ready(settings, runtime.db)
            async with running_worker(client, runtime) as router:
                loop = asyncio.get_running_loop()

                async def temporal_client() -> Client:
                    return client

                def wake_router() -> None:
                    loop.call_soon_threadsafe(router.wake)

                app = create_app(runtime, wake_router, temporal=temporal_client)
                server = uvicorn.Server(uvicorn.Config(app, port=api_port, log_level="warning"))
                serving = asyncio.create_task(server.serve())
                while not server.started:
                    await asyncio.sleep(0.05)
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{api_port}",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=30,
                ) as api:
                    yield Stack(api, client, settings, runtime.db)
                server.should_exit = True
                await serving
    finally:
        smtp.stop()
        receiver.shutdown()
        runtime.db.dispose()


async def background_load(api: httpx.AsyncClient, rate: int, leads: int, stop: asyncio.Event) -> int:
    """`rate` page views per second for `leads` known leads, in ten small batches a second."""
    sent, tick = 0, 0.1
    per_tick = round(rate * tick)
    if per_tick == 0:  # no load: the idle baseline
        await stop.wait()
        return 0
    started = time.monotonic()
    while not stop.is_set():
        batch = [
            {
                "id": f"bg-{rate}-{sent + n}",
                "type": "page_viewed",
                "email": f"reader{(sent + n) % leads}@load.test",
                "properties": {"url": f"/blog/{(sent + n) % 7}"},
            }
            for n in range(per_tick)
        ]
        await api.post("/v1/events", json={"events": batch})
        sent += per_tick
        await asyncio.sleep(max(0.0, started + (sent / per_tick) * tick - time.monotonic()))
    return sent


async def scoring_lag(db: Database, stop: asyncio.Event) -> list[float]:
    """Once a second, for each background lead: how far its score lags behind its newest event, in seconds
    (0 once that event was scored). Page views wait behind urgent work and coalesce: this is their price."""
    newest = (
        select(Lead.last_activity_at, func.max(Event.occurred_at))
        .join(Event, Event.lead_id == Lead.id)
        .where(Lead.email.like("%@load.test"))
        .group_by(Lead.id)
    )

    def sample() -> list[float]:
        with db.read() as session:
            now = clock.now()  # a lead never scored yet lags by its newest event's age
            return [
                max(((event_at - scored_at) if scored_at else (now - event_at)).total_seconds(), 0.0)
                for scored_at, event_at in session.execute(newest)
            ]

    lags: list[float] = []
    while not stop.is_set():
        lags += await asyncio.to_thread(sample)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
    return lags


async def time_leads(
    api: httpx.AsyncClient, stack: Stack, arrivals: Arrivals, label: str, count: int, gap: float
) -> dict[str, Any]:
    email_s, webhook_s, both_s, missed = [], [], [], 0
    stages: dict[str, list[float]] = defaultdict(list)
    timed: list[tuple[str, float]] = []
    for n in range(count):
        lead = f"buyer{n}-{label}@hot.test"
        created = await api.post(
            "/v1/leads", json={"email": lead, "properties": {"first_name": "Buyer", "company": "Hot"}}
        )
        event = {
            "id": f"{lead}-demo",
            "type": "demo_requested",
            "email": lead,
            "properties": {"form": "contact-sales"},
        }
        response = await api.post("/v1/events", json=event)
        accepted, accepted_wall = time.monotonic(), time.time()
        assert response.status_code == 202, response.text
        deadline = accepted + 10
        while (lead not in arrivals.email or lead not in arrivals.webhook) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        if lead not in arrivals.email or lead not in arrivals.webhook:
            missed += 1
            continue
        email_s.append(arrivals.email[lead] - accepted)
        webhook_s.append(arrivals.webhook[lead] - accepted)
        both_s.append(max(email_s[-1], webhook_s[-1]))
        timed.append((stack.settings.lead_workflow_id(created.json()["id"]), accepted_wall))
        await asyncio.sleep(gap)
    for workflow_id, accepted_wall in timed:  # their first workflow tasks have completed by now
        for stage, seconds in (await where_the_time_went(stack.client, workflow_id, accepted_wall)).items():
            stages[stage].append(seconds)
    return {
        "leads": count,
        "missed_within_10s": missed,
        "email_seconds": summary(email_s),
        "webhook_seconds": summary(webhook_s),
        "both_seconds": summary(both_s),
        "where_the_time_went": {stage: summary(seconds) for stage, seconds in stages.items()},
    }


async def where_the_time_went(client: Client, workflow_id: str, accepted: float) -> dict[str, float]:
    """From the lead workflow's history: accepted → signal-with-start by the router (`routing`) → a worker
    picked up the first workflow task (`task_queue`) → that task completed, assessment and hand-off email
    included, as local activities (`worker`)."""
    moments: dict[str, float] = {}
    while "WORKFLOW_TASK_COMPLETED" not in moments:  # the first task may still be running
        await asyncio.sleep(0.1)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        for event in history.events:
            name = EventType.Name(event.event_type)
            for kind in ("WORKFLOW_EXECUTION_STARTED", "WORKFLOW_TASK_STARTED", "WORKFLOW_TASK_COMPLETED"):
                if name == f"EVENT_TYPE_{kind}":
                    moments.setdefault(kind, event.event_time.ToMicroseconds() / 1e6)
    started = moments["WORKFLOW_EXECUTION_STARTED"]
    picked = moments["WORKFLOW_TASK_STARTED"]
    return {
        "routing": started - accepted,
        "task_queue": picked - started,
        "worker": moments["WORKFLOW_TASK_COMPLETED"] - picked,
    }


def summary(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(samples)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 4)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1], 4)}


async def run(options: argparse.Namespace) -> dict[str, Any]:
    arrivals = Arrivals()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as workdir:
        async with embedded_stack(Path(workdir), arrivals, options.worker_processes) as stack:
            api = stack.api
            for n in range(options.readers):  # the background leads exist before the load starts
                await api.post("/v1/leads", json={"email": f"reader{n}@load.test"})
            await time_leads(api, stack, arrivals, "warmup", 3, options.gap)
            for rate in options.rates:
                log.info("speed-to-lead with %s background events/s …", rate)
                stop = asyncio.Event()
                load = asyncio.create_task(background_load(api, rate, options.readers, stop))
                await asyncio.sleep(2)  # let the load settle
                lagging = asyncio.create_task(scoring_lag(stack.db, stop))
                cpu = time.process_time()
                started = time.monotonic()
                timed = await time_leads(api, stack, arrivals, f"at{rate}", options.leads, options.gap)
                elapsed = time.monotonic() - started
                stop.set()
                sent = await load
                timed["background_scoring_lag_seconds"] = summary(await lagging)
                timed["background_events_per_second"] = rate
                timed["background_events_sent"] = sent
                timed["process_cpu_share"] = round((time.process_time() - cpu) / elapsed, 2)
                results[f"background_{rate}_eps"] = timed
                await asyncio.sleep(2)  # drain before the next rate
    return {
        "benchmark": "speed_to_lead",
        "target": "p99 of both_seconds under 1 s",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        **results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=40, help="leads timed per background rate")
    parser.add_argument(
        "--rates", type=int, nargs="+", default=[0, 10, 100], help="background events/s (0: idle)"
    )
    parser.add_argument("--readers", type=int, default=100, help="known leads the background events are for")
    parser.add_argument(
        "--worker-processes", type=int, default=1, help="worker processes (as LEADFLOW_WORKER_PROCESSES)"
    )
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between two timed leads")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    print_figures(lambda: asyncio.run(run(options)))


if __name__ == "__main__":
    main()
