"""Web push from a public page: the service worker Leadflow serves, and `POST /t/push`, which takes a browser's
PushSubscription with a site key (no API key), from the site's origins, for the browser's anonymous id; and
the abandoned-form identify a site may opt in to. What the browser does with them: tests/stories/test_browser_campaigns.py."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from leadflow.intake.tracking.model import Site
from leadflow.platform.store.models import Lead, PushSubscription
from tests.intake.test_attack_ingest import PRIVATE_ENDPOINTS
from tests.messaging.test_push import at_noon, send_push  # noqa: F401 (at_noon: autouse, a send outside quiet hours)
from tests.support.helpers import Stack, channel_settings
from tests.support.peers import VAPID, PushService

ORIGIN = "https://www.acme-growth.test"
KEY = "pk_test_acme_growth"
VISITOR = "visitor-0001"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {**channel_settings(), "push_allow_loopback_for_tests": True}


def use_site(stack: Stack, **overrides: Any) -> Site:
    site = Site.model_validate({"id": "acme", "key": KEY, "origins": [ORIGIN], **overrides})
    stack.runtime.content = dataclasses.replace(stack.runtime.content, sites={site.key: site})
    return site


def as_in_production(stack: Stack) -> None:
    """Push endpoints on the loopback push service are refused, as they are outside the tests."""
    stack.runtime.settings = stack.runtime.settings.model_copy(
        update={"push_allow_loopback_for_tests": False}
    )


async def post(stack: Stack, path: str, body: Any, origin: str = ORIGIN, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await stack.api.post(
        path,
        content=content,
        headers={"Origin": origin, "Content-Type": "text/plain", "Authorization": "", **headers},
    )


def subscription_body(subscription: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"site": KEY, "anonymous_id": VISITOR, "consent": True, "subscription": subscription, **extra}


def subscriptions(stack: Stack) -> list[tuple[int, str]]:
    with stack.runtime.db.read() as session:
        return [(row.lead_id, row.endpoint) for row in session.scalars(select(PushSubscription))]


async def test_the_service_worker_and_the_snippets_push_settings_are_served(stack: Stack) -> None:
    use_site(stack, service_worker="/static/leadflow-sw.js", identify_on_form_abandon=True)
    worker = await stack.api.get("/t/sw.js")
    assert worker.status_code == 200
    assert worker.headers["content-type"].startswith("text/javascript")
    assert worker.headers["service-worker-allowed"] == "/"
    assert "showNotification" in worker.text and "notificationclick" in worker.text
    snippet = (await stack.api.get(f"/t/leadflow.js?site={KEY}")).text
    assert f'"push_key": "{VAPID.public_key}"' in snippet
    assert '"service_worker": "/static/leadflow-sw.js"' in snippet
    assert '"identify_on_form_abandon": true' in snippet


async def test_an_anonymous_visitor_subscribes_and_the_subscription_follows_them_when_identified(
    stack: Stack, push_service: PushService
) -> None:
    use_site(stack)
    known = await stack.api.post("/v1/leads", json={"email": "pia@initech.test"})
    laptop = push_service.browser("laptop")
    response = await post(stack, "/t/push", subscription_body(laptop.subscription()))
    assert response.status_code == 201, response.text
    assert response.json() == {"subscribed": True}  # nothing about any lead
    assert response.headers["access-control-allow-origin"] == ORIGIN
    anonymous = (await stack.api.get(f"/v1/leads/{VISITOR}")).json()
    assert anonymous["email"] is None and anonymous["push_subscriptions"] == 1
    assert anonymous["consent"]["push"]["status"] == "granted"
    assert "subscribed" in [item["type"] for item in anonymous["timeline"]]

    # The visitor turns out to be Pia, known before: her lead gets the browser and the consent.
    identified = await stack.api.post(
        "/v1/identify", json={"anonymous_id": VISITOR, "email": "pia@initech.test"}
    )
    assert identified.status_code == 200, identified.text
    pia = (await stack.api.get("/v1/leads/pia@initech.test")).json()
    assert pia["id"] == known.json()["id"] != anonymous["id"]
    assert pia["push_subscriptions"] == 1 and pia["consent"]["push"]["status"] == "granted"
    assert subscriptions(stack) == [(pia["id"], laptop.endpoint)]
    assert (await send_push(stack, pia["id"])).status == "sent"
    assert [name for name, _ in push_service.delivered] == ["laptop"]


@pytest.mark.parametrize("endpoint", PRIVATE_ENDPOINTS)  # the rule of /v1/push/subscriptions, the same
async def test_an_endpoint_that_is_not_a_public_https_address_is_refused(
    stack: Stack, push_service: PushService, endpoint: str
) -> None:
    use_site(stack)
    as_in_production(stack)
    subscription = {**push_service.browser("laptop").subscription(), "endpoint": endpoint}
    response = await post(stack, "/t/push", subscription_body(subscription))
    assert response.status_code == 422, response.text
    assert [problem["field"] for problem in response.json()["detail"]] == ["subscription.endpoint"]
    assert subscriptions(stack) == []


async def test_the_loopback_push_service_is_refused_outside_tests(
    stack: Stack, push_service: PushService
) -> None:
    use_site(stack)
    as_in_production(stack)
    response = await post(stack, "/t/push", subscription_body(push_service.browser("laptop").subscription()))
    assert response.status_code == 422 and "https://" in response.text
    public = {
        **push_service.browser("phone").subscription(),
        "endpoint": "https://fcm.googleapis.com/fcm/send/x1",
    }
    assert (await post(stack, "/t/push", subscription_body(public))).status_code == 201


async def test_a_push_subscription_is_refused_like_a_collect(stack: Stack, push_service: PushService) -> None:
    use_site(stack, consent="required")
    body = subscription_body(push_service.browser("laptop").subscription())
    assert (await post(stack, "/t/push", body, origin="https://evil.test")).status_code == 403
    assert (await post(stack, "/t/push", {**body, "site": "pk_nobody_here_1"})).status_code == 403
    assert (await post(stack, "/t/push", {**body, "consent": False})).status_code == 403
    assert (await post(stack, "/t/push", body, DNT="1")).status_code == 204
    padded = {**body, "subscription": {**body["subscription"], "padding": "x" * 5000}}
    assert (await post(stack, "/t/push", padded)).status_code == 413
    assert (await post(stack, "/t/push", {**body, "anonymous_id": "x"})).status_code == 422
    assert subscriptions(stack) == []
    stack.runtime.push = None
    unconfigured = await post(stack, "/t/push", body)
    assert unconfigured.status_code == 404 and "not configured" in unconfigured.text


async def test_an_abandoned_form_identifies_only_where_the_site_opts_in_and_never_under_gpc(
    stack: Stack,
) -> None:
    use_site(stack)
    event = {"id": "event-0001", "type": "form_abandoned", "properties": {"form": "contact"}}
    body = {
        "site": KEY,
        "anonymous_id": VISITOR,
        "identify": {"email": "new@initech.test"},
        "identify_source": "form_abandoned",
        "events": [event],
    }
    refused = await post(stack, "/t/collect", body)
    assert refused.status_code == 403 and "identify_on_form_abandon" in refused.text
    use_site(stack, identify_on_form_abandon=True)
    assert (await post(stack, "/t/collect", body, **{"Sec-GPC": "1"})).status_code == 202
    assert _emails(stack) == [None]  # the event is kept, the address is not
    assert (await post(stack, "/t/collect", {**body, "events": []})).status_code == 202
    assert _emails(stack) == ["new@initech.test"]


def _emails(stack: Stack) -> list[str | None]:
    with stack.runtime.db.read() as session:
        return list(session.scalars(select(Lead.email).order_by(Lead.id)))
