"""Engine and sessions. SQLite (embedded default) is tuned for one writer and many readers; PostgreSQL as is."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

import leadflow

# Next to the `leadflow` package, wherever this module sits in it.
MIGRATIONS_DIR = Path(leadflow.__file__).resolve().parent.parent / "migrations"
T = TypeVar("T")
log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _tune_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy issue BEGIN itself (see _begin_immediate) instead of pysqlite's deferred BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # A deleted row's bytes are overwritten, not left in free space: an erased person leaves no trace in
    # the file (the WAL's older frames go at the checkpoint after an erase: Database.checkpoint).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # A deferred transaction that reads then writes can fail with SQLITE_BUSY instead of waiting;
    # taking the write lock up front makes concurrent writers queue on busy_timeout. Reads stay deferred.
    # On the driver's connection: through SQLAlchemy's execution path it cost a tenth of a short transaction.
    readonly = connection.get_execution_options().get("readonly", False)
    connection.connection.driver_connection.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")


class Database:
    """One engine and its session factory; `transaction()` is the unit of work everywhere."""

    def __init__(self, url: str, calls_inline: bool = False, address_key: str = "") -> None:
        self.url = url
        self.calls_inline = calls_inline  # see `call`
        # The key of the suppression list's address hashes (LEADFLOW_SECRET_KEY; leadflow.messaging.consent reads
        # it from `session.info`): the runtime sets it, whoever opens the store.
        self.address_key = address_key
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(readonly=True), expire_on_commit=False
        )
        # SQLite has one writer at a time and its busy handler makes waiting writers poll with growing
        # sleeps (up to 100 ms each): writers of this process queue on a lock instead and start the moment
        # the previous one commits. Other processes still queue on busy_timeout.
        self._one_writer = threading.RLock() if self.dialect == "sqlite" else None

    async def call(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking store call of the worker (activities, router): on a thread, so that the event loop
        goes on serving while the store answers. A simulation (one process per core, its own SQLite file)
        makes its calls inline instead: there, threads only pass the GIL back and forth (inline, 1,000 simulated
        leads took a sixth less time: docs/performance.md, session 6)."""
        if self.calls_inline:
            return work(*args, **kwargs)
        return await asyncio.to_thread(work, *args, **kwargs)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._one_writer or nullcontext(), self._sessions() as session, session.begin():
            session.info["address_key"] = self.address_key
            yield session

    def retrying(self, work: Callable[[Session], T], attempts: int = 3) -> T:
        """`work(session)` in a transaction, run again on a new connection when the one under it broke (a
        dropped connection, a restarted or failed-over PostgreSQL). Only for work that is safe to repeat:
        a commit whose answer was lost may have happened."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as session:
                    return work(session)
            except DBAPIError as error:
                if not error.connection_invalidated or attempt == attempts:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read_sessions() as session, session.begin():
            session.info["address_key"] = self.address_key
            yield session

    def checkpoint(self, patience: float = 5.0) -> bool:
        """SQLite: fold the WAL into the database file and truncate it, so that the earlier versions of the
        pages an erase just overwrote are gone from the disk too. Waits up to `patience` seconds for readers
        of other processes to move on; False if they did not (the frames go at a later checkpoint). A
        server database (PostgreSQL) answers True: what it keeps is its own (docs/operations.md)."""
        if self.dialect != "sqlite":
            return True
        deadline = time.monotonic() + patience
        with self._one_writer or nullcontext(), closing(self.engine.raw_connection()) as connection:
            driver = connection.driver_connection
            assert driver is not None
            driver.execute(f"PRAGMA busy_timeout={int(patience * 1000)}")
            try:
                while True:
                    busy, _, _ = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    if not busy:
                        return True
                    if time.monotonic() > deadline:
                        log.warning("the store's WAL was not truncated: readers in other processes held it")
                        return False
                    time.sleep(0.05)
            finally:
                driver.execute("PRAGMA busy_timeout=30000")

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (what `leadflow db upgrade` runs)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["engine"] = self.engine
        command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()
