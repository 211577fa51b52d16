"""Web push: a browser's subscription is stored through the API, each notification is encrypted for it and
signed with our VAPID key, and a loopback push service decrypts it with the browser's private key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sending import SendActivities
from leadflow.contracts import SendInput, SendResult
from leadflow.intake.ingest import LeadIn, upsert_lead
from leadflow.platform import clock
from leadflow.platform.store.models import Message, PushSubscription
from tests.support.helpers import Stack
from tests.support.peers import VAPID, PushService

EMAIL = "pia@initech.test"
EXPECTED = {
    "title": "New chapter of the Nurture Playbook",
    "body": "Pia, chapter 4 is out: handing hot leads to sales in minutes.",
    "url": "https://leadflow.localhost/ebooks/nurture-playbook/chapter-4",
}


@pytest.fixture(autouse=True)
def at_noon() -> Iterator[None]:
    with clock.frozen_at(datetime(2026, 3, 10, 12, 0, tzinfo=UTC)):  # outside the quiet hours
        yield


async def subscribe(stack: Stack, push_service: PushService, *names: str) -> int:
    lead, _ = upsert_lead(stack.runtime.db, LeadIn(email=EMAIL, properties={"first_name": "Pia"}))
    for name in names:
        body = {"email": EMAIL, "subscription": push_service.browser(name).subscription()}
        response = await stack.api.post("/v1/push/subscriptions", json=body)
        assert response.status_code == 201, response.text
    return lead.id


async def send_push(stack: Stack, lead_id: int, step: int = 0) -> SendResult:
    request = SendInput(
        lead_id,
        f"sequence-playbook-lead-{lead_id}:step-{step}",
        "push",
        "new_playbook_chapter",
        "playbook",
        step,
    )
    return await ActivityEnvironment().run(SendActivities(stack.runtime).send_message, request)


async def test_a_notification_reaches_every_browser_encrypted_and_vapid_signed(
    stack: Stack, push_service: PushService
) -> None:
    lead_id = await subscribe(stack, push_service, "laptop", "phone")
    first, again = await send_push(stack, lead_id), await send_push(stack, lead_id)
    assert (first.status, again.status) == ("sent", "already_sent")
    assert sorted(push_service.delivered, key=lambda item: item[0]) == [
        ("laptop", EXPECTED),
        ("phone", EXPECTED),
    ]
    document = (await stack.api.get(f"/v1/leads/{lead_id}")).json()
    assert document["consent"]["push"]["status"] == "granted"
    assert document["consent"]["push"]["history"][0]["source"] == "browser push subscription"
    assert document["push_subscriptions"] == 2
    assert (await stack.api.get("/v1/push/key")).json() == {"public_key": VAPID.public_key}


@pytest.mark.parametrize("gone", [404, 410])
async def test_a_subscription_the_push_service_no_longer_knows_is_removed(
    stack: Stack, push_service: PushService, gone: int
) -> None:
    lead_id = await subscribe(stack, push_service, "laptop", "old-phone")
    push_service.answers["old-phone"] = gone
    assert (await send_push(stack, lead_id)).status == "sent"
    assert [name for name, _ in push_service.delivered] == ["laptop"]
    assert endpoints(stack) == [push_service.browsers["laptop"].endpoint]
    push_service.answers["laptop"] = gone
    assert (await send_push(stack, lead_id, step=2)).status == "bounced"
    assert endpoints(stack) == []
    assert (await send_push(stack, lead_id, step=4)).status == "skipped"


@pytest.mark.parametrize("status", [429, 500])
async def test_a_busy_push_service_is_retried_and_the_message_goes_out_once(
    stack: Stack, push_service: PushService, status: int
) -> None:
    lead_id = await subscribe(stack, push_service, "laptop")
    push_service.answers["laptop"] = status
    with pytest.raises(ApplicationError, match=str(status)):
        await send_push(stack, lead_id)
    del push_service.answers["laptop"]
    assert (await send_push(stack, lead_id)).status == "sent"
    assert len(push_service.delivered) == 1
    with stack.runtime.db.read() as session:
        assert session.scalar(select(func.count(Message.id))) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "subscription.keys.p256dh"),
        ({"keys": {"p256dh": None, "auth": "short"}}, "subscription.keys.p256dh"),
        ({"endpoint": "http://push.example.com/x"}, "subscription.endpoint"),
    ],
)
async def test_a_malformed_subscription_is_refused_naming_the_field(
    stack: Stack, push_service: PushService, change: dict[str, object], field: str
) -> None:
    upsert_lead(stack.runtime.db, LeadIn(email=EMAIL))
    subscription = {**push_service.browser("laptop").subscription(), **change}
    response = await stack.api.post(
        "/v1/push/subscriptions", json={"email": EMAIL, "subscription": subscription}
    )
    assert response.status_code == 422
    assert field in [problem["field"] for problem in response.json()["detail"]]
    assert endpoints(stack) == []


async def test_a_subscription_for_an_unknown_lead_is_404(stack: Stack, push_service: PushService) -> None:
    body = {"email": "nobody@initech.test", "subscription": push_service.browser("laptop").subscription()}
    response = await stack.api.post("/v1/push/subscriptions", json=body)
    assert response.status_code == 404 and "nobody@initech.test" in response.json()["detail"]


def endpoints(stack: Stack) -> list[str]:
    with stack.runtime.db.read() as session:
        return list(session.scalars(select(PushSubscription.endpoint)))
