"""The outbox router: drains accepted events, in order per lead, into each lead's workflow.

Everything waiting for one lead goes in one signal-with-start (bursts coalesce). A row is deleted only once
its signal was delivered, so when Temporal is unreachable events wait in the outbox and nothing is lost.
Events that change nothing the lead's workflow acts on (a blog page view of a lead in no sequence that waits
for one) are assessed in the store instead and never signalled: leadflow.intake.inert decides, and deletes their
rows in the assessment's transaction. A drain takes at most LEAD_EVENTS_PER_DRAIN of one lead's events, so
a runaway lead (a bot posting thousands of events) waits behind its own backlog, never other leads.
Every worker process runs a router, but only the holder of the router lease drains: two routers would race
each other's signals for one lead out of order. When the holder dies, another takes over once its lease
lapses (`LEASE`).

A row whose event can never be delivered (it cannot be encoded for Temporal) is set aside as a dead letter
(leadflow.intake.deadletters) instead of holding up the rest; a row that fails for any other reason (Temporal
unreachable, overloaded) stays in the outbox and is tried again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, or_, select, update
from temporalio.client import Client

from leadflow.contracts import EventRef, LeadWorkflowInput, NewEvents, signal_name
from leadflow.intake.deadletters import SetAside, dead_letter_count, describe, set_aside
from leadflow.intake.inert import InertEvents
from leadflow.platform import clock
from leadflow.platform.converter import LeadPayloadCodec
from leadflow.platform.settings import Settings
from leadflow.platform.store import Database
from leadflow.platform.store.models import Event, Lease, Outbox
from leadflow.platform.store.upsert import insert_ignoring_conflicts
from workflows.lead import LeadWorkflow

log = logging.getLogger(__name__)
ROUTER_LEASE = "outbox-router"
LEASE = timedelta(seconds=10)  # how long a dead router holds up routing, at most
CONCURRENCY = 64  # signal-with-starts in flight at once
# Events per signal: with properties of at most 16 KiB (leadflow.intake.ingest), a signal stays under 1 MB, within
# Temporal's 2 MB payload limit however many of one lead's events wait.
SIGNAL_EVENTS = 50
# One lead's events per drain: one signal (or one assessment in the store) each, whatever one lead sent.
LEAD_EVENTS_PER_DRAIN = SIGNAL_EVENTS
# The store's assessments of possibly inert events run beside the drains (`_assess_in_store`), a few at a
# time on a thread: this long at most, then the event loop gets its turn (the API, signals, the worker).
INERT_SECONDS_PER_CALL = 0.05
# Leads waiting for a store assessment at most; beyond, a drain signals their events (always correct, only
# dearer), so a store that falls far behind never makes the router's reads exclude thousands of leads.
INERT_LEADS_QUEUED = 1000
_OLDEST_ROWS = (
    select(Outbox.id, Outbox.lead_id, Event.id, Event.type, Event.occurred_at, Event.properties)
    .join(Event, Event.id == Outbox.event_id)
    .order_by(Outbox.id)
)


@dataclass(frozen=True)
class OutboxStatus:
    depth: int
    lag_seconds: float
    dead_letters: int = 0


def outbox_status(db: Database) -> OutboxStatus:
    """How many events wait to be routed, how long the oldest has waited (the routing lag), and how many
    were set aside as dead letters."""
    with db.read() as session:
        depth, oldest = session.execute(select(func.count(Outbox.id), func.min(Outbox.created_at))).one()
    lag = (clock.now() - oldest).total_seconds() if oldest else 0.0
    return OutboxStatus(depth=depth, lag_seconds=max(lag, 0.0), dead_letters=dead_letter_count(db))


class OutboxRouter:
    def __init__(
        self,
        db: Database,
        client: Client,
        settings: Settings,
        batch_size: int = 1000,
        lease: timedelta = LEASE,
        inert: InertEvents | None = None,
    ) -> None:
        self.db, self.client, self.settings, self.batch_size = db, client, settings, batch_size
        self.inert = inert  # None: every event is signalled
        self._wake = asyncio.Event()
        self._concurrency = asyncio.Semaphore(CONCURRENCY)
        self.routed = 0
        self.signals = 0  # signal-with-starts sent
        self._more_waiting = False  # the last read left a runaway lead's rows, due now
        self._held_to_share: set[int] = set()  # leads of the last read with more rows than their share
        # Leads whose events wait for (or are in) a store assessment, oldest first: drains skip their newer
        # rows until it is done, so one lead's events are still routed in order.
        self._in_store: dict[int, list[tuple[int, EventRef]]] = {}
        self._store_work = asyncio.Event()
        self.lease = lease
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease_renew_at = 0.0  # time.monotonic() after which the lease is renewed before draining

    def wake(self) -> None:
        """Called (thread-safely via the loop) when events were just accepted in this process."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = self.settings.router_poll_seconds
        assessing = asyncio.create_task(self._assess_in_store(stop)) if self.inert else None
        try:
            while not stop.is_set():
                failing = standby = False
                try:
                    if await self._hold_lease():
                        routed = await self.drain_once()
                        backoff = self.settings.router_poll_seconds
                    else:  # another process routes; look again when its lease could have lapsed
                        routed, backoff, standby = 0, self.lease.total_seconds() / 3, True
                except Exception as error:  # the store or Temporal is down: keep the rows, try again later
                    log.warning("outbox routing paused: %s", error)
                    routed, backoff, failing = 0, min(backoff * 2, 5.0), True
                more_due = routed >= self.batch_size or (self._more_waiting and not failing and not standby)
                self._more_waiting = False
                if not more_due:
                    self._wake.clear()
                    # While failing, new events must not cut the backoff short (they would retry every
                    # signal); on standby, they are the lease holder's to route.
                    wakers = [stop.wait()] if failing or standby else [self._wake.wait(), stop.wait()]
                    waits = [asyncio.ensure_future(waker) for waker in wakers]
                    await asyncio.wait(waits, timeout=backoff, return_when=asyncio.FIRST_COMPLETED)
                    for waiting in waits:
                        waiting.cancel()
        finally:
            if assessing is not None:
                self._store_work.set()
                await assessing
            await self.db.call(self._release_lease)

    async def _hold_lease(self) -> bool:
        """Whether this router holds the lease now (taking or renewing it in the store when due)."""
        if time.monotonic() < self._lease_renew_at:
            return True
        started = time.monotonic()
        if not await self.db.call(self._take_lease):
            return False
        # Renewed when a third of it is used up: a slow store never lets it lapse while this router lives.
        self._lease_renew_at = started + self.lease.total_seconds() / 3
        return True

    def _take_lease(self) -> bool:
        now = clock.now()
        with self.db.transaction() as session:
            row = {"name": ROUTER_LEASE, "holder": self.holder, "expires_at": now + self.lease}
            insert_ignoring_conflicts(session, Lease, [row], ["name"])
            taken = session.execute(
                update(Lease)
                .where(Lease.name == ROUTER_LEASE)
                .where(or_(Lease.holder == self.holder, Lease.expires_at <= now))
                .values(holder=self.holder, expires_at=now + self.lease)
            )
            return bool(taken.rowcount)  # type: ignore[attr-defined]

    def _release_lease(self) -> None:
        """On a clean stop another router may take over at once."""
        self._lease_renew_at = 0.0
        try:
            with self.db.transaction() as session:
                session.execute(
                    update(Lease)
                    .where(Lease.name == ROUTER_LEASE, Lease.holder == self.holder)
                    .values(expires_at=clock.now())
                )
        except Exception as error:  # the store is down: the lease lapses by itself
            log.warning("could not release the router lease: %s", error)

    async def drain_once(self) -> int:
        """Route one batch of the outbox; returns how many rows it took on: signalled or set aside, or handed
        to the store's assessment (`_assess_in_store`, which counts them in `routed` once done)."""
        rows = await self.db.call(self._read_batch, set(self._in_store))
        if not rows:
            return 0
        by_lead: dict[int, list[tuple[int, EventRef]]] = defaultdict(list)
        for outbox_id, lead_id, event in rows:
            by_lead[lead_id].append((outbox_id, event))
        room = INERT_LEADS_QUEUED - len(self._in_store)
        candidates = list(self.inert.candidates(by_lead)) if self.inert and room > 0 else []
        # A lead held to its share (a bot) goes last: its long history must not hold up the leads behind it.
        candidates.sort(key=lambda lead_id: lead_id in self._held_to_share)
        for lead_id in candidates[:room]:
            self._in_store[lead_id] = by_lead.pop(lead_id)
        if self._in_store:
            self._store_work.set()
        queued = len(rows) - sum(len(items) for items in by_lead.values())
        await self._load_keys(by_lead)
        results = await asyncio.gather(*(self._signal(lead_id, items) for lead_id, items in by_lead.items()))
        done = await self._settle(results)
        if done + queued < len(rows):
            raise RuntimeError(f"{len(rows) - done - queued} events could not be routed yet")
        return done + queued

    async def _settle(self, results: list[tuple[list[int], list[SetAside]]]) -> int:
        """Delete the rows signalled, set aside those never deliverable; how many rows that was."""
        delivered = [outbox_id for ids, _ in results for outbox_id in ids]
        poisoned = [letter for _, letters in results for letter in letters]
        if delivered:
            await self.db.call(self._delete, delivered)
        if poisoned:
            log.error("%s events can never be routed: set aside as dead letters", len(poisoned))
            await self.db.call(set_aside, self.db, poisoned)
        self.routed += len(delivered)
        return len(delivered) + len(poisoned)

    async def _assess_in_store(self, stop: asyncio.Event) -> None:
        """Beside the drains: the leads they queued, oldest first, assessed in the store (leadflow.intake.inert);
        the events found not to be inert are signalled. A lead leaves the queue once done, and the router
        is woken for the rows it got meanwhile."""
        assert self.inert is not None
        while not stop.is_set() or self._in_store:
            if not self._in_store:
                self._store_work.clear()
                await self._store_work.wait()
                continue
            waiting = dict(self._in_store)
            try:
                deadline = time.monotonic() + INERT_SECONDS_PER_CALL
                decided = await self.db.call(self.inert.assess_until, waiting, deadline)
                to_signal = [(lead_id, d.items) for lead_id, d in decided.items() if d.inert is False]
                await self._load_keys(lead_id for lead_id, _ in to_signal)
                results = await asyncio.gather(
                    *(self._signal(lead_id, items) for lead_id, items in to_signal)
                )
                await self._settle(results)
            except Exception as error:  # the store or Temporal is down: the rows stay, drains read them again
                log.warning("assessing events in the store paused: %s", error)
                self._in_store.clear()
                await asyncio.sleep(1.0)
                continue
            self.routed += sum(len(d.items) for d in decided.values() if d.inert)
            for lead_id in decided:
                del self._in_store[lead_id]
            if stop.is_set():
                self._in_store.clear()  # what was not reached stays in the outbox for the next router
            self._wake.set()

    def _read_batch(self, busy: set[int]) -> list[tuple[int, int, EventRef]]:
        """The oldest rows, at most LEAD_EVENTS_PER_DRAIN of each lead, none of the `busy` leads (in a store
        assessment): past a lead's share, its rows are skipped and the read goes on (each lead's rows taken
        are still its oldest, in order)."""
        taken: list[tuple[int, int, EventRef]] = []
        per_lead: dict[int, int] = defaultdict(int)
        full: set[int] = set()
        after = 0
        with self.db.read() as session:
            while len(taken) < self.batch_size:
                wanted = self.batch_size - len(taken)
                query = _OLDEST_ROWS.where(Outbox.id > after)
                if full or busy:
                    query = query.where(Outbox.lead_id.not_in(full | busy))
                rows = session.execute(query.limit(wanted)).all()
                for row in rows:
                    if per_lead[row[1]] < LEAD_EVENTS_PER_DRAIN:
                        per_lead[row[1]] += 1
                        taken.append((row[0], row[1], EventRef(row[2], row[3], row[4], row[5])))
                    else:
                        full.add(row[1])
                if len(rows) < wanted:
                    break
                after = rows[-1][0]
        self._more_waiting = bool(full)  # drain again at once: the lead's next share is due
        self._held_to_share = full
        return taken

    def _delete(self, outbox_ids: list[int]) -> None:
        with self.db.transaction() as session:
            for start in range(0, len(outbox_ids), 500):
                session.execute(delete(Outbox).where(Outbox.id.in_(outbox_ids[start : start + 500])))

    async def _load_keys(self, lead_ids: Iterable[int]) -> None:
        """The data keys of the leads about to be signalled, in one read, not one per signal."""
        codec = self.client.data_converter.payload_codec
        if isinstance(codec, LeadPayloadCodec):
            await codec.keys.load(lead_ids)

    async def _signal(
        self, lead_id: int, items: list[tuple[int, EventRef]]
    ) -> tuple[list[int], list[SetAside]]:
        """Signal the lead's events, in order, SIGNAL_EVENTS at a time; returns the outbox rows delivered and
        those that never can be. After a signal that failed for another reason, the rest wait."""
        delivered: list[int] = []
        poisoned: list[SetAside] = []
        for start in range(0, len(items), SIGNAL_EVENTS):
            chunk = items[start : start + SIGNAL_EVENTS]
            error = await self._send(lead_id, chunk)
            if error is not None:
                unencodable = await self._unencodable(chunk)
                if not unencodable:  # Temporal unreachable or overloaded: these rows wait for the next try
                    log.warning("could not signal lead %s: %s", lead_id, error)
                    break
                poisoned += unencodable
                set_aside_ids = {letter.outbox_id for letter in unencodable}
                chunk = [item for item in chunk if item[0] not in set_aside_ids]
                if chunk and await self._send(lead_id, chunk) is not None:
                    break
            delivered += [outbox_id for outbox_id, _ in chunk]
        return delivered, poisoned

    async def _send(self, lead_id: int, items: list[tuple[int, EventRef]]) -> Exception | None:
        """One signal-with-start of these events; the error when it failed."""
        async with self._concurrency:
            try:
                await self.client.start_workflow(
                    LeadWorkflow.run,
                    LeadWorkflowInput(lead_id),
                    id=self.settings.lead_workflow_id(lead_id),
                    task_queue=self.settings.task_queue,
                    start_signal=signal_name(LeadWorkflow.events),
                    start_signal_args=[NewEvents([event for _, event in items])],
                )
            except Exception as error:
                return error
        self.signals += 1
        return None

    async def _unencodable(self, items: list[tuple[int, EventRef]]) -> list[SetAside]:
        """The rows whose event Temporal's data converter cannot encode: no retry can deliver them. (Only
        looked at once a signal failed; an outage leaves every event encodable.)"""
        poisoned = []
        for outbox_id, event in items:
            try:
                await self.client.data_converter.encode([NewEvents([event])])
            except Exception as error:
                poisoned.append(SetAside(outbox_id, describe(error)))
        return poisoned
