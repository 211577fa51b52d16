"""Benchmark: the cost of one assessment, the work a lead workflow does for every burst of events (rescore,
score ledger, stages, segments, enrollments), on the embedded store (SQLite) or PostgreSQL.

Leads of one account each carry a history of page views; every round, each lead gets one more page view
and is assessed, as the lead workflow's local activity would. No Temporal: this is the store and the
scoring alone, the part of speed-to-lead a worker spends the most CPU on. JSON on stdout.

    .venv/bin/python bench/assess.py
    .venv/bin/python bench/assess.py --leads 100 --history 50 --rounds 5 --database postgresql://...
    .venv/bin/python bench/assess.py --leads 20 --history 10 --compare-with 5000 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from activities.leads import LeadActivities
from leadflow.contracts import AssessLeadInput
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import Settings


@dataclass
class Store:
    """One store with its leads and their history, and the assessments measured on it."""

    history: int
    runtime: Runtime
    activities: LeadActivities
    emails: list[str]
    lead_ids: list[int]
    samples: list[float] = field(default_factory=list)
    cpu: float = 0.0


def prepare(options: argparse.Namespace, history_size: int, workdir: Path) -> Store:
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=workdir, database_url=options.database)
    runtime = Runtime.from_settings(settings)
    runtime.db.upgrade()
    activities = LeadActivities(runtime)
    emails = [f"reader{n}@assess.test" for n in range(options.leads)]
    lead_ids = [upsert_lead(runtime.db, LeadIn(email=email))[0].id for email in emails]
    start = clock.now() - timedelta(days=3)
    history = [
        EventIn(
            id=f"history-{n}-{k}",
            type="page_viewed",
            email=email,
            timestamp=start + timedelta(minutes=k),
            properties={"url": f"/blog/{k % 7}"},
        )
        for n, email in enumerate(emails)
        for k in range(history_size)
    ]
    for at in range(0, len(history), 1000):
        ingest_events(runtime.db, history[at : at + 1000])
    for lead_id in lead_ids:  # the history is scored once, as the workflows would have
        activities._assess(AssessLeadInput(lead_id, []))
    return Store(history_size, runtime, activities, emails, lead_ids)


def assess_round(store: Store, round_: int) -> None:
    """Each lead gets one more page view and is assessed."""
    cpu = time.process_time()
    for email, lead_id in zip(store.emails, store.lead_ids, strict=True):
        event = EventIn(id=f"new-{round_}-{email}", type="page_viewed", email=email)
        ingest_events(store.runtime.db, [event])
        began = time.perf_counter()
        store.activities._assess(AssessLeadInput(lead_id, []))
        store.samples.append(time.perf_counter() - began)
    store.cpu += time.process_time() - cpu


def figures(store: Store, options: argparse.Namespace) -> dict[str, Any]:
    samples = sorted(store.samples)
    return {
        "events_per_lead": store.history + options.rounds,
        "assessments": len(samples),
        "ms_per_assessment": {
            "p50": round(1000 * samples[len(samples) // 2], 2),
            "p99": round(1000 * samples[int(len(samples) * 0.99)], 2),
            "mean": round(1000 * sum(samples) / len(samples), 2),
        },
        "cpu_ms_per_assessment_and_event": round(1000 * store.cpu / len(samples), 2),
    }


def run(options: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if options.compare_with is not None and options.database:
        raise SystemExit("--compare-with needs two stores: it runs on SQLite only")
    stores = [prepare(options, options.history, workdir / "history")]
    if options.compare_with is not None:
        stores.append(prepare(options, options.compare_with, workdir / "compared"))
    for round_ in range(options.rounds):  # interleaved, so that both see the same machine
        for store in stores:
            assess_round(store, round_)
    for store in stores:
        store.runtime.db.dispose()
    main_store = stores[0]
    report = {
        "benchmark": "assess",
        "store": main_store.runtime.db.dialect,
        "leads_in_one_account": options.leads,
        **figures(main_store, options),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    if len(stores) > 1:
        compared = figures(stores[1], options)
        report["compared_with"] = compared
        # The target of issue 22: at most 2 (5,000 past events against 10).
        report["p50_ratio"] = round(
            compared["ms_per_assessment"]["p50"] / report["ms_per_assessment"]["p50"], 2
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=100, help="leads, all of one account")
    parser.add_argument("--history", type=int, default=50, help="page views each lead has already")
    parser.add_argument("--rounds", type=int, default=5, help="new page views (and assessments) per lead")
    parser.add_argument("--database", default="", help="a database URL (default: SQLite in a temp dir)")
    parser.add_argument(
        "--compare-with",
        type=int,
        default=None,
        metavar="HISTORY",
        help="also measure leads with this many past page views, in the same run (rounds interleaved), and"
        " print compared_with and p50_ratio (its p50 over --history's)",
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as workdir:
        print(json.dumps(run(options, Path(workdir)), indent=2))


if __name__ == "__main__":
    main()
