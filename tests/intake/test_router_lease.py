"""Several worker processes, one router: only the holder of the router lease drains the outbox (two would
race one lead's signals out of order), and when it dies another takes over once its lease lapses."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment

from leadflow.intake.ingest import EventIn, ingest_events
from leadflow.intake.router import OutboxRouter
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Outbox
from tests.support.helpers import eventually


def waiting(runtime: Runtime) -> int:
    with runtime.db.read() as session:
        return int(session.scalar(select(func.count(Outbox.id))) or 0)


async def test_a_standby_router_takes_over_when_the_holder_dies_and_a_clean_stop_hands_over_at_once(
    runtime: Runtime, temporal: WorkflowEnvironment
) -> None:
    def router(lease_seconds: float) -> OutboxRouter:
        return OutboxRouter(
            runtime.db, temporal.client, runtime.settings, lease=timedelta(seconds=lease_seconds)
        )

    ingest_events(
        runtime.db, [EventIn(id=f"e-{n}", type="page_viewed", email=f"p{n}@lease.test") for n in range(5)]
    )
    crashed = router(1.5)
    assert await asyncio.to_thread(crashed._take_lease)  # then its process is SIGKILLed: never released

    survivor, stop = router(0.6), asyncio.Event()
    routing = asyncio.create_task(survivor.run(stop))
    await asyncio.sleep(0.5)
    assert (survivor.routed, waiting(runtime)) == (0, 5)  # standing by: the lease is still the dead one's
    await eventually(lambda: survivor.routed == 5 and waiting(runtime) == 0, timeout=10)

    another = router(60)
    assert not await asyncio.to_thread(another._take_lease)  # the survivor holds it now
    stop.set()
    await routing
    assert await asyncio.to_thread(another._take_lease)  # released on a clean stop: no wait
