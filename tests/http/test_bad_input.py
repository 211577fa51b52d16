"""Bad requests get a clear 4xx and store nothing half-way."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from leadflow.platform.store.models import Event, Lead, Outbox
from tests.support.helpers import Stack


def _counts(stack: Stack) -> tuple[int, int, int]:
    with stack.runtime.db.read() as session:
        return (
            session.scalar(select(func.count(Lead.id))) or 0,
            session.scalar(select(func.count(Event.id))) or 0,
            session.scalar(select(func.count(Outbox.id))) or 0,
        )


async def test_malformed_json_is_a_400_naming_the_problem(stack: Stack) -> None:
    response = await stack.api.post(
        "/v1/events", content=b'{"id": "x", "type": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("malformed JSON")
    assert _counts(stack) == (0, 0, 0)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"id": "e1", "type": 123, "email": "a@b.test"}, "type"),
        ({"id": "e1", "type": "Page Viewed!", "email": "a@b.test"}, "type"),
        ({"id": "e1", "type": "page_viewed", "email": "a@b.test", "timestamp": "yesterday"}, "timestamp"),
        (
            {"id": "e1", "type": "page_viewed", "email": "a@b.test", "properties": ["not", "a", "map"]},
            "properties",
        ),
        ({"id": "e1", "type": "page_viewed", "email": "not-an-email"}, "email"),
        ({"id": "e1", "type": "page_viewed", "email": "a@b.test", "colour": "red"}, "colour"),
        ({"id": "e1", "type": "page_viewed"}, "body"),
        ({"id": "e1", "type": "page_viewed", "email": "a@b.test", "lead_id": 3}, "body"),
        ({"type": "page_viewed", "email": "a@b.test"}, "id"),
        ({"id": "e1", "type": "page_viewed", "lead_id": True}, "lead_id"),  # lax JSON took `true` for lead 1
        ({"id": "e1", "type": "page_viewed", "lead_id": "1"}, "lead_id"),
        (
            {"id": "e1", "type": "unsubscribed", "email": "a@b.test", "properties": {"channel": "fax"}},
            "properties",
        ),
    ],
)
async def test_an_invalid_event_is_a_422_naming_the_field(stack: Stack, event: dict, field: str) -> None:
    response = await stack.api.post("/v1/events", json=event)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert field in [problem["field"] for problem in problems], problems
    assert all(problem["message"] for problem in problems)
    assert _counts(stack) == (0, 0, 0)


async def test_one_bad_event_in_a_batch_refuses_the_whole_batch_and_names_it(stack: Stack) -> None:
    batch = {
        "events": [
            {"id": "ok-1", "type": "page_viewed", "email": "a@b.test"},
            {"id": "bad", "type": "page_viewed", "email": "a@b.test", "timestamp": "soon"},
        ]
    }
    response = await stack.api.post("/v1/events", json=batch)
    assert response.status_code == 422
    assert [problem["field"] for problem in response.json()["detail"]] == ["events.1.timestamp"]
    assert _counts(stack) == (0, 0, 0)


async def test_an_unknown_lead_id_is_a_404_and_nothing_of_the_batch_is_stored(stack: Stack) -> None:
    batch = {
        "events": [
            {"id": "fine", "type": "page_viewed", "email": "new@b.test"},
            {"id": "ghost", "type": "page_viewed", "lead_id": 999},
        ]
    }
    response = await stack.api.post("/v1/events", json=batch)
    assert response.status_code == 404
    assert response.json()["detail"] == "events[1].lead_id: lead 999 does not exist"
    assert _counts(stack) == (0, 0, 0)
    missing = await stack.api.get("/v1/leads/nobody@nowhere.test")
    assert missing.status_code == 404 and "nobody@nowhere.test" in missing.json()["detail"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic eDp5"}]
)
async def test_a_missing_or_wrong_key_is_a_401(stack: Stack, headers: dict) -> None:
    stack.api.headers.pop("Authorization")
    response = await stack.api.post(
        "/v1/events", json={"id": "e", "type": "x", "email": "a@b.test"}, headers=headers
    )
    assert response.status_code == 401
    assert "API key" in response.json()["detail"]
    assert (await stack.api.get("/v1/leads/1", headers=headers)).status_code == 401
    assert _counts(stack) == (0, 0, 0)


async def test_an_oversized_batch_is_refused_with_413_and_nothing_of_it_is_stored(stack: Stack) -> None:
    batch = {"events": [{"id": f"e{i}", "type": "page_viewed", "email": "a@b.test"} for i in range(1001)]}
    response = await stack.api.post("/v1/events", json=batch)
    assert response.status_code == 413
    assert "at most 1000 events" in response.json()["detail"]
    assert _counts(stack) == (0, 0, 0)
    accepted = await stack.api.post("/v1/events", json={"events": batch["events"][:1000]})
    assert accepted.status_code == 202 and accepted.json()["accepted"] == 1000


async def test_openapi_describes_the_api(stack: Stack) -> None:
    spec = (await stack.api.get("/openapi.json")).json()
    assert {"/v1/events", "/v1/leads", "/v1/leads/{reference}"} <= set(spec["paths"])


@pytest.mark.parametrize(
    ("lead", "field"),
    [
        ({"email": "a@b.test", "phone": "0415 555 0100"}, "phone"),
        ({"email": "a@b.test", "properties": {"timezone": "Mars/Olympus"}}, "properties"),
    ],
)
async def test_a_lead_with_a_bad_phone_or_time_zone_is_refused(stack: Stack, lead: dict, field: str) -> None:
    response = await stack.api.post("/v1/leads", json=lead)
    assert response.status_code == 422, response.text
    assert field in [problem["field"] for problem in response.json()["detail"]]
    assert _counts(stack) == (0, 0, 0)


async def test_consent_is_recorded_with_its_source_and_history(stack: Stack) -> None:
    created = await stack.api.post("/v1/leads", json={"email": "a@b.test", "phone": "+14155550100"})
    assert created.json()["phone"] == "+14155550100"
    for status in ("granted", "withdrawn"):
        response = await stack.api.put(
            "/v1/leads/a@b.test/consent/sms", json={"status": status, "source": f"call {status}"}
        )
        assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["source"]) == ("withdrawn", "call withdrawn")
    assert [h["status"] for h in body["history"]] == ["granted", "withdrawn"]
    bad = [
        ("/v1/leads/a@b.test/consent/fax", {"status": "granted", "source": "x"}, 422),
        ("/v1/leads/a@b.test/consent/sms", {"status": "maybe", "source": "x"}, 422),
        ("/v1/leads/a@b.test/consent/sms", {"status": "granted"}, 422),
        ("/v1/leads/nobody@b.test/consent/sms", {"status": "granted", "source": "x"}, 404),
    ]
    for path, body, expected in bad:
        assert (await stack.api.put(path, json=body)).status_code == expected, path
