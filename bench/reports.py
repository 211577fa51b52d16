"""Benchmark: every report on a large store, SQLite and PostgreSQL (when reachable).

The store: --leads leads (default 100,000) created over 180 days with UTM sources, --events events (default
1,000,000) of which a share are opens and clicks naming their message, stage stamps (about 30 % MQL, 10 % SQL,
3 % opportunity, 1 % customer), enrollments in three sequences with their messages, hand-offs for the SQLs.
It is written with bulk loads (COPY on PostgreSQL, executemany on SQLite), then each report runs twice over
the last 90 days and over everything; the best time is kept. Figures go to stdout as JSON.

    .venv/bin/python bench/reports.py > result.json
    .venv/bin/python bench/reports.py --leads 10000 --events 100000   # a quick look
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
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from leadflow import reports
from leadflow.platform.store import Database

POSTGRES_URL = os.environ.get("LEADFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = datetime(2025, 6, 30, tzinfo=UTC)
SOURCES = ("google", "newsletter", "linkedin", "direct", "partner")
CAMPAIGNS = ("spring", "webinar", "ebook", "retarget")
EVENT_TYPES = ("page_viewed",) * 6 + (
    "form_started",
    "form_submitted",
    "ebook_downloaded",
    "webinar_registered",
)
SEQUENCES = {"ebook_follow_up": 5, "abandoned_form": 3, "event_regulars": 4}
PEOPLE = ("alice@sales.test", "bob@sales.test", "carol@sales.test", "dan@sales.test")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stamp(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def generate(leads: int, events: int, seed: int = 7) -> dict[str, list[tuple[Any, ...]]]:
    """Rows per table, as tuples in the column order of COLUMNS."""
    rng = random.Random(seed)
    rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in COLUMNS}
    message_ids: list[tuple[int, int]] = []  # (message id, lead id) of sent emails
    stage_id = enrollment_id = message_id = handoff_id = 0
    for lead_id in range(1, leads + 1):
        created = NOW - timedelta(seconds=rng.uniform(0, 180 * 86400))
        score = int(rng.triangular(-10, 120, 20))
        temperature = "hot" if score >= 80 else "warm" if score >= 40 else "cold"
        properties = {"utm_source": rng.choice(SOURCES), "utm_campaign": rng.choice(CAMPAIGNS)}
        stage, moment = "lead", created
        draw = rng.random()
        for to_stage, share in (("mql", 0.30), ("sql", 0.10), ("opportunity", 0.03), ("customer", 0.01)):
            if draw >= share:
                break
            moment = moment + timedelta(seconds=rng.expovariate(1 / (5 * 86400)))
            if moment >= NOW:
                break
            stage_id += 1
            rows["stage_changes"].append((stage_id, lead_id, stage, to_stage, stamp(moment), "bench", score))
            if to_stage == "sql":
                handoff_id += 1
                assigned = stamp(moment)
                notified = stamp(moment + timedelta(seconds=rng.uniform(1, 120)))
                rows["handoffs"].append(
                    (
                        handoff_id,
                        stage_id,
                        lead_id,
                        rng.choice(PEOPLE),
                        "bench",
                        "assigned",
                        assigned,
                        notified,
                    )
                )
            stage = to_stage
        rows["leads"].append(
            (
                lead_id,
                f"lead{lead_id}@bench.test",
                json.dumps(properties),
                stage,
                score,
                stamp(created),
                stamp(created),
                stamp(created),
                "ABCD"[rng.randrange(4)],
                temperature,
            )
        )
        if rng.random() < 0.3:
            sequence = rng.choice(list(SEQUENCES))
            steps = SEQUENCES[sequence]
            enrollment_id += 1
            workflow_id = f"sequence-{sequence}-lead-{lead_id}"
            current = rng.randrange(steps)
            status = rng.choice(("running", "completed", "converted", "exited"))
            reason = {
                "converted": "goal reached",
                "exited": rng.choice(("opted out", "handed to sales")),
            }.get(status)
            definition = json.dumps({"steps": [{"send": {"channel": "email", "template": "t"}}] * steps})
            started = stamp(created + timedelta(hours=1))
            rows["enrollments"].append(
                (
                    enrollment_id,
                    workflow_id,
                    lead_id,
                    sequence,
                    "v1",
                    definition,
                    status,
                    reason,
                    current,
                    started,
                )
            )
            for step in range(0, current + 1, 2):
                message_id += 1
                status_of = "failed" if rng.random() < 0.02 else "sent"
                rows["messages"].append(
                    (
                        message_id,
                        f"{workflow_id}:step-{step}",
                        lead_id,
                        "email",
                        "t",
                        f"lead{lead_id}@bench.test",
                        status_of,
                        started,
                        started,
                    )
                )
                message_ids.append((message_id, lead_id))
    for event_id in range(1, events + 1):
        if message_ids and rng.random() < 0.1:
            message, lead_id = rng.choice(message_ids)
            kind = "email_opened" if rng.random() < 0.75 else "email_clicked"
            properties = json.dumps({"message_id": message})
        else:
            lead_id, kind = rng.randint(1, leads), rng.choice(EVENT_TYPES)
            properties = json.dumps({"url": "/pricing"})
        moment = stamp(NOW - timedelta(seconds=rng.uniform(0, 180 * 86400)))
        rows["events"].append((event_id, f"e{event_id}", lead_id, kind, moment, moment, properties))
    return rows


COLUMNS = {
    "leads": "id, email, properties, stage, score, created_at, updated_at, last_activity_at, grade, temperature",
    "stage_changes": "id, lead_id, from_stage, to_stage, changed_at, reason, score",
    "handoffs": "id, stage_change_id, lead_id, salesperson, rule, status, assigned_at, notified_at",
    "enrollments": "id, workflow_id, lead_id, sequence_id, sequence_version, definition, status, exit_reason, "
    "current_step, started_at",
    "messages": "id, idempotency_key, lead_id, channel, template, recipient, status, created_at, sent_at",
    "events": "id, key, lead_id, type, occurred_at, received_at, properties",
}
ORDER = ("leads", "stage_changes", "handoffs", "enrollments", "messages", "events")


def load_sqlite(database: Database, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    raw = database.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN")
        for table in ORDER:
            columns = COLUMNS[table]
            marks = ", ".join("?" for _ in columns.split(","))
            converted = [tuple(_sqlite(v) for v in row) for row in rows[table]]
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", converted)
        cursor.execute("COMMIT")
        cursor.execute("ANALYZE")
    finally:
        raw.close()


def _sqlite(value: Any) -> Any:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value


def load_postgresql(url: str, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    with psycopg.connect(url) as connection:
        for table in ORDER:
            with connection.cursor().copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                for row in rows[table]:
                    copy.write_row(row)
        for table in ORDER:
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE")


def time_reports(database: Database) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for since in ("90d", "all"):
        period = reports.Period.last(since, NOW)
        runs: dict[str, Callable[[Any], Any]] = {
            "funnel": lambda s, p=period: reports.funnel(s, p),
            "sequences": lambda s, p=period: reports.sequences(s, p),
            "handoffs": lambda s, p=period: reports.handoffs(s, p),
            "scoring_health": lambda s, p=period: reports.scoring_health(s, p),
            "hot_leads": lambda s: reports.hot_leads(s),
            "whole_report": lambda s, p=period: reports.build_report(s, p),
        }
        for name, run in runs.items():
            best = float("inf")
            for _ in range(2):
                with database.read() as session:
                    started = time.perf_counter()
                    run(session)
                    best = min(best, time.perf_counter() - started)
            results.setdefault(since, {})[name] = round(best, 3)
            log(f"  {since:>4} {name}: {best:.3f} s")
    return results


def _postgres_reachable() -> bool:
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def backends(directory: Path) -> Iterator[tuple[str, Database, Callable[[dict[str, Any]], None]]]:
    sqlite = Database(f"sqlite:///{directory / 'reports.db'}")
    yield "sqlite", sqlite, lambda rows: load_sqlite(sqlite, rows)
    sqlite.dispose()
    if not _postgres_reachable():
        log(f"PostgreSQL is not reachable at {POSTGRES_URL}: skipped")
        return
    name = f"leadflow_bench_reports_{os.getpid()}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    postgres = Database(url)
    try:
        yield "postgresql", postgres, lambda rows: load_postgresql(url, rows)
    finally:
        postgres.dispose()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    arguments = parser.parse_args()
    log(f"generating {arguments.leads:,} leads and {arguments.events:,} events …")
    rows = generate(arguments.leads, arguments.events)
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "store": {table: len(found) for table, found in rows.items()},
        "seconds": {},
    }
    with tempfile.TemporaryDirectory() as directory:
        for name, database, load in backends(Path(directory)):
            database.upgrade()
            started = time.perf_counter()
            load(rows)
            log(f"{name}: loaded in {time.perf_counter() - started:.1f} s")
            result["seconds"][name] = time_reports(database)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
