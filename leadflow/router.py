"""The outbox router: drains accepted events, in order per lead, into each lead's workflow.

Everything waiting for one lead goes in one signal-with-start (bursts coalesce). A row is deleted only once
its signal was delivered, so when Temporal is unreachable events wait in the outbox and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from temporalio.client import Client

from leadflow import clock
from leadflow.contracts import EventRef, LeadWorkflowInput, NewEvents
from leadflow.settings import Settings
from leadflow.store import Database
from leadflow.store.models import Event, Outbox
from workflows.lead import LeadWorkflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxStatus:
    depth: int
    lag_seconds: float


def outbox_status(db: Database) -> OutboxStatus:
    """How many events wait to be routed, and how long the oldest has waited (the routing lag)."""
    with db.read() as session:
        depth, oldest = session.execute(select(func.count(Outbox.id), func.min(Outbox.created_at))).one()
    lag = (clock.now() - oldest).total_seconds() if oldest else 0.0
    return OutboxStatus(depth=depth, lag_seconds=max(lag, 0.0))


class OutboxRouter:
    def __init__(self, db: Database, client: Client, settings: Settings, batch_size: int = 1000) -> None:
        self.db, self.client, self.settings, self.batch_size = db, client, settings, batch_size
        self._wake = asyncio.Event()
        self._concurrency = asyncio.Semaphore(64)
        self.routed = 0

    def wake(self) -> None:
        """Called (thread-safely via the loop) when events were just accepted in this process."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = self.settings.router_poll_seconds
        while not stop.is_set():
            failing = False
            try:
                routed = await self.drain_once()
                backoff = self.settings.router_poll_seconds
            except Exception as error:  # the store or Temporal is down: keep the rows, try again later
                log.warning("outbox routing paused: %s", error)
                routed, backoff, failing = 0, min(backoff * 2, 5.0), True
            if routed < self.batch_size:
                self._wake.clear()
                # While failing, new events must not cut the backoff short (they would retry every signal).
                wakers = [stop.wait()] if failing else [self._wake.wait(), stop.wait()]
                waits = [asyncio.ensure_future(waker) for waker in wakers]
                await asyncio.wait(waits, timeout=backoff, return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()

    async def drain_once(self) -> int:
        """Route one batch of the outbox; returns how many rows were delivered."""
        rows = await asyncio.to_thread(self._read_batch)
        if not rows:
            return 0
        by_lead: dict[int, list[tuple[int, EventRef]]] = defaultdict(list)
        for outbox_id, lead_id, event in rows:
            by_lead[lead_id].append((outbox_id, event))
        results = await asyncio.gather(*(self._signal(lead_id, items) for lead_id, items in by_lead.items()))
        delivered = [outbox_id for ids in results for outbox_id in ids]
        if delivered:
            await asyncio.to_thread(self._delete, delivered)
        self.routed += len(delivered)
        if len(delivered) < len(rows):
            raise RuntimeError(f"{len(rows) - len(delivered)} events could not be routed yet")
        return len(delivered)

    def _read_batch(self) -> list[tuple[int, int, EventRef]]:
        with self.db.read() as session:
            rows = session.execute(
                select(Outbox.id, Outbox.lead_id, Event.id, Event.type, Event.occurred_at, Event.properties)
                .join(Event, Event.id == Outbox.event_id)
                .order_by(Outbox.id)
                .limit(self.batch_size)
            ).all()
        return [(row[0], row[1], EventRef(row[2], row[3], row[4], row[5])) for row in rows]

    def _delete(self, outbox_ids: list[int]) -> None:
        with self.db.transaction() as session:
            for start in range(0, len(outbox_ids), 500):
                session.execute(delete(Outbox).where(Outbox.id.in_(outbox_ids[start : start + 500])))

    async def _signal(self, lead_id: int, items: list[tuple[int, EventRef]]) -> list[int]:
        async with self._concurrency:
            try:
                await self.client.start_workflow(
                    LeadWorkflow.run,
                    LeadWorkflowInput(lead_id),
                    id=self.settings.lead_workflow_id(lead_id),
                    task_queue=self.settings.task_queue,
                    start_signal="events",
                    start_signal_args=[NewEvents([event for _, event in items])],
                )
            except Exception as error:
                log.warning("could not signal lead %s: %s", lead_id, error)
                return []
        return [outbox_id for outbox_id, _ in items]
