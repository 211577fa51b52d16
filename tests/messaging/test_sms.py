"""SMS over Twilio: the real twilio client talks to a loopback server speaking Twilio's REST API, so the
requests it makes are checked as they arrive; replies and delivery reports come back through the signed
webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from twilio.request_validator import RequestValidator

from activities.sending import SendActivities
from leadflow.contracts import SendInput
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.messaging.consent import suppression_of
from leadflow.messaging.providers.sms import retry_after_seconds
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Consent, Event, Message
from tests.support.helpers import Stack, channel_settings
from tests.support.peers import TwilioApi

PHONE = "+14155550123"
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings_overrides(twilio: TwilioApi) -> dict[str, Any]:
    return channel_settings(twilio)


@pytest.fixture(autouse=True)
def at_noon() -> Iterator[None]:
    with clock.frozen_at(NOON):  # outside the default quiet hours (21:00–08:00 UTC)
        yield


def sms_lead(runtime: Runtime, consent: bool = True) -> int:
    lead, _ = upsert_lead(
        runtime.db, LeadIn(email="sam@initech.test", phone=PHONE, properties={"first_name": "Sam"})
    )
    if consent:
        properties = {"channel": "sms", "source": "pricing page form, SMS checkbox"}
        ingest_events(
            runtime.db, [EventIn(id="sam-sms-ok", type="subscribed", lead_id=lead.id, properties=properties)]
        )
    return lead.id


def sms_step(lead_id: int, step: int = 0) -> SendInput:
    return SendInput(
        lead_id, f"sequence-webinar-lead-{lead_id}:step-{step}", "sms", "webinar_reminder", "webinar", step
    )


async def send(runtime: Runtime, request: SendInput):  # type: ignore[no-untyped-def]
    return await ActivityEnvironment().run(SendActivities(runtime).send_message, request)


async def test_an_sms_goes_out_once_through_twilios_api_with_a_status_callback(
    runtime: Runtime, twilio: TwilioApi
) -> None:
    lead_id = sms_lead(runtime)
    first = await send(runtime, sms_step(lead_id))
    again = await send(runtime, sms_step(lead_id))
    assert (first.status, again.status) == ("sent", "already_sent")
    [request] = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    assert request.auth and request.auth.startswith("Basic ")
    assert request.form["To"] == PHONE and request.form["From"] == "+15005550006"
    assert request.form["Body"].startswith("Hi Sam, our live nurture webinar")
    assert request.form["StatusCallback"] == "http://leadflow.test/webhooks/twilio/status"
    with runtime.db.read() as session:
        message = session.scalars(select(Message)).one()
    assert (message.channel, message.status, message.provider_id) == (
        "sms",
        "sent",
        twilio.messages[0]["sid"],
    )


async def test_no_sms_without_recorded_consent(runtime: Runtime, twilio: TwilioApi) -> None:
    lead_id = sms_lead(runtime, consent=False)
    result = await send(runtime, sms_step(lead_id))
    assert (result.status, result.reason) == ("skipped", "no sms consent recorded for the lead")
    assert twilio.requests == []


@pytest.mark.parametrize(
    ("code", "reason"),
    [(21610, "opt_out"), (21211, "invalid_number")],
    ids=["unsubscribed", "invalid-number"],
)
async def test_a_permanent_twilio_error_suppresses_the_number_without_retrying(
    runtime: Runtime, twilio: TwilioApi, code: int, reason: str
) -> None:
    lead_id = sms_lead(runtime)
    twilio.fail_next(400, code)
    result = await send(runtime, sms_step(lead_id))
    assert result.status == "bounced" and str(code) in result.reason
    later = await send(runtime, sms_step(lead_id, step=2))
    assert later.status in ("skipped", "suppressed")
    assert len(twilio.requests) == 1
    with runtime.db.read() as session:
        suppression = suppression_of(session, "sms", PHONE)
        consent = session.scalars(select(Consent.status).where(Consent.channel == "sms")).one()
        bounces = list(session.scalars(select(Event.properties).where(Event.type == "sms_bounced")))
    assert suppression is not None and suppression.reason == reason
    assert consent == ("withdrawn" if code == 21610 else "granted")
    # A number that cannot receive is a bounce the lead's score and segments see; an opt-out is not.
    assert bounces == (
        [] if code == 21610 else [{"message_id": result.message_id, "template": "webinar_reminder"}]
    )


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_errors_are_retried_and_send_once(
    runtime: Runtime, twilio: TwilioApi, status: int
) -> None:
    lead_id = sms_lead(runtime)
    twilio.fail_next(status, 20429 if status == 429 else 20500)
    with pytest.raises(ApplicationError) as refused:
        await send(runtime, sms_step(lead_id))
    assert refused.value.type == "TemporaryDeliveryError" and not refused.value.non_retryable
    assert refused.value.next_retry_delay is None  # no Retry-After: the retry policy's backoff decides
    assert (await send(runtime, sms_step(lead_id))).status == "sent"
    assert len(twilio.messages) == 1


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [("120", timedelta(minutes=2)), ("86400", timedelta(minutes=30))],
    ids=["as-asked", "at-most-the-policy's-longest-interval"],
)
async def test_a_rate_limit_retries_no_sooner_than_twilios_retry_after(
    runtime: Runtime, twilio: TwilioApi, retry_after: str, delay: timedelta
) -> None:
    lead_id = sms_lead(runtime)
    twilio.refuse_all(429, 20429, retry_after=int(retry_after))
    with pytest.raises(ApplicationError) as refused:
        await send(runtime, sms_step(lead_id))
    assert refused.value.type == "TemporaryDeliveryError" and refused.value.next_retry_delay == delay
    twilio.recover()
    assert (await send(runtime, sms_step(lead_id))).status == "sent"


def test_retry_after_is_read_in_seconds_or_as_an_http_date() -> None:
    in_a_minute = format_datetime(clock.now() + timedelta(seconds=60), usegmt=True)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(in_a_minute) == 60.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


# --- webhooks ---------------------------------------------------------------------------------------------


def signed(stack: Stack, path: str, params: dict[str, str], token: str | None = None) -> dict[str, str]:
    """Headers Twilio would send: the signature of our public URL and the form parameters."""
    url = stack.runtime.settings.resolved_public_url + path
    signature = RequestValidator(token or stack.runtime.settings.twilio_auth_token).compute_signature(
        url, params
    )
    return {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}


async def inbound(stack: Stack, body: str, token: str | None = None, sid: str = "SMin1"):  # type: ignore[no-untyped-def]
    params = {"From": PHONE, "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "AC1"}
    path = "/webhooks/twilio/sms"
    return await stack.api.post(path, content=urlencode(params), headers=signed(stack, path, params, token))


def events_of(stack: Stack, kind: str) -> list[Event]:
    with stack.runtime.db.read() as session:
        return list(session.scalars(select(Event).where(Event.type == kind)))


async def test_a_forged_webhook_gets_403_and_records_nothing(stack: Stack) -> None:
    sms_lead(stack.runtime)
    forged = await inbound(stack, "STOP", token="not-our-token")
    assert forged.status_code == 403
    unsigned = await stack.api.post("/webhooks/twilio/sms", data={"From": PHONE, "Body": "STOP"})
    assert unsigned.status_code == 403
    assert events_of(stack, "unsubscribed") == []


@pytest.mark.parametrize("keyword", ["STOP", "stopall", " Unsubscribe ", "CANCEL", "END", "QUIT"])
async def test_stop_words_opt_the_number_out(stack: Stack, keyword: str) -> None:
    runtime = stack.runtime
    lead_id = sms_lead(runtime)
    response = await inbound(stack, keyword)
    assert response.status_code == 200 and "<Message>" not in response.text
    [event] = events_of(stack, "unsubscribed")
    assert event.properties == {"channel": "sms", "source": f"SMS reply {keyword.strip().upper()}"}
    assert (await send(runtime, sms_step(lead_id))).status == "suppressed"
    with runtime.db.read() as session:
        assert suppression_of(session, "sms", PHONE) is not None


async def test_start_opts_back_in_and_help_answers(stack: Stack, twilio: TwilioApi) -> None:
    runtime = stack.runtime
    lead_id = sms_lead(runtime)
    await inbound(stack, "STOP", sid="SM1")
    await inbound(stack, "START", sid="SM2")
    help_reply = await inbound(stack, "help", sid="SM3")
    assert runtime.settings.sms_help_reply in help_reply.text
    assert help_reply.headers["content-type"].startswith("application/xml")
    assert (await send(runtime, sms_step(lead_id))).status == "sent"
    with runtime.db.read() as session:
        assert suppression_of(session, "sms", PHONE) is None
    document = (await stack.api.get(f"/v1/leads/{lead_id}")).json()
    history = [(h["status"], h["source"]) for h in document["consent"]["sms"]["history"]]
    assert history == [
        ("granted", "pricing page form, SMS checkbox"),
        ("withdrawn", "SMS reply STOP"),
        ("granted", "SMS reply START"),
    ]


async def test_other_replies_become_sms_replied_events(stack: Stack) -> None:
    sms_lead(stack.runtime)
    await inbound(stack, "Is the webinar recorded?", sid="SMq")
    [event] = events_of(stack, "sms_replied")
    assert event.properties == {"body": "Is the webinar recorded?", "message_sid": "SMq"}


async def test_status_callbacks_update_delivery_and_suppress_unreachable_numbers(
    stack: Stack, twilio: TwilioApi
) -> None:
    runtime = stack.runtime
    lead_id = sms_lead(runtime)
    await send(runtime, sms_step(lead_id))
    sid = twilio.messages[0]["sid"]
    path = "/webhooks/twilio/status"
    for state, extra in (("delivered", {}), ("undelivered", {"ErrorCode": "30003"})):
        params = {"MessageSid": sid, "MessageStatus": state, **extra}
        response = await stack.api.post(path, content=urlencode(params), headers=signed(stack, path, params))
        assert response.status_code == 204
        with runtime.db.read() as session:
            assert session.scalars(select(Message.delivery_status)).one() == state
    with runtime.db.read() as session:
        suppression = suppression_of(session, "sms", PHONE)
    assert suppression is not None and suppression.reason == "invalid_number"
