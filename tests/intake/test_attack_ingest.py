"""Hostile input at the door, and what still cannot be delivered set aside, never blocking the rest.

Driven as an attacker would: over HTTP against the real API (uvicorn), the public tracking route with only
the sample site's public key. Properties nested deeper than the bound are refused with 422 naming the field at
every entrance (at 256 levels, near 5,000 where Python's json gives up, and at 100,000), never a 5xx; an
outbox row that Temporal's converter cannot encode (as an older version stored it) is set aside as a dead
letter while other leads' events reach their workflows, counted in /v1/health and handled with
`leadflow outbox dead-letters`; control characters in an email and push endpoints into the server's own
network are refused; a message that cannot be composed is not retried.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select
from temporalio.api.enums.v1 import EventType

from leadflow.http.app import create_app
from leadflow.http.bodylimit import MAX_BODY_DEPTH
from leadflow.http.inputs import MAX_DEPTH
from leadflow.intake.ingest import EventIn, ingest_events
from leadflow.messaging.providers import PermanentDeliveryError
from leadflow.messaging.providers.webpush import PrivateAddress, PublicAddressesOnly, PushTarget
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import DeadLetter, Event, Lead, Message, Outbox
from tests.http.test_api_limits import stored
from tests.support.browser import serving
from tests.support.helpers import API_KEY, Stack, channel_settings, eventually, free_port
from tests.support.peers import PushService

AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}
SITE_KEY, ORIGIN = "pk_dev_sample_site", "http://127.0.0.1:8080"
ANONYMOUS_ID = "attacker-browser-0001"
P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # As in production: push subscriptions to the loopback push service are not allowed here.
    return {**channel_settings(), "push_allow_loopback_for_tests": False}


@pytest.fixture
async def public(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API on a real socket (uvicorn), sending no key unless told to."""
    port = free_port()
    async with (
        serving(create_app(runtime), port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


def nested(levels: int) -> str:
    """JSON text of an object `levels` deep ({"a": {"a": … 1 …}}), built without recursing."""
    return '{"a":' * levels + "1" + "}" * levels


def entrances(properties: str) -> dict[str, tuple[str, str, str]]:
    """Every entrance taking free-form JSON: (path, body with `properties` in it, the field holding them)."""
    email = '"email": "mallory@evil.test"'
    event = f'{{"id": "deep-1", "type": "page_viewed", {email}, "properties": {properties}}}'
    subscription = (
        f'{{"endpoint": "https://push.example.net/x", "keys": {{"p256dh": "{P256DH}", "auth": "{AUTH}"}}}}'
    )
    return {
        "event": ("/v1/events", event, "properties"),
        "batch": ("/v1/events", f'{{"events": [{event}]}}', "events.0.properties"),
        "lead": ("/v1/leads", f'{{{email}, "properties": {properties}}}', "properties"),
        "identify": (
            "/v1/identify",
            f'{{"anonymous_id": "{ANONYMOUS_ID}", {email}, "properties": {properties}}}',
            "properties",
        ),
        "handoff": (
            "/v1/leads/mallory@evil.test/handoff",
            f'{{"action": "converted", "details": {properties}}}',
            "details",
        ),
        "push": (
            "/v1/push/subscriptions",
            f'{{{email}, "subscription": {subscription[:-1]}, "extra": {properties}}}}}',
            "subscription.extra",
        ),
        "collect events": (
            "/t/collect",
            f'{{"site": "{SITE_KEY}", "anonymous_id": "{ANONYMOUS_ID}", "events": [{{"id": "deep-event-1", '
            f'"type": "page_viewed", "properties": {properties}}}]}}',
            "events.0.properties",
        ),
        "collect identify": (
            "/t/collect",
            f'{{"site": "{SITE_KEY}", "anonymous_id": "{ANONYMOUS_ID}", "identify": {{{email}, '
            f'"properties": {properties}}}}}',
            "identify.properties",
        ),
    }


async def post(client: httpx.AsyncClient, path: str, body: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Origin": ORIGIN}
    if path.startswith("/v1/"):
        headers |= AUTHORIZED
    return await client.post(path, content=body.encode(), headers=headers)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 256, 5_000, 100_000])
async def test_properties_nested_too_deep_are_refused_at_every_entrance_naming_the_field(
    runtime: Runtime, public: httpx.AsyncClient, levels: int
) -> None:
    for name, (path, body, field) in entrances(nested(levels)).items():
        answer = await post(public, path, body)
        if path == "/t/collect" and len(body) > 32_768:  # the public route's size bound comes first
            assert answer.status_code == 413, (name, answer.text[:300])
            continue
        if name == "push" and levels <= MAX_BODY_DEPTH:  # a field the route ignores: only the body's bound
            assert answer.status_code == 404, (name, answer.text[:300])  # no such lead
            continue
        assert answer.status_code == 422, (name, levels, answer.status_code, answer.text[:300])
        [problem] = answer.json()["detail"]
        assert problem["field"].startswith(f"{field}.a.a"), (name, problem["field"][:200])
        assert problem["type"] == "too_deep" and "nested deeper than" in problem["message"], problem
    assert stored(runtime) == (0, 0, 0)


async def test_properties_within_the_bound_go_in(runtime: Runtime, public: httpx.AsyncClient) -> None:
    for name in ("event", "lead", "collect events"):
        path, body, _ = entrances(nested(MAX_DEPTH))[name]
        answer = await post(public, path, body)
        assert answer.status_code in (200, 201, 202), (name, answer.text[:300])
    assert stored(runtime)[1] == 2


async def test_deep_json_anywhere_in_a_body_is_never_a_server_error(public: httpx.AsyncClient) -> None:
    for body in ("[" * 5_000, "[" * 100_000 + "]" * 100_000, '{"site": ' + nested(5_000) + "}"):
        for path in ("/v1/events", "/v1/leads", "/v1/identify", "/t/collect", "/v1/push/subscriptions"):
            answer = await post(public, path, body)
            assert answer.status_code in (413, 422), (path, answer.status_code, answer.text[:300])


# --- dead letters ---------------------------------------------------------------------------------------


BATCH = 40  # the router reads this many outbox rows at once (1,000 in production: kept small to be quick)
HEAVY = 150  # events of 16 KB for one lead: 2.4 MB, over Temporal's 2 MB payload limit in one signal
POISONED = BATCH + 10  # more than a batch: before dead letters, they held up every lead behind them


def store_poisoned_events(runtime: Runtime, count: int) -> int:
    """What an older version accepted: events with properties nested 300 deep (Temporal's converter cannot
    encode them), written straight into the store with their outbox rows. Returns their lead's id."""
    properties = json.loads(nested(300))
    now = clock.now()
    with runtime.db.transaction() as session:
        lead = Lead(email="mallory@evil.test", properties={}, created_at=now, updated_at=now)
        session.add(lead)
        session.flush()
        ids = session.scalars(
            insert(Event).returning(Event.id),
            [
                {
                    "key": f"web:sample:poisoned-{n}",
                    "lead_id": lead.id,
                    "type": "page_viewed",
                    "occurred_at": now,
                    "received_at": now,
                    "properties": properties,
                }
                for n in range(count)
            ],
        ).all()
        session.execute(
            insert(Outbox),
            [{"lead_id": lead.id, "event_id": event_id, "created_at": now} for event_id in ids],
        )
        return lead.id


def leadflow_cli(runtime: Runtime, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`leadflow …` in a shell, on the test's store, as an operator runs it."""
    command = " ".join([str(Path(sys.executable).with_name("leadflow")), *arguments])
    environment = {**os.environ, "LEADFLOW_DATABASE_URL": runtime.db.url, "COLUMNS": "200"}
    return subprocess.run(
        command, shell=True, env=environment, capture_output=True, text=True, timeout=60, check=False
    )


async def health(stack: Stack) -> dict[str, Any]:
    answer = await stack.api.get("/v1/health")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_events_that_can_never_be_routed_are_set_aside_while_every_other_lead_flows(
    stack: Stack,
) -> None:
    runtime, stack.router.batch_size = stack.runtime, BATCH
    poisoned_lead = await asyncio.to_thread(store_poisoned_events, runtime, POISONED)
    answer = await stack.api.post(
        "/v1/events", json={"id": "after-the-poison", "type": "ebook_downloaded", "email": "ada@acme.test"}
    )
    assert answer.status_code == 202, answer.text
    stack.router.wake()

    await eventually(lambda: stack.inbox.to("ada@acme.test"), timeout=60, message="ada's email never came")
    status = await health(stack)
    assert status["dead_letters"] == POISONED and status["outbox"]["depth"] == 0, status
    assert (await stack.api.get(f"/v1/leads/{poisoned_lead}")).status_code == 200
    with runtime.db.read() as session:
        letters = session.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
        assert {letter.lead_id for letter in letters} == {poisoned_lead}
        first = letters[0]
        assert "mallory" not in first.error and first.error  # the converter's error, no personal data

    listed = leadflow_cli(runtime, "outbox", "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{POISONED} dead letter(s)" in listed.stdout and "page_viewed" in listed.stdout
    assert "mallory" not in listed.stdout

    retried = leadflow_cli(runtime, "outbox", "dead-letters", "retry", str(first.id))
    assert retried.returncode == 0 and "1 dead letter(s) back in the outbox" in retried.stdout, retried
    with runtime.db.read() as session:
        assert session.get(DeadLetter, first.id) is None
    stack.router.wake()

    async def set_aside_again() -> bool:
        status = await health(stack)
        return bool(status["dead_letters"] == POISONED and status["outbox"]["depth"] == 0)

    await eventually(set_aside_again, timeout=30, message="the retried dead letter was not set aside again")

    refused = leadflow_cli(runtime, "outbox", "dead-letters", "drop")
    assert refused.returncode == 2 and "give dead letter ids or --all" in refused.stderr, refused
    dropped = leadflow_cli(runtime, "outbox", "dead-letters", "drop", "--all")
    assert dropped.returncode == 0 and f"{POISONED} dead letter(s) dropped" in dropped.stdout, dropped
    assert (await health(stack))["dead_letters"] == 0
    with runtime.db.read() as session:  # the events themselves stay stored
        assert session.scalar(select(func.count(Event.id)).where(Event.lead_id == poisoned_lead)) == POISONED


async def test_a_lead_with_more_events_than_one_signal_can_carry_does_not_block_the_rest(
    stack: Stack,
) -> None:
    """Within the bounds (properties of 16 KiB), a lead's waiting events together can pass Temporal's 2 MB
    payload limit (a backlog after an outage, a burst): they go in several signals, nobody waits behind."""
    heavy = {"note": "x" * 16_000}
    events = [
        EventIn(id=f"heavy-{n}", type="page_viewed", email="mallory@evil.test", properties=heavy)
        for n in range(HEAVY)
    ]
    stack.router.batch_size = HEAVY  # one read of the outbox: all of them, 2.4 MB for one lead
    await asyncio.to_thread(
        ingest_events, stack.runtime.db, events
    )  # together, as one request stores its own
    answer = await stack.api.post(
        "/v1/events", json={"id": "behind-the-heavy", "type": "ebook_downloaded", "email": "ada@acme.test"}
    )
    assert answer.status_code == 202, answer.text
    await eventually(lambda: stack.inbox.to("ada@acme.test"), timeout=60, message="ada's email never came")

    # Since issue 22 the router takes at most 50 of one lead's events a drain, so the heavy lead's last ones
    # may still wait when ada's email is in: they drain, none is set aside.
    async def drained() -> dict | None:
        status = await health(stack)
        return status if status["outbox"]["depth"] == 0 else None

    status = await eventually(drained, timeout=60, message="the heavy lead's events never drained")
    assert status["outbox"]["depth"] == 0 and status["dead_letters"] == 0, status


# --- control characters, push endpoints -----------------------------------------------------------------


CONTROL_EMAILS = ["a\x1cb@acme.test", "a\x07b@acme.test", "ab@ac\x1fme.test", "ab@acme.te\x85st"]


async def test_an_email_with_control_characters_is_refused_at_every_entrance(
    runtime: Runtime, public: httpx.AsyncClient
) -> None:
    for email in CONTROL_EMAILS:
        bodies = {
            "/v1/leads": ({"email": email}, "email"),
            "/v1/events": ({"id": "ctl", "type": "page_viewed", "email": email}, "email"),
            "/v1/identify": ({"anonymous_id": ANONYMOUS_ID, "email": email}, "email"),
            "/v1/push/subscriptions": (
                {"email": email, "subscription": {"endpoint": "https://push.example.net/x", "keys": {}}},
                "email",
            ),
            "/t/collect": (
                {"site": SITE_KEY, "anonymous_id": ANONYMOUS_ID, "identify": {"email": email}},
                "identify.email",
            ),
        }
        for path, (body, field) in bodies.items():
            answer = await post(public, path, json.dumps(body))
            assert answer.status_code == 422, (path, repr(email), answer.text[:300])
            assert field in [problem["field"] for problem in answer.json()["detail"]], answer.text[:300]
    assert stored(runtime) == (0, 0, 0)


PRIVATE_ENDPOINTS = [
    "http://push.example.net/send/x",  # plain http
    "https://localhost/push",
    "https://push.localhost/push",
    "https://127.0.0.1:8443/push",
    "https://127.1/push",
    "https://2130706433/push",  # 127.0.0.1 written as one number
    "https://10.0.0.5/push",
    "https://192.168.1.20/push",
    "https://169.254.169.254/latest/meta-data",  # the cloud metadata service
    "https://[::1]/push",
    "https://[::ffff:127.0.0.1]/push",
    "https://[fe80::1]/push",
    "https://intranet/push",
]


async def test_push_endpoints_must_be_https_on_a_public_host(
    runtime: Runtime, public: httpx.AsyncClient
) -> None:
    lead = await post(public, "/v1/leads", json.dumps({"email": "pia@initech.test"}))
    assert lead.status_code == 201
    keys = {"p256dh": P256DH, "auth": AUTH}
    for endpoint in PRIVATE_ENDPOINTS:
        body = {"email": "pia@initech.test", "subscription": {"endpoint": endpoint, "keys": keys}}
        answer = await post(public, "/v1/push/subscriptions", json.dumps(body))
        assert answer.status_code == 422, (endpoint, answer.text[:300])
        [problem] = answer.json()["detail"]
        assert problem["field"] == "subscription.endpoint", problem
    body = {
        "email": "pia@initech.test",
        "subscription": {"endpoint": "https://push.example.net/x", "keys": keys},
    }
    assert (await post(public, "/v1/push/subscriptions", json.dumps(body))).status_code == 201


async def test_a_push_endpoint_into_the_servers_network_is_never_posted_to_at_send_time(
    runtime: Runtime, push_service: PushService
) -> None:
    """A subscription stored by an older version (or a name resolving into a private network) is dropped."""
    assert runtime.push is not None
    browser = push_service.browser("laptop")
    target = PushTarget(browser.endpoint, *browser.subscription()["keys"].values())
    with pytest.raises(PermanentDeliveryError) as refused:
        await runtime.push.send(target, "Hello", "A notification")
    assert refused.value.reason == "subscription_gone" and push_service.delivered == []
    with pytest.raises(PrivateAddress):  # what the channel connects through resolves names this way
        await PublicAddressesOnly().resolve("localhost", 443)


# --- a message that cannot be composed ------------------------------------------------------------------


async def test_a_message_that_cannot_be_composed_is_not_retried(stack: Stack) -> None:
    runtime = stack.runtime
    with runtime.db.transaction() as session:  # an address an older version accepted
        lead = Lead(email="a\x1cb@acme.test", properties={}, created_at=clock.now(), updated_at=clock.now())
        session.add(lead)
        session.flush()
        lead_id = lead.id
    answer = await stack.api.post(
        "/v1/events", json={"id": "ctl-ebook", "type": "ebook_downloaded", "lead_id": lead_id}
    )
    assert answer.status_code == 202, answer.text
    handle = stack.client.get_workflow_handle(
        runtime.settings.sequence_workflow_id("ebook_follow_up", lead_id)
    )

    async def send_failed() -> list[Any]:
        try:
            history = await handle.fetch_history()
        except Exception:  # not started yet
            return []
        return [
            event for event in history.events if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
        ] and list(history.events)

    events = await eventually(send_failed, timeout=30, message="the send was retried instead of failing")
    started = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    failed = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED]
    assert [e.activity_task_started_event_attributes.attempt for e in started] == [1]
    failure = failed[0].activity_task_failed_event_attributes.failure
    assert failure.application_failure_info.non_retryable, failure
    assert failure.application_failure_info.type == "UnsendableMessage"
    with runtime.db.read() as session:
        [message] = session.scalars(select(Message).where(Message.lead_id == lead_id)).all()
        assert message.status == "bounced" and "cannot be composed" in (message.error or "")
    assert stack.inbox.messages == []
