"""A bounce is an event on the lead too (`email_bounced`, `sms_bounced`), so scoring and segments see it:
an SMTP 5xx from the test SMTP server, a Twilio delivery report saying the number cannot receive."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select
from temporalio.testing import ActivityEnvironment
from twilio.request_validator import RequestValidator

from activities.sending import SendActivities
from leadflow.contracts import SendInput
from leadflow.platform import clock
from leadflow.platform.store.models import Event
from tests.support.helpers import Stack, channel_settings, eventually
from tests.support.peers import TwilioApi

ADA = "ada@acme-robotics.test"
PHONE = "+14155550123"


@pytest.fixture
def settings_overrides(twilio: TwilioApi) -> dict[str, Any]:
    return channel_settings(twilio)


def events_of(stack: Stack, kind: str) -> list[Event]:
    with stack.runtime.db.read() as session:
        return list(session.scalars(select(Event).where(Event.type == kind)))


async def test_an_email_refused_with_a_5xx_is_an_email_bounced_event_that_scoring_counts(
    stack: Stack,
) -> None:
    stack.inbox.reply = "550 5.1.1 <ada@acme-robotics.test>: no such mailbox"
    assert (await stack.api.post("/v1/leads", json={"email": ADA})).status_code == 201
    download = {"id": "ada-ebook", "type": "ebook_downloaded", "email": ADA}
    assert (await stack.api.post("/v1/events", json=download)).status_code == 202

    async def bounced() -> dict[str, Any] | None:
        lead = (await stack.api.get(f"/v1/leads/{ADA}")).json()
        rules = {item["rule"]: item for item in lead["score"]["breakdown"]}
        # The bounce is scored by the router (it changes no workflow's plans) and the sequence ends on its own
        # send's answer: either may come first.
        ended = [sequence["status"] != "running" for sequence in lead["sequences"]] == [True]
        return lead if "Email bounced" in rules and ended else None

    lead = await eventually(bounced, message="the bounce never reached the score, or the sequence ran on")
    rules = {item["rule"]: item["points"] for item in lead["score"]["breakdown"]}
    assert rules == {"Ebook downloaded": 10, "Email bounced": -20}
    [event] = events_of(stack, "email_bounced")
    # It names the message, never the server's reply (which quotes the address).
    assert (
        set(event.properties) == {"message_id", "template"}
        and event.properties["template"] == "ebook_delivery"
    )
    assert ("event", "email_bounced") in [(item["kind"], item["type"]) for item in lead["timeline"]]
    [sequence] = lead["sequences"]
    assert (sequence["status"], sequence["exit_reason"]) == ("exited", "email bounced")


def twilio_signed(stack: Stack, path: str, params: dict[str, str]) -> dict[str, str]:
    url = stack.runtime.settings.resolved_public_url + path
    signature = RequestValidator(stack.runtime.settings.twilio_auth_token).compute_signature(url, params)
    return {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}


async def test_an_undeliverable_sms_report_is_an_sms_bounced_event_recorded_once(
    stack: Stack, twilio: TwilioApi
) -> None:
    created = await stack.api.post("/v1/leads", json={"email": ADA, "phone": PHONE})
    lead_id = created.json()["id"]
    consent = {"status": "granted", "source": "pricing form, SMS box"}
    assert (await stack.api.put(f"/v1/leads/{ADA}/consent/sms", json=consent)).status_code == 200
    request = SendInput(lead_id, f"sequence-x-lead-{lead_id}:step-0", "sms", "webinar_reminder", "x", 0)
    with clock.frozen_at(datetime(2026, 3, 10, 12, 0, tzinfo=UTC)):  # outside SMS quiet hours
        sent = await ActivityEnvironment().run(SendActivities(stack.runtime).send_message, request)
    assert sent.status == "sent", sent
    path = "/webhooks/twilio/status"
    params = {"MessageSid": twilio.messages[0]["sid"], "MessageStatus": "undelivered", "ErrorCode": "30005"}
    for _ in range(2):  # Twilio retries a callback: one event all the same
        answer = await stack.api.post(
            path, content=urlencode(params), headers=twilio_signed(stack, path, params)
        )
        assert answer.status_code == 204
    [event] = await eventually(lambda: events_of(stack, "sms_bounced"))
    assert event.lead_id == lead_id and event.properties["template"] == "webinar_reminder"
    document = await eventually(
        lambda: _timeline_has(stack, ADA, "sms_bounced"), message="the lead never saw its bounce"
    )
    assert document["id"] == lead_id


async def _timeline_has(stack: Stack, reference: str, kind: str) -> dict[str, Any] | None:
    lead = (await stack.api.get(f"/v1/leads/{reference}")).json()
    return lead if any(item["type"] == kind for item in lead["timeline"]) else None
