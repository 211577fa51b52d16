"""Benchmark: how much of the simulated 30-day campaign (bench/sequences.py) is Temporal's own work.

The campaign is played twice, each time by two processes with half of the leads each, as `leadflow simulate`
shares it on 2 CPUs (each process with its own time-skipping server, worker and SQLite store):

1. `as_built`: as it is;
2. `stand_ins`: the same workflows, timers, signals, child workflows and activities, but what the
   activities do is replaced by stand-ins that answer at once. A send answers "sent" (no store, template or
   SMTP), journal and enrollment writes write nothing, and a cooling rescore repeats the lead's first
   assessment, cooling again 7 days on (the real scoring model cools these leads on days 7, 14, 21 and 28).
   Assessments of new events stay real: they enroll the lead and start its sequence.

What `stand_ins` takes is the floor: the time-skipping servers, the SDK's workers and the harness, which no
work of ours can go below. Figures go to stdout as JSON, progress to stderr.

    .venv/bin/python bench/temporal_floor.py > result.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import multiprocessing
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_and_speed_to_lead import bench_parser, machine, run_bench
from sequences import CAMPAIGN

from activities.leads import LeadActivities
from activities.sending import SendActivities
from leadflow.content.loader import load_content
from leadflow.contracts import AssessLeadInput, AssessLeadResult, SendResult
from leadflow.platform import clock
from leadflow.platform.settings import PROJECT_ROOT
from leadflow.sequences.simulation import Script, prepare_player_process, simulate

log = logging.getLogger("bench")
COOLING_EVERY = timedelta(days=7)
LAST_COOLING = timedelta(days=28)


def use_stand_ins() -> None:
    """Replace the activities' work, keeping their names and signatures (what the workflows call)."""
    first: dict[int, tuple[datetime, AssessLeadResult]] = {}
    assess = LeadActivities._assess

    def assess_or_repeat(self: LeadActivities, request: AssessLeadInput) -> AssessLeadResult:
        as_of = request.as_of or clock.now()
        if request.event_ids or request.lead_id not in first:
            result = assess(self, request)
            first.setdefault(request.lead_id, (as_of, result))
            return result
        started, result = first[request.lead_id]
        cooled = (as_of - started) // COOLING_EVERY + 1
        later = started + cooled * COOLING_EVERY
        return dataclasses.replace(
            result, to_start=[], next_rescore_at=later if later - started <= LAST_COOLING else None
        )

    async def send_message(self: SendActivities, request: Any) -> SendResult:
        return SendResult(status="sent")

    def write_nothing() -> Any:
        async def stand_in(self: SendActivities, request: Any) -> None:
            return None

        return stand_in

    LeadActivities._assess = assess_or_repeat  # type: ignore[method-assign]
    for name, stand_in in [
        ("send_message", send_message),
        ("record_step", write_nothing()),
        ("record_steps", write_nothing()),
        ("finish_enrollment", write_nothing()),
    ]:
        real = getattr(SendActivities, name)
        stand_in.__temporal_activity_definition = real.__temporal_activity_definition  # type: ignore[attr-defined]
        setattr(SendActivities, name, stand_in)


def play_share(leads: int, stand_ins: bool) -> None:
    """One process's half of the campaign (its leads are numbered 1..leads, like every other share's), set
    up as `leadflow simulate` sets up each of its processes."""
    prepare_player_process()
    if stand_ins:
        use_stand_ins()
    asyncio.run(
        simulate(
            load_content(PROJECT_ROOT),
            "ebook_follow_up",
            Script.model_validate(CAMPAIGN),
            leads,
            lambda line: None,
            processes=1,
        )
    )


def play(leads: int, processes: int, stand_ins: bool) -> float:
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    players = [
        context.Process(target=play_share, args=(leads // processes, stand_ins)) for _ in range(processes)
    ]
    for player in players:
        player.start()
    for player in players:
        player.join()
        if player.exitcode != 0:
            raise RuntimeError(f"a simulation process failed (exit code {player.exitcode})")
    return round(time.perf_counter() - started, 1)


async def run(options: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"benchmark": "temporal_floor", "machine": machine(), "leads": options.leads}
    for label, stand_ins in [("as_built", False), ("stand_ins", True)]:
        wall = await asyncio.to_thread(play, options.leads, options.processes, stand_ins)
        log.info("%s: %.1f s", label, wall)
        figures[f"{label}_wall_seconds"] = wall
    figures["temporal_share"] = round(figures["stand_ins_wall_seconds"] / figures["as_built_wall_seconds"], 2)
    return figures


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--leads", type=int, default=1000, help="leads in the simulated campaign")
    parser.add_argument("--processes", type=int, default=2, help="simulation processes, each with a share")
    run_bench(parser, run)


if __name__ == "__main__":
    main()
