"""Benchmark: a worker's memory with 100,000 leads parked in multi-week sequences.

The embedded stack as `leadflow dev` runs it (the Temporal dev server on a SQLite file, a SQLite store), with
the worker in its own process (`python worker.py`, LEADFLOW_WORKER_CACHE_SIZE as given) so that its memory
is its own. --leads leads are stored, then each gets a sequence workflow that journals its first step and
parks on a four-week wait (the waits of the shipped campaigns are days to weeks). The worker's resident
memory is sampled as they pile up; then --wake random parked leads get an event (a signal), which rebuilds
the evicted ones from their history, and the memory is read again.

    .venv/bin/python bench/parked.py > result.json            # 100,000 leads, cache 1000
    .venv/bin/python bench/parked.py --leads 20000 --cache 5000

Figures go to stdout as JSON, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_and_speed_to_lead import bench_parser, bench_settings, machine, run_bench
from sqlalchemy import func, select

from leadflow.cli.dev import connect_when_ready, temporal_dev_server, worker_processes
from leadflow.contracts import EventRef, NewEvents, SequenceInput
from leadflow.intake.ingest import lead_ids_by_email
from leadflow.platform.store import Database
from leadflow.platform.store.models import EnrollmentStep
from leadflow.sequences.model import Sequence
from workflows.sequence import SequenceWorkflow

log = logging.getLogger("bench")
PARKED = Sequence.model_validate(
    {
        "id": "parked",
        "name": "Four weeks of patience",
        "segment": "parked",
        "steps": [{"wait": "28d"}, {"send": {"channel": "email", "template": "ebook_tips"}}],
    }
)


def store_leads(db: Database, count: int) -> list[int]:
    ids = []
    for start in range(0, count, 1000):
        emails = {f"parked{n}@parked{n}.test": {} for n in range(start, min(count, start + 1000))}
        with db.transaction() as session:
            ids += [lead_id for lead_id, _ in lead_ids_by_email(session, emails).values()]
    return ids


def journaled_steps(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count(EnrollmentStep.id))) or 0)


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise LookupError(pid)


async def run(options: argparse.Namespace) -> dict[str, Any]:
    about = machine()
    with tempfile.TemporaryDirectory(prefix="leadflow-parked-") as directory:
        settings = bench_settings(Path(directory), smtp_port=1).model_copy(
            update={"worker_cache_size": options.cache}
        )
        db = Database(settings.resolved_database_url)
        db.upgrade()
        started = time.perf_counter()
        lead_ids = await asyncio.to_thread(store_leads, db, options.leads)
        log.info("%d leads stored in %.1f s", len(lead_ids), time.perf_counter() - started)
        with temporal_dev_server(settings), worker_processes(settings, 1) as [worker]:
            client = await connect_when_ready(settings, db)
            in_flight = asyncio.Semaphore(64)
            samples: list[dict[str, Any]] = []

            async def park(lead_id: int) -> None:
                async with in_flight:
                    await client.start_workflow(
                        SequenceWorkflow.run,
                        SequenceInput(lead_id, PARKED),
                        id=settings.sequence_workflow_id("parked", lead_id),
                        task_queue=settings.task_queue,
                    )

            started = time.perf_counter()
            for chunk in range(0, len(lead_ids), 10_000):
                await asyncio.gather(*(park(lead_id) for lead_id in lead_ids[chunk : chunk + 10_000]))
                parked = min(chunk + 10_000, len(lead_ids))
                samples.append({"parked": parked, "worker_rss_mib": resident_mib(worker.pid)})
                log.info("%s", samples[-1])
            park_seconds = time.perf_counter() - started
            # Starting outruns the worker: wait until every workflow ran its first task (its journal row).
            while (journaled := await asyncio.to_thread(journaled_steps, db)) < len(lead_ids):
                log.info(
                    "%d of %d first steps run; worker at %s MiB",
                    journaled,
                    len(lead_ids),
                    resident_mib(worker.pid),
                )
                await asyncio.sleep(10)
            caught_up_seconds = time.perf_counter() - started
            await asyncio.sleep(options.settle)
            settled_rss = resident_mib(worker.pid)

            event = EventRef(0, "page_viewed", datetime.now(UTC), {"url": "/pricing"})
            woken = random.Random(7).sample(lead_ids, min(options.wake, len(lead_ids)))
            started = time.perf_counter()

            async def wake(lead_id: int) -> None:
                async with in_flight:
                    handle = client.get_workflow_handle(settings.sequence_workflow_id("parked", lead_id))
                    await handle.signal(SequenceWorkflow.lead_events, NewEvents([event]))
                    await handle.query(SequenceWorkflow.current_step)  # answered once it is rebuilt

            await asyncio.gather(*(wake(lead_id) for lead_id in woken))
            wake_seconds = time.perf_counter() - started
            woken_rss = resident_mib(worker.pid)
        db.dispose()
    return {
        "benchmark": "parked",
        "machine": {**about, "load_1m_at_end": os.getloadavg()[0]},
        "leads_parked": len(lead_ids),
        "worker_cache_size": options.cache,
        "park_seconds": round(park_seconds, 1),
        "worker_caught_up_seconds": round(caught_up_seconds, 1),
        "parked_per_second": round(len(lead_ids) / park_seconds, 1),
        "worker_rss_mib_while_parking": samples,
        "worker_rss_mib_settled": settled_rss,
        "woken_leads": len(woken),
        "wake_seconds": round(wake_seconds, 1),
        "woken_per_second": round(len(woken) / wake_seconds, 1),
        "worker_rss_mib_after_waking": woken_rss,
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--cache", type=int, default=1000, help="LEADFLOW_WORKER_CACHE_SIZE of the worker")
    parser.add_argument("--wake", type=int, default=2000, help="parked leads woken by an event at the end")
    parser.add_argument("--settle", type=float, default=10, help="seconds to let the worker settle")
    run_bench(parser, run)


if __name__ == "__main__":
    main()
