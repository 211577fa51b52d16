"""A lane of threads for one kind of blocking work, so that it cannot crowd out the rest.

Every store call of the worker's activities runs on a thread (`Database.call`: the loop's shared pool).
Rescoring is the bulk of them: under a stream of page views, dozens of assessments would queue in that pool
ahead of the few short writes of a hand-off, and each would hold SQLite's one writer for longer while they
all share the GIL. In their own lane, at most `threads` run at once; the shared pool stays free for sends
and hand-offs; and an urgent call (a lead that may be sales-ready) goes before every call still waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
URGENT, NORMAL = 0, 1


class PriorityLane:
    def __init__(self, threads: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._free = threads
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap: (priority, arrival, waiter)
        self._arrivals = itertools.count()

    async def run(self, work: Callable[[], T], urgent: bool = False) -> T:
        """`work()` on one of the lane's threads, once one is free and no more urgent call is waiting."""
        await self._take_slot(URGENT if urgent else NORMAL)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            self._give_slot()

    async def _take_slot(self, priority: int) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrivals), waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot just as it was cancelled
                self._give_slot()
            raise

    def _give_slot(self) -> None:
        """To the most urgent, earliest waiter still waiting; else back to the free ones."""
        while self._waiting:
            waiter = heapq.heappop(self._waiting)[2]
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
