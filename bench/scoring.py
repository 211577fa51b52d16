"""Benchmark: scoring throughput.

1. The pure scoring function (the shipped scoring.yaml): leads/s with 100 events each.
2. The full rescore activity (`assess_lead`'s body: lock, read events, score, ledger, stages, segments),
   one lead at a time, against SQLite and PostgreSQL (when reachable): leads/s with 100 events each.
3. `leadflow rescore` after a model change (the sql threshold moves): time to rescore every lead of a
   store of --leads leads with --events-per-lead events each, against SQLite and PostgreSQL.

Figures go to stdout as JSON, progress to stderr.

    .venv/bin/python bench/scoring.py > result.json
    .venv/bin/python bench/scoring.py --leads 20000      # a smaller store for (3)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml
from sqlalchemy import insert

from activities.leads import LeadActivities
from leadflow.content.loader import load_content
from leadflow.contracts import AssessLeadInput
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT, Settings
from leadflow.platform.store import Database
from leadflow.platform.store.models import Account, Event, Lead
from leadflow.platform.store.upsert import insert_ignoring_conflicts
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.rescoring import rescore_everyone
from leadflow.scoring.score import EventFact, score_lead

POSTGRES_URL = os.environ.get("LEADFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = datetime.now(UTC)
EVENT_MIX: list[tuple[str, dict[str, Any]]] = [
    ("page_viewed", {"url": "/blog/scoring"}),
    ("page_viewed", {"url": "/blog/nurture"}),
    ("page_viewed", {"url": "/pricing"}),
    ("page_viewed", {"url": "/careers"}),
    ("page_viewed", {"url": "/"}),
    ("email_opened", {}),
    ("email_opened", {}),
    ("email_clicked", {}),
    ("ebook_downloaded", {"title": "The Nurture Playbook"}),
    ("webinar_registered", {}),
    ("form_submitted", {"form": "newsletter"}),
    ("unsubscribed", {}),
]
TITLES = ["VP Sales", "Engineer", "Head of Growth", "Marketing intern", "CTO", None]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def random_events(rng: random.Random, count: int, first_id: int) -> list[tuple[int, str, datetime, dict]]:
    events = []
    for offset in range(count):
        kind, properties = rng.choice(EVENT_MIX)
        age = timedelta(minutes=rng.randint(0, 60 * 24 * 180))
        events.append((first_id + offset, kind, NOW - age, properties))
    return events


def random_properties(rng: random.Random) -> dict[str, Any]:
    return {
        "job_title": rng.choice(TITLES),
        "company_size": rng.choice([5, 60, 400, 5000]),
        "industry": rng.choice(["software", "retail", "fintech"]),
        "country": rng.choice(["US", "DE", "BR"]),
    }


# --- 1. the pure function ------------------------------------------------------------------------------


def bench_pure(model: ScoringModel, leads: int, events_per_lead: int) -> dict[str, Any]:
    rng = random.Random(1)
    inputs = [
        (random_properties(rng), [EventFact(*e) for e in random_events(rng, events_per_lead, n * 1000)])
        for n in range(leads)
    ]
    started = time.perf_counter()
    for properties, events in inputs:
        score_lead(model, properties, events, NOW)
    elapsed = time.perf_counter() - started
    return {"leads": leads, "events_per_lead": events_per_lead, "leads_per_second": round(leads / elapsed)}


# --- stores ----------------------------------------------------------------------------------------------


def stores(directory: Path) -> Iterator[tuple[str, Database]]:
    """A fresh migrated SQLite store, then a fresh PostgreSQL database when a server answers."""
    sqlite = Database(f"sqlite:///{directory / 'bench.db'}")
    sqlite.upgrade()
    yield "sqlite", sqlite
    sqlite.dispose()
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
    except psycopg.Error:
        log(f"PostgreSQL not reachable at {POSTGRES_URL}: skipped")
        return
    name = f"leadflow_bench_{os.getpid()}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    postgres = Database(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
    try:
        postgres.upgrade()
        yield "postgresql", postgres
    finally:
        postgres.dispose()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def fill(db: Database, leads: int, events_per_lead: int, first_lead: int = 1) -> list[int]:
    """`leads` leads (five per account) with their events, bulk-inserted in chunks."""
    rng = random.Random(first_lead)
    chunk = 2000
    ids = []
    for start in range(first_lead, first_lead + leads, chunk):
        numbers = range(start, min(start + chunk, first_lead + leads))
        with db.transaction() as session:
            accounts = sorted({n // 5 for n in numbers})
            insert_ignoring_conflicts(
                session,
                Account,
                [
                    {"id": a + 1, "domain": f"firm{a}.test", "name": f"Firm {a}", "created_at": NOW}
                    for a in accounts
                ],
                ["domain"],
            )
            session.execute(
                insert(Lead),
                [
                    {
                        "id": n,
                        "email": f"lead{n}@firm{n // 5}.test",
                        "properties": random_properties(rng),
                        "stage": "lead",
                        "score": 0,
                        "account_id": n // 5 + 1,
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                    for n in numbers
                ],
            )
            session.execute(
                insert(Event),
                [
                    {
                        "id": event_id,
                        "key": f"e{event_id}",
                        "lead_id": n,
                        "type": kind,
                        "occurred_at": at,
                        "received_at": at,
                        "properties": properties,
                    }
                    for n in numbers
                    for event_id, kind, at, properties in random_events(rng, events_per_lead, n * 1000)
                ],
            )
        ids.extend(numbers)
    return ids


# --- 2. the rescore activity -------------------------------------------------------------------------


def bench_activity(db: Database, leads: int, events_per_lead: int) -> dict[str, Any]:
    ids = fill(db, leads, events_per_lead)
    runtime = Runtime.assemble(
        Settings(database_url=db.url, content_dir=PROJECT_ROOT, smtp_url="smtp://127.0.0.1:1"),
        db,
        load_content(PROJECT_ROOT),
    )
    activity = LeadActivities(runtime)
    started = time.perf_counter()
    for lead_id in ids:
        activity._assess(AssessLeadInput(lead_id, []))  # the activity's body, without a Temporal worker
    elapsed = time.perf_counter() - started
    return {"leads": leads, "events_per_lead": events_per_lead, "leads_per_second": round(leads / elapsed)}


# --- 3. rescoring everyone after a model change ------------------------------------------------------


def bench_rescore_everyone(db: Database, leads: int, events_per_lead: int, batch: int) -> dict[str, Any]:
    started = time.perf_counter()
    fill(db, leads, events_per_lead, first_lead=1_000_000)
    filled = time.perf_counter() - started
    source = (PROJECT_ROOT / "scoring.yaml").read_text().replace("  sql: 80", "  sql: 60")
    changed = ScoringModel.model_validate(yaml.safe_load(source)).model_copy(
        update={"version": "bench-sql-60", "source": source}
    )
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        done += count
        if done % (batch * 20) < batch:
            log(f"  {done}/{leads} rescored")

    started = time.perf_counter()
    report = rescore_everyone(db, changed, batch_size=batch, on_batch=progress)
    elapsed = time.perf_counter() - started
    return {
        "leads": report.leads,
        "events_per_lead": events_per_lead,
        "seconds": round(elapsed, 1),
        "leads_per_second": round(report.leads / elapsed),
        "changed_stage": report.changed_stage,
        "fill_seconds": round(filled, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pure-leads", type=int, default=5000)
    parser.add_argument("--activity-leads", type=int, default=1000)
    parser.add_argument("--leads", type=int, default=100_000, help="store size for the rescore-everyone run")
    parser.add_argument("--events-per-lead", type=int, default=20, help="for the rescore-everyone run")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    model = load_content(PROJECT_ROOT).scoring
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
    }
    log("pure scoring function…")
    result["pure_function"] = bench_pure(model, args.pure_leads, 100)
    with tempfile.TemporaryDirectory() as directory:
        for dialect, db in stores(Path(directory)):
            log(f"{dialect}: rescore activity…")
            result[f"rescore_activity_{dialect}"] = bench_activity(db, args.activity_leads, 100)
            log(f"{dialect}: rescoring {args.leads} leads after a model change…")
            result[f"rescore_everyone_{dialect}"] = bench_rescore_everyone(
                db, args.leads, args.events_per_lead, args.batch_size
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
