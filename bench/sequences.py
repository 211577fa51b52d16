"""Benchmark: a 30-day campaign simulated for 1,000 leads, and the time from the segment-entering event to
the first send on the embedded stack.

1. `leadflow simulate`'s harness (time-skipping server, real workflows and activities, SQLite, an SMTP sink)
   plays the ebook follow-up for --leads leads over 30 days (30% register for the webinar on day 8), shared
   among --processes processes (default: one per CPU), each with its own server, worker and store.
2. The embedded stack (Temporal dev server subprocess, worker and router in-process, the API on uvicorn,
   SQLite, an in-process SMTP server that timestamps what it accepts) gets one `ebook_downloaded` per lead,
   --gap seconds apart; each is timed from the POST to the ebook email's arrival.

Figures go to stdout as JSON, progress to stderr.

    .venv/bin/python bench/sequences.py > result.json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_and_speed_to_lead import (
    API_KEY,
    bench_parser,
    embedded_stack,
    machine,
    percentile,
    run_bench,
    serving_api,
)

from leadflow.content.loader import load_content
from leadflow.platform.settings import PROJECT_ROOT
from leadflow.sequences.simulation import Script, default_processes, simulate
from worker import running_worker

log = logging.getLogger("bench")
CAMPAIGN = {
    "lead": {"first_name": "Bench"},
    "horizon": "30d",
    "events": [
        {"at": "0m", "type": "ebook_downloaded"},
        {"at": "8d", "type": "webinar_registered", "share": 0.3},
    ],
}


async def measure_simulation(leads: int, processes: int | None = None) -> dict[str, Any]:
    content = load_content(PROJECT_ROOT)
    report = await simulate(
        content,
        "ebook_follow_up",
        Script.model_validate(CAMPAIGN),
        leads,
        lambda line: log.info("%s", line),
        processes,
    )
    return {
        "leads": leads,
        "processes": processes or default_processes(leads),
        "simulated_days": report.horizon.days,
        "wall_seconds": round(report.wall_seconds, 1),
        "messages": sum(report.totals["messages"].values()),
        "outcomes": report.totals["outcomes"],
    }


class FirstMail:
    """aiosmtpd handler: the arrival time (perf_counter) of the first email to each address."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.perf_counter()
        to = str(message_from_bytes(envelope.content, policy=policy.default)["To"])  # type: ignore[arg-type]
        self.first.setdefault(to, arrived)
        return "250 OK"


async def measure_first_send(leads: int, gap: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    mail = FirstMail()
    async with embedded_stack(mail) as (runtime, client), running_worker(client, runtime) as router:
        wake = lambda: loop.call_soon_threadsafe(router.wake)  # noqa: E731
        async with (
            serving_api(runtime, wake) as base_url,
            httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
            ) as http,
        ):
            posted: dict[str, float] = {}
            for number in range(leads):
                email = f"reader{number}@bench{number % 50}.test"
                posted[email] = time.perf_counter()
                response = await http.post(
                    "/v1/events", json={"id": f"first-{number}", "type": "ebook_downloaded", "email": email}
                )
                response.raise_for_status()
                await asyncio.sleep(gap)
            deadline = time.perf_counter() + 60
            while len(mail.first) < leads and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
    delays = sorted((mail.first[email] - at) * 1000 for email, at in posted.items() if email in mail.first)
    return {
        "leads": leads,
        "gap_seconds": gap,
        "delivered": len(delays),
        "p50_ms": round(percentile(delays, 50), 1) if delays else None,
        "p99_ms": round(percentile(delays, 99), 1) if delays else None,
        "max_ms": round(delays[-1], 1) if delays else None,
    }


async def run(options: argparse.Namespace) -> dict[str, Any]:
    simulation = await measure_simulation(options.leads, options.processes)
    log.info("simulation: %s", simulation)
    first_send = await measure_first_send(options.first_send_leads, options.gap)
    log.info("first send: %s", first_send)
    return {
        "benchmark": "sequences",
        "machine": {**machine(), "load_average_at_end": os.getloadavg()},
        "simulated_30_day_campaign": simulation,
        "segment_entry_to_first_send": first_send,
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--leads", type=int, default=1000, help="leads in the simulated campaign")
    parser.add_argument(
        "--processes", type=int, help="simulation processes (default: one per CPU, 50 leads or more each)"
    )
    parser.add_argument("--first-send-leads", type=int, default=60, help="leads timed to their first send")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between two timed leads")
    run_bench(parser, run)


if __name__ == "__main__":
    main()
