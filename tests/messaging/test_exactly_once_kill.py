"""Exactly once under the worst timing: the worker process is SIGKILLed after the SMTP server has the message
and before the activity could report it sent. Temporal retries the activity on another worker; the claim
left in the store says the first attempt may have sent it, so the retry does not send again.

It runs on the dev server in real time (~20 s): the time-temporal server does not skip time while an
activity is outstanding, and noticing the dead worker is exactly the send activity's heartbeat timeout."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from leadflow.contracts import SequenceInput
from leadflow.intake.ingest import LeadIn, upsert_lead
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT
from leadflow.platform.store.models import Message
from leadflow.sequences.model import Sequence
from tests.support.helpers import eventually, free_port
from worker import running_worker
from workflows.sequence import SequenceWorkflow

LEAD = "kai@initech.test"


@dataclass
class HoldingInbox:
    """Keeps each message, then holds its "250 OK" until released: the sender cannot know it went out."""

    messages: list[EmailMessage] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        self.received.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        return "250 OK"


@pytest.fixture
def holding_smtp() -> Iterator[tuple[HoldingInbox, int]]:
    inbox, port = HoldingInbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    inbox.release.set()
    controller.stop()


def worker_process(
    runtime: Runtime, temporal_address: str, smtp_port: int, data_dir: Path
) -> subprocess.Popen[bytes]:
    """`leadflow worker` in its own process, on this test's store, task queue and SMTP server."""
    settings = runtime.settings
    environment = {
        **os.environ,
        "LEADFLOW_DATABASE_URL": runtime.db.url,
        "LEADFLOW_TEMPORAL_ADDRESS": temporal_address,
        "LEADFLOW_TASK_QUEUE": settings.task_queue,
        "LEADFLOW_WORKFLOW_ID_PREFIX": settings.workflow_id_prefix,
        "LEADFLOW_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}?pool=0",
        "LEADFLOW_SECRET_KEY": settings.secret_key,
        "LEADFLOW_PUBLIC_URL": settings.public_url,
        "LEADFLOW_CONTENT_DIR": str(PROJECT_ROOT),
        "LEADFLOW_DATA_DIR": str(data_dir),
    }
    return subprocess.Popen(
        [sys.executable, "-c", "import asyncio, worker; asyncio.run(worker.main())"],
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_a_worker_killed_mid_send_leaves_one_message_at_the_peer(
    temporal: WorkflowEnvironment, runtime: Runtime, holding_smtp: tuple[HoldingInbox, int], tmp_path: Path
) -> None:
    if runtime.db.dialect != "sqlite":
        pytest.skip("one backend is enough for the process kill; the claim itself is tested on both")
    inbox, port = holding_smtp
    lead, _ = upsert_lead(runtime.db, LeadIn(email=LEAD, properties={"first_name": "Kai"}))
    one_email = Sequence.model_validate(
        {
            "id": "welcome",
            "name": "welcome",
            "segment": "ebook_downloaders",
            "steps": [{"send": {"channel": "email", "template": "ebook_delivery"}}],
        }
    )
    address = temporal.client.service_client.config.target_host
    process = worker_process(runtime, address, port, tmp_path)
    try:
        handle = await temporal.client.start_workflow(
            SequenceWorkflow.run,
            SequenceInput(lead.id, one_email),
            id=f"{runtime.settings.workflow_id_prefix}welcome-{lead.id}",
            task_queue=runtime.settings.task_queue,
        )
        await eventually(inbox.received.is_set, timeout=60, message="the worker process never sent the email")
        process.kill()  # SIGKILL: no cleanup, no chance to report anything
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    inbox.release.set()
    assert _statuses(runtime) == ["sending"]  # the claim the dead worker left behind

    async with running_worker(temporal.client, runtime):  # another worker takes over after the timeout
        assert await asyncio.wait_for(handle.result(), timeout=60) == "completed"
    assert len(inbox.messages) == 1
    assert inbox.messages[0]["To"] == LEAD
    assert _statuses(runtime) == ["uncertain"]  # recorded as possibly sent, never sent again


def _statuses(runtime: Runtime) -> list[str]:
    with runtime.db.read() as session:
        return list(session.scalars(select(Message.status)))
