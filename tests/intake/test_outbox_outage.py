"""Temporal goes away for a while: the API keeps accepting events (each durable before its 202), the outbox
grows and /v1/health shows the routing lag rising; when Temporal is back, the router catches up and every
lead gets its email, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from leadflow.platform.converter import data_converter
from leadflow.platform.runtime import Runtime
from tests.support.helpers import Inbox, eventually, free_port, running_stack, temporal_cli


async def dev_server(port: int, database: Path) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli("temporal"),
        data_converter=data_converter,
        ui=False,
        port=port,
        dev_server_database_filename=str(database),
        dev_server_log_level="error",
    )


async def test_events_accepted_while_temporal_is_down_are_routed_once_it_is_back(
    runtime: Runtime, inbox: Inbox, tmp_path: Path
) -> None:
    port, database = free_port(), tmp_path / "temporal.db"
    temporal = await dev_server(port, database)
    try:
        async with running_stack(runtime, temporal.client, inbox) as stack:
            await temporal.shutdown()  # Temporal is gone; the worker and router keep retrying

            readers = [f"reader{n}@outage.test" for n in range(10)]
            for n, email in enumerate(readers):
                answer = await stack.api.post(
                    "/v1/events", json={"id": f"outage-{n}", "type": "ebook_downloaded", "email": email}
                )
                assert answer.status_code == 202, answer.text
            await asyncio.sleep(1.5)
            health = (await stack.api.get("/v1/health")).json()
            assert health["outbox"]["depth"] == 10 and health["outbox"]["lag_seconds"] >= 1
            assert inbox.messages == []

            temporal = await dev_server(port, database)  # back, on its own database file
            await eventually(lambda: all(inbox.to(email) for email in readers), timeout=60)
            health = (await stack.api.get("/v1/health")).json()
            assert health["outbox"] == {"depth": 0, "lag_seconds": 0.0}
            await asyncio.sleep(1)  # a repeat would arrive by now
            assert sorted(m["To"] for m in inbox.messages) == sorted(readers)  # one each
    finally:
        await temporal.shutdown()
