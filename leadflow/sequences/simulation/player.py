"""Plays a script against a running time-skipping environment and a runtime (store, content, SMTP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.testing import WorkflowEnvironment

from leadflow.intake.ingest import EventIn, ingest_events, upsert_lead
from leadflow.intake.router import OutboxRouter
from leadflow.messaging.push_subscriptions import save_subscription
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Outbox
from leadflow.sequences.simulation.script import Script, simulated_email, simulated_subscription
from leadflow.sequences.simulation.timeline import SimulationReport, build_report

SETTLE_TIMEOUT = 60.0
SKIP_TIMEOUT = timedelta(hours=1)


class Simulation:
    """Plays a script against a running time-skipping environment and a runtime (store, content, SMTP)."""

    def __init__(
        self, env: WorkflowEnvironment, runtime: Runtime, progress: Callable[[str], None] = print
    ) -> None:
        self.env, self.runtime, self.progress = env, runtime, progress
        self._offset = timedelta(0)

    def _now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    async def _sync_clock(self) -> datetime:
        server = await self.env.get_current_time()
        self._offset = server - datetime.now(UTC)
        return server

    async def run(
        self, sequence_id: str, script: Script, leads: int, numbers: Sequence[int] | None = None
    ) -> SimulationReport:
        """Plays `script` for the simulated leads `numbers` (all of 1..`leads` by default) of a campaign of
        `leads`: shares and lead lists in the script count over the whole campaign."""
        from worker import running_worker

        wall = time.perf_counter()
        start = await self._sync_clock()
        with clock.following(self._now):
            chosen = range(1, leads + 1) if numbers is None else numbers
            emails = {number: simulated_email(number) for number in chosen}
            for number, email in emails.items():
                lead_in, push = script.lead_in(number, email)
                upsert_lead(self.runtime.db, lead_in)
                if push:
                    save_subscription(self.runtime.db, simulated_subscription(email))
            async with running_worker(self.env.client, self.runtime) as router:
                moments = sorted({event.at for event in script.events})
                for moment in moments:
                    await self._advance_to(start + moment)
                    batch = [
                        EventIn(
                            id=f"sim-{index}-{number}",
                            type=event.type,
                            email=email,
                            timestamp=start + moment,
                            properties=event.properties_at(start),
                        )
                        for index, event in enumerate(script.events)
                        if event.at == moment
                        for number, email in emails.items()
                        if event.done_by(number, leads)
                    ]
                    for chunk in range(0, len(batch), 1000):
                        ingest_events(self.runtime.db, batch[chunk : chunk + 1000])
                    router.wake()
                    await self._settle(router)
                    self.progress(f"day {moment / timedelta(days=1):.2f}: {len(batch)} event(s) played")
                await self._advance_to(start + script.horizon)
                await self._settle(router)
        report = build_report(self.runtime.db, sequence_id, start, script.horizon)
        report.wall_seconds = time.perf_counter() - wall
        return report

    async def _advance_to(self, moment: datetime) -> None:
        now = await self._sync_clock()
        if moment > now:
            await self._skip(moment - now)
            await self._sync_clock()

    async def _skip(self, duration: timedelta) -> None:
        """The server skips from timer to timer, running what each one wakes before the next: with many leads
        that takes a while, longer than the default deadline of one call."""
        request = SleepRequest()
        request.duration.FromTimedelta(duration)
        await self.env.client.test_service.unlock_time_skipping_with_sleep(request, timeout=SKIP_TIMEOUT)

    async def _settle(self, router: OutboxRouter) -> None:
        """Until the outbox is drained and what it started has run: the test server holds its clock while a
        workflow task or an activity is outstanding, so a short sleep returns once all is quiet."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while await asyncio.to_thread(self._outbox_depth):
            router.wake()
            if time.monotonic() > deadline:
                self.progress(f"warning: events still waiting to be routed after {SETTLE_TIMEOUT:.0f}s")
                return
            await asyncio.sleep(0.02)
        await self._skip(timedelta(seconds=1))
        await self._sync_clock()

    def _outbox_depth(self) -> int:
        with self.runtime.db.read() as session:
            return int(session.scalar(select(func.count(Outbox.id))) or 0)
