"""A client that sends too much, too often or garbage the store cannot keep gets a clear 4xx, and nothing of
its request is stored: bodies over LEADFLOW_MAX_BODY_BYTES (refused before they are read, whether declared
or streamed), batches over the event limit, a key over its rate limit (other keys unaffected), NUL characters,
lone surrogates, NaN, ids beyond 64 bits, timestamps no calendar holds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from leadflow.http.apikeys import create_key
from leadflow.http.app import create_app
from leadflow.intake.ingest import LeadIn, upsert_lead
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Event, Lead, Outbox
from tests.support.browser import serving
from tests.support.helpers import API_KEY, channel_settings, free_port

LIMIT = 64 * 1024
AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        **channel_settings(),
        "max_body_bytes": LIMIT,
        "api_rate_per_minute": 120,  # a token every 0.5 s
        "api_rate_burst": 3,
        "twilio_auth_token": "limits-auth-token",
    }


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[int]:
    """The API on a real socket (uvicorn), for requests an in-process client cannot send."""
    port = free_port()
    async with serving(create_app(runtime), port):
        yield port


def stored(runtime: Runtime) -> tuple[int, int, int]:
    with runtime.db.read() as session:
        return (
            session.scalar(select(func.count(Lead.id))) or 0,
            session.scalar(select(func.count(Event.id))) or 0,
            session.scalar(select(func.count(Outbox.id))) or 0,
        )


def events_body(count: int, padding: int = 0) -> bytes:
    events = [
        {"id": f"e{n}", "type": "page_viewed", "email": "ada@acme.test", "properties": {"pad": "x" * padding}}
        for n in range(count)
    ]
    return json.dumps({"events": events}).encode()


async def exchange(port: int, head: bytes, chunks: list[bytes]) -> tuple[bytes, int]:
    """Send `head`, then `chunks` one by one until the server answers; the answer and how many chunks went."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        writer.write(head)
        await writer.drain()
        answer = asyncio.ensure_future(reader.read(65536))
        for chunk in chunks:
            done, _ = await asyncio.wait([answer], timeout=0.02)
            if done:
                break
            writer.write(chunk)
            await writer.drain()
            sent += 1
        return await asyncio.wait_for(answer, 5), sent
    except (ConnectionResetError, BrokenPipeError):
        return b"", sent
    finally:
        writer.close()


def request_head(port: int, path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_body_declared_too_large_is_refused_before_a_byte_of_it_is_read(
    runtime: Runtime, server: int
) -> None:
    head = request_head(server, "/v1/events", Authorization=f"Bearer {API_KEY}", Content_Length=str(10**9))
    answer, sent = await exchange(server, head, [b"x" * 65536] * 4)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent == 0  # answered on the headers alone: the gigabyte was never waited for
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert f"larger than {LIMIT} bytes" in body["detail"] and "nothing of it was stored" in body["detail"]
    assert stored(runtime) == (0, 0, 0)


async def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(
    runtime: Runtime, server: int
) -> None:
    body = events_body(200, padding=500)  # about 130 KiB, twice the 64 KiB limit
    chunks = [body[start : start + 8192] for start in range(0, len(body), 8192)]
    framed = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks] + [b"0\r\n\r\n"]
    head = request_head(server, "/v1/events", Authorization=f"Bearer {API_KEY}", Transfer_Encoding="chunked")
    answer, sent = await exchange(server, head, framed)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < len(framed)  # refused as the count passed the limit, not after the whole body arrived
    assert stored(runtime) == (0, 0, 0)
    # The same events in bodies under the limit go in.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server}", headers=AUTHORIZED) as client:
        for start in (0, 100):  # two bodies of 60 KB, within the key's burst of 3 requests
            small = {"events": json.loads(body)["events"][start : start + 100]}
            assert (await client.post("/v1/events", json=small)).status_code == 202
    assert stored(runtime)[1] == 200


async def test_the_public_tracking_endpoint_has_its_own_smaller_limit(runtime: Runtime, server: int) -> None:
    origin = "https://www.acme-growth.test"
    head = request_head(server, "/t/collect", Origin=origin, Content_Length="40000")
    answer, sent = await exchange(server, head, [b"x" * 40000])
    assert answer.startswith(b"HTTP/1.1 413") and sent == 0, answer[:200]
    assert b"larger than 32768 bytes" in answer


async def test_each_api_key_has_its_own_rate_limit(runtime: Runtime, api: httpx.AsyncClient) -> None:
    stored_key = create_key(runtime.db, runtime.settings.resolved_secret_key, "crm-sync")
    crm = {"Authorization": f"Bearer {stored_key}"}
    answers = [(await api.get("/v1/health", headers=AUTHORIZED)).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]  # a burst of 3, then the bucket is dry
    limited = await api.post(
        "/v1/leads", json={"email": "ada@acme.test"}, headers=AUTHORIZED
    )  # refused before anything is stored
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert "LEADFLOW_API_KEYS #1" in limited.json()["detail"] and "120 a minute" in limited.json()["detail"]
    assert stored(runtime) == (0, 0, 0)
    # Another key is not slowed down by the first one's traffic.
    assert [(await api.get("/v1/health", headers=crm)).status_code for _ in range(3)] == [200, 200, 200]
    await asyncio.sleep(0.55)  # tokens come back at the configured rate
    assert (await api.get("/v1/health", headers=AUTHORIZED)).status_code == 200
    # Without a valid key there is no bucket to spend: 401, never 429.
    assert (await api.get("/v1/health", headers={"Authorization": "Bearer nope"})).status_code == 401


UNSTORABLE = [
    ({"email": "ada@acme.test", "properties": {"note": "a\x00b"}}, "properties.note", "NUL"),
    ({"email": "ada@acme.test", "properties": {"bad\x00key": 1}}, "properties.bad\x00key", "NUL"),
    ({"email": "ada@acme.test", "properties": {"name": "\ud800"}}, "properties.name", "surrogate"),
    ({"email": "ada@acme.test", "properties": {"score": float("nan")}}, "properties.score", "finite"),
    ({"email": "ada@acme.test", "properties": {"items": [1, "x\x00"]}}, "properties.items.1", "NUL"),
]


@pytest.mark.parametrize(("lead", "field", "reason"), UNSTORABLE)
async def test_values_a_store_cannot_keep_are_refused_with_the_field_on_every_backend(
    runtime: Runtime, api: httpx.AsyncClient, lead: dict[str, Any], field: str, reason: str
) -> None:
    body = json.dumps(lead, allow_nan=True)  # NaN is what Python's and many clients' JSON let through
    response = await api.post(
        "/v1/leads", content=body, headers={**AUTHORIZED, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["field"] == field and reason in problem["message"], problem
    assert stored(runtime) == (0, 0, 0)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"id": "e\x00", "type": "page_viewed", "email": "ada@acme.test"}, "id"),
        ({"id": "e1", "type": "page_viewed", "lead_id": 2**63}, "lead_id"),
        (
            {
                "id": "e1",
                "type": "page_viewed",
                "email": "ada@acme.test",
                "timestamp": "0001-01-01T00:00:00+01:00",
            },
            "timestamp",
        ),
        (
            {
                "id": "e1",
                "type": "page_viewed",
                "email": "ada@acme.test",
                "timestamp": "1969-12-31T23:59:59Z",
            },
            "timestamp",
        ),
    ],
)
async def test_events_with_unstorable_ids_or_impossible_times_are_refused(
    runtime: Runtime, api: httpx.AsyncClient, event: dict[str, Any], field: str
) -> None:
    response = await api.post("/v1/events", json=event, headers=AUTHORIZED)
    assert response.status_code == 422, response.text
    assert field in [problem["field"] for problem in response.json()["detail"]]
    assert stored(runtime) == (0, 0, 0)


@pytest.mark.parametrize(
    ("reference", "status"), [("²", 404), ("9" * 30, 404), ("%00", 422), ("ada%00@acme.test", 422)]
)
async def test_odd_lead_references_are_a_clean_4xx(
    runtime: Runtime, api: httpx.AsyncClient, reference: str, status: int
) -> None:
    upsert_lead(runtime.db, LeadIn(email="ada@acme.test"))
    for method in ("GET", "DELETE"):
        response = await api.request(method, f"/v1/leads/{reference}", headers=AUTHORIZED)
        assert response.status_code == status, (method, reference, response.text)
    assert stored(runtime)[0] == 1


async def test_a_score_at_a_time_no_calendar_holds_is_a_422(runtime: Runtime, api: httpx.AsyncClient) -> None:
    upsert_lead(runtime.db, LeadIn(email="ada@acme.test"))
    score = await api.get("/v1/leads/1/score", params={"at": "9999-12-31T23:59:59-23:59"}, headers=AUTHORIZED)
    assert score.status_code == 422 and score.json()["detail"][0]["field"] == "query.at", score.text


async def test_a_twilio_webhook_body_that_is_not_utf8_is_a_400(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    response = await api.post(
        "/webhooks/twilio/sms",
        content=b"From=%2B14155550100&Body=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
    )
    assert response.status_code == 400 and "UTF-8" in response.json()["detail"]
    assert stored(runtime) == (0, 0, 0)
