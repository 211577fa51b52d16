"""What comes back from outside without an API key, forged, altered or replayed: a tracking link of one lead
bent to another, a click or an unsubscribe sent again (or many times at once), a Twilio webhook with altered
parameters, signed for another address, or replayed after the lead changed its mind. Each is refused and
records nothing, or is recorded exactly once."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import select
from temporalio.testing import ActivityEnvironment
from twilio.request_validator import RequestValidator

from activities.sending import SendActivities
from leadflow.contracts import SendInput
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.messaging.consent import suppression_of
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Consent, Event, Message
from tests.support.helpers import API_KEY, Inbox, channel_settings
from tests.support.peers import TwilioApi

KIM, LOU = "kim@initech.test", "lou@initech.test"
PHONE = "+14155550123"


@pytest.fixture
def settings_overrides(twilio: TwilioApi) -> dict[str, Any]:
    return channel_settings(twilio)


@pytest.fixture(autouse=True)
def at_noon() -> Iterator[None]:
    with clock.frozen_at(datetime(2026, 3, 10, 12, 0, tzinfo=UTC)):  # outside SMS quiet hours
        yield


def events(runtime: Runtime, kind: str) -> list[Event]:
    with runtime.db.read() as session:
        return list(session.scalars(select(Event).where(Event.type == kind).order_by(Event.id)))


async def send(runtime: Runtime, lead_id: int, channel: str, template: str) -> Any:
    request = SendInput(lead_id, f"sequence-x-lead-{lead_id}:step-0", channel, template, "x", 0)
    return await ActivityEnvironment().run(SendActivities(runtime).send_message, request)


# --- links in emails ---------------------------------------------------------------------------------


async def kims_email(runtime: Runtime, inbox: Inbox) -> tuple[int, int, str]:
    """Kim's ebook email, sent by the send activity to the SMTP server; Lou, another lead; the HTML."""
    kim, _ = upsert_lead(runtime.db, LeadIn(email=KIM, properties={"first_name": "Kim"}))
    lou, _ = upsert_lead(runtime.db, LeadIn(email=LOU, properties={"first_name": "Lou"}))
    assert (await send(runtime, kim.id, "email", "ebook_delivery")).status == "sent"
    [message] = inbox.to(KIM)
    assert isinstance(message, EmailMessage)
    html = message.get_body(("html",))
    assert html is not None
    return kim.id, lou.id, str(html.get_content())


def token_in(html: str, route: str) -> str:
    found = re.search(rf'{route}([^"]+)"', html)
    assert found, route
    return found[1]


def bent_to(token: str, salt: str, change: Any) -> str:
    """`token` with its payload changed by `change` and its signature kept, as someone editing a link would."""
    serializer = URLSafeSerializer("whatever", salt=salt)
    signature = token.rpartition(".")[2]
    _, original = serializer.loads_unsafe(token)
    return f"{serializer.dump_payload(change(original)).decode()}.{signature}"


async def test_a_link_of_one_lead_bent_to_another_lead_is_refused_and_records_nothing(
    runtime: Runtime, inbox: Inbox, api: httpx.AsyncClient
) -> None:
    _, lou, html = await kims_email(runtime, inbox)
    other = lambda payload: [*payload[:1], lou, *payload[2:]]  # noqa: E731 - [message, lead, …]
    bent = {
        "/t/o/": bent_to(token_in(html, "/t/o/"), "leadflow-open", other),
        "/t/c/": bent_to(token_in(html, "/t/c/").replace("&amp;", "&"), "leadflow-click", other),
        "/u/": bent_to(token_in(html, "/u/"), "leadflow-unsubscribe", lambda payload: [lou, *payload[1:]]),
    }
    for route, token in bent.items():
        for method in ("GET", "POST") if route == "/u/" else ("GET",):
            response = await api.request(method, route + token)
            assert response.status_code == 404, (route, method, response.text)
            if route != "/t/o/":  # a person clicked: they see a page, not JSON
                assert "text/html" in response.headers["content-type"]
    # Even a token signed with our own key cannot attach Kim's message to Lou.
    minted = runtime.tracker.open_url(message_id=1, lead_id=lou)
    assert (await api.get(urlsplit(minted).path)).status_code == 404
    click = runtime.tracker.click_url(1, lou, "https://leadflow.localhost/ebooks/nurture-playbook.pdf", 1)
    assert (await api.get(urlsplit(click).path)).status_code == 302  # the reader still gets the page
    assert events(runtime, "email_opened") == events(runtime, "email_clicked") == []
    assert events(runtime, "unsubscribed") == []
    with runtime.db.read() as session:
        assert session.scalars(select(Consent)).all() == []
        assert suppression_of(session, "email", LOU) is None and suppression_of(session, "email", KIM) is None


async def test_replayed_clicks_and_unsubscribes_are_recorded_once(
    runtime: Runtime, inbox: Inbox, api: httpx.AsyncClient
) -> None:
    kim, _, html = await kims_email(runtime, inbox)
    click = "/t/c/" + token_in(html, "/t/c/").replace("&amp;", "&")
    for _ in range(3):
        assert (await api.get(click)).status_code == 302
    assert len(events(runtime, "email_clicked")) == 1

    unsubscribe = "/u/" + token_in(html, "/u/")
    answers = await asyncio.gather(*(api.post(unsubscribe) for _ in range(5)))  # a client retrying at once
    assert [answer.status_code for answer in answers] == [200] * 5
    assert len(events(runtime, "unsubscribed")) == 1
    # Kim opts back in; the same link opts her out again, once more.
    opt_in = {"status": "granted", "source": "preference centre"}
    authorized = {"Authorization": f"Bearer {API_KEY}"}
    assert (
        await api.put(f"/v1/leads/{kim}/consent/email", json=opt_in, headers=authorized)
    ).status_code == 200
    await asyncio.gather(*(api.post(unsubscribe) for _ in range(3)))
    assert len(events(runtime, "unsubscribed")) == 2
    with runtime.db.read() as session:
        assert session.scalars(select(Consent.status)).one() == "withdrawn"


# --- Twilio webhooks -----------------------------------------------------------------------------------


def twilio_headers(runtime: Runtime, path: str, params: dict[str, str]) -> dict[str, str]:
    url = runtime.settings.resolved_public_url + path
    signature = RequestValidator(runtime.settings.twilio_auth_token).compute_signature(url, params)
    return {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}


async def text_in(
    api: httpx.AsyncClient, runtime: Runtime, body: str, sid: str, **extra: str
) -> httpx.Response:
    params = {
        "From": PHONE,
        "To": "+15005550006",
        "Body": body,
        "AccountSid": "AC1",
        "MessageSid": sid,
        **extra,
    }
    if not sid:
        params.pop("MessageSid")
    path = "/webhooks/twilio/sms"
    return await api.post(path, content=urlencode(params), headers=twilio_headers(runtime, path, params))


def sam(runtime: Runtime) -> int:
    lead, _ = upsert_lead(runtime.db, LeadIn(email="sam@initech.test", phone=PHONE))
    consent = {"channel": "sms", "source": "pricing page form, SMS checkbox"}
    ingest_events(
        runtime.db, [EventIn(id="sam-sms-ok", type="subscribed", lead_id=lead.id, properties=consent)]
    )
    return lead.id


async def test_an_altered_or_misdirected_twilio_webhook_is_refused(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    sam(runtime)
    path = "/webhooks/twilio/sms"
    signed_for = {"From": PHONE, "Body": "Is the webinar recorded?", "MessageSid": "SMa"}
    altered = {**signed_for, "Body": "STOP"}
    response = await api.post(
        path, content=urlencode(altered), headers=twilio_headers(runtime, path, signed_for)
    )
    assert response.status_code == 403 and "X-Twilio-Signature" in response.json()["detail"]
    # Genuinely signed, but for the status callback's address.
    elsewhere = twilio_headers(runtime, "/webhooks/twilio/status", altered)
    assert (await api.post(path, content=urlencode(altered), headers=elsewhere)).status_code == 403
    assert events(runtime, "unsubscribed") == events(runtime, "sms_replied") == []
    with runtime.db.read() as session:
        assert suppression_of(session, "sms", PHONE) is None


async def test_a_replayed_twilio_webhook_is_acted_on_once(
    runtime: Runtime, api: httpx.AsyncClient, twilio: TwilioApi
) -> None:
    lead_id = sam(runtime)
    assert (await text_in(api, runtime, "STOP", "SM1")).status_code == 200
    assert (await text_in(api, runtime, "STOP", "SM1")).status_code == 200
    assert len(events(runtime, "unsubscribed")) == 1
    await text_in(api, runtime, "START", "SM2")
    # An old STOP replayed after the START: Sam stays opted in, and the number is not suppressed again.
    await text_in(api, runtime, "STOP", "SM1")
    with runtime.db.read() as session:
        assert suppression_of(session, "sms", PHONE) is None
        assert session.scalars(select(Consent.status).where(Consent.channel == "sms")).one() == "granted"
    # Older webhooks name the message SmsSid only; a HELP is answered once.
    for _ in range(2):
        await text_in(api, runtime, "Is it recorded?", "", SmsSid="SMold")
    assert len(events(runtime, "sms_replied")) == 1
    helps = [await text_in(api, runtime, "HELP", "SM3") for _ in range(2)]
    assert [runtime.settings.sms_help_reply in help.text for help in helps] == [True, False]

    # Delivery reports: a late or replayed "sent" never takes the message back from "delivered".
    assert (await send(runtime, lead_id, "sms", "webinar_reminder")).status == "sent"
    sid = twilio.messages[0]["sid"]
    path = "/webhooks/twilio/status"
    for state in ("sent", "delivered", "sent", "queued"):
        params = {"MessageSid": sid, "MessageStatus": state}
        answer = await api.post(
            path, content=urlencode(params), headers=twilio_headers(runtime, path, params)
        )
        assert answer.status_code == 204
    with runtime.db.read() as session:
        assert session.scalars(select(Message.delivery_status)).one() == "delivered"
