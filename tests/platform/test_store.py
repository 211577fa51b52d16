"""The store rides out a dropped connection: a unit of work that is safe to repeat runs again on a new one.
The worker's store calls run on a thread, or inline in a simulation."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from leadflow.platform.store import Database


def test_a_repeatable_unit_of_work_runs_again_when_its_connection_is_dropped(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("a dropped connection is a PostgreSQL matter (SQLite is a file)")
    runs: list[int] = []

    def work(session: Session) -> int:
        runs.append(len(runs) + 1)
        if len(runs) == 1:  # what an operator's pg_terminate_backend or a failover does to it
            session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return int(session.scalar(text("SELECT 41 + 1")) or 0)

    assert db.retrying(work) == 42
    assert runs == [1, 2]


def test_any_other_error_is_raised_at_once(db: Database) -> None:
    runs: list[int] = []

    def work(session: Session) -> None:
        runs.append(1)
        session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(DBAPIError):
        db.retrying(work)
    assert runs == [1]


async def test_the_worker_calls_the_store_on_a_thread_and_a_simulation_inline(db: Database) -> None:
    def where(number: int) -> tuple[str, int]:
        with db.read() as session:
            return threading.current_thread().name, int(
                session.scalar(text("SELECT :n + 1"), {"n": number}) or 0
            )

    here = threading.current_thread().name
    elsewhere, answer = await db.call(where, 1)
    assert (elsewhere != here, answer) == (True, 2)
    inline = Database(db.url, calls_inline=True)
    try:
        assert await inline.call(where, number=2) == (here, 3)
    finally:
        inline.dispose()
