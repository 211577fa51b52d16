"""The assessment lane: a few threads of its own, urgent calls (a demo request) before the page views
waiting, and a cancelled call never keeps a thread from the others."""

from __future__ import annotations

import asyncio
import threading

from activities.leads import LeadActivities
from leadflow.contracts import AssessLeadInput
from leadflow.platform.lanes import PriorityLane
from leadflow.platform.runtime import Runtime


class Gate:
    """Blocks the lane's threads until opened; notes what ran, in order, and how many ran at once."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.order: list[str] = []
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def work(self, name: str, wait: bool = True) -> str:
        with self._lock:
            self.order.append(name)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        if wait:
            self.opened.wait(timeout=10)
        with self._lock:
            self.running -= 1
        return name


async def started(lane: PriorityLane, gate: Gate, name: str, urgent: bool = False) -> asyncio.Task[str]:
    task = asyncio.create_task(lane.run(lambda: gate.work(name), urgent=urgent))
    await asyncio.sleep(0.05)  # queued (or running) before the next one arrives
    return task


async def test_no_more_than_its_threads_run_at_once() -> None:
    lane, gate = PriorityLane(2, "test"), Gate()
    tasks = [await started(lane, gate, f"page view {n}") for n in range(5)]
    assert gate.most_at_once == 2
    gate.opened.set()
    assert await asyncio.gather(*tasks) == [f"page view {n}" for n in range(5)]
    assert gate.most_at_once == 2


async def test_an_urgent_call_goes_before_every_call_still_waiting() -> None:
    lane, gate = PriorityLane(1, "test"), Gate()
    tasks = [await started(lane, gate, name) for name in ("page view 1", "page view 2", "page view 3")]
    tasks.append(await started(lane, gate, "demo request", urgent=True))
    gate.opened.set()
    await asyncio.gather(*tasks)
    # The first page view had the thread already; the demo request overtook the two waiting.
    assert gate.order == ["page view 1", "demo request", "page view 2", "page view 3"]


async def test_a_cancelled_call_leaves_its_turn_to_the_next() -> None:
    lane, gate = PriorityLane(1, "test"), Gate()
    running = await started(lane, gate, "running")
    cancelled = await started(lane, gate, "cancelled")
    waiting = await started(lane, gate, "waiting")
    cancelled.cancel()
    gate.opened.set()
    assert await running == "running"
    assert await asyncio.wait_for(waiting, 5) == "waiting"
    assert await asyncio.wait_for(lane.run(lambda: gate.work("later", wait=False)), 5) == "later"
    assert "cancelled" not in gate.order


def test_what_may_make_a_lead_sales_ready_is_urgent(runtime: Runtime) -> None:
    """The shipped scoring model hands off at once on a demo request; an MQL is one event from SQL."""
    activities = LeadActivities(runtime)

    def urgent(event_types: list[str], stage: str) -> bool:
        return activities.may_hand_off(AssessLeadInput(1, [1], event_types=event_types, stage=stage))

    assert urgent(["demo_requested"], "lead")
    assert urgent(["page_viewed"], "mql")
    assert not urgent(["page_viewed"], "lead")
    assert not urgent(["page_viewed", "ebook_downloaded"], "")  # a lead not assessed yet
