"""A day of real traffic leaves no personal data in the logs at INFO or above: leads come in with their
email, phone and name through the API on a real uvicorn server (access log on), one downloads the ebook and
is emailed, one asks for a demo and is handed to sales, one texts back; every logger (leadflow, activities,
workflows, uvicorn, temporalio) is captured, and no email, phone number or name of a lead appears in it."""

from __future__ import annotations

import io
import logging
import traceback
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from twilio.request_validator import RequestValidator

from activities.sending import SendActivities
from leadflow.contracts import SendInput
from leadflow.http.app import create_app
from leadflow.intake.ingest import LeadIn, upsert_lead
from leadflow.platform.logs import mask_personal_data
from leadflow.platform.runtime import Runtime
from tests.support.browser import serving
from tests.support.helpers import API_KEY, Inbox, channel_settings, eventually, free_port
from tests.support.peers import TwilioApi
from worker import running_worker

READER = {"email": "orsolya.vantwerp@acme-robotics.test", "first_name": "Orsolya", "last_name": "Vantwerp"}
BUYER = {"email": "zelphine.q@globex.test", "first_name": "Zelphine", "last_name": "Quarrington"}
BUYER_PHONE = "+14155550187"
PERSONAL = [
    READER["email"],
    READER["first_name"],
    READER["last_name"],
    BUYER["email"],
    BUYER["first_name"],
    BUYER["last_name"],
    BUYER_PHONE,
    BUYER_PHONE[2:],  # the number without its country code
    "orsolya.vantwerp%40",  # an address as a URL carries it
    "zelphine.q%40",
]


@pytest.fixture
def settings_overrides(twilio: TwilioApi) -> dict[str, Any]:
    return channel_settings(twilio)


def log_text(records: list[logging.LogRecord]) -> str:
    """Every record as it could be written anywhere: its message, arguments, extras and traceback."""
    formatter = logging.Formatter()
    return "\n".join(f"{formatter.format(record)} {record.__dict__!r}" for record in records)


async def test_a_realistic_day_logs_no_email_phone_or_name_of_a_lead(
    runtime: Runtime,
    temporal: WorkflowEnvironment,
    inbox: Inbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # the root and every logger below it, uvicorn and temporalio included
    port = free_port()
    async with running_worker(temporal.client, runtime) as router:

        async def temporal_client() -> Client:
            return temporal.client

        app = create_app(runtime, on_events_accepted=router.wake, temporal=temporal_client)
        # log_config=None: uvicorn's loggers propagate to the root, where the capture is.
        async with serving(app, port, log_level="info", log_config=None, access_log=True):
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as api:
                await story(api, runtime, inbox)

    # Not Leadflow's: the test's SMTP server (aiosmtpd) and the test's own client calling the API.
    ours = [
        record
        for record in caplog.records
        if record.levelno >= logging.INFO
        and record.name != "mail.log"
        and not (record.name == "httpx" and f"http://127.0.0.1:{port}/" in record.getMessage())
    ]
    text = log_text(ours)
    access = [record for record in caplog.records if record.name == "uvicorn.access"]
    assert len(access) >= 8 and any("/v1/leads/[redacted]" in record.getMessage() for record in access)
    for name in (
        "leadflow",
        "activities",
        "workflows",
        "worker",
        "temporalio.workflow",
        "temporalio.activity",
    ):
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name  # whatever they said was captured
    leaked = [value for value in PERSONAL if value.lower() in text.lower()]
    assert not leaked, f"personal data in the logs: {leaked}"


async def story(api: httpx.AsyncClient, runtime: Runtime, inbox: Inbox) -> None:
    reader = {"email": READER["email"], "properties": {k: v for k, v in READER.items() if k != "email"}}
    buyer = {
        "email": BUYER["email"],
        "phone": BUYER_PHONE,
        "properties": {
            "first_name": BUYER["first_name"],
            "last_name": BUYER["last_name"],
            "company": "Globex",
        },
    }
    for lead in (reader, buyer):
        assert (await api.post("/v1/leads", json=lead)).status_code == 201
    consent = {"status": "granted", "source": "demo form, SMS box"}
    assert (await api.put(f"/v1/leads/{BUYER['email']}/consent/sms", json=consent)).status_code == 200
    events = [
        {"id": "r-ebook", "type": "ebook_downloaded", "email": READER["email"]},
        {
            "id": "b-demo",
            "type": "demo_requested",
            "email": BUYER["email"],
            "properties": {"form": "contact-sales"},
        },
        {"id": "b-price", "type": "page_viewed", "email": BUYER["email"], "properties": {"url": "/pricing"}},
    ]
    assert (await api.post("/v1/events", json={"events": events})).status_code == 202
    await eventually(lambda: inbox.to(READER["email"]), timeout=30, message="the ebook email never came")
    sales = ("sam.rivera@leadflow.localhost", "alex.chen@leadflow.localhost")
    await eventually(
        lambda: [m for m in inbox.messages if m["To"] in sales], timeout=30, message="sales was not told"
    )
    # The buyer texts back; sales looks the leads up by email, as people do.
    params = {
        "From": BUYER_PHONE,
        "To": "+15005550006",
        "Body": "Can we talk Tuesday?",
        "MessageSid": "SMpii",
    }
    url = runtime.settings.resolved_public_url + "/webhooks/twilio/sms"
    signature = RequestValidator(runtime.settings.twilio_auth_token).compute_signature(url, params)
    texted = await api.post(
        "/webhooks/twilio/sms",
        content=urlencode(params),
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert texted.status_code == 200
    for email in (READER["email"], BUYER["email"]):
        assert (await api.get(f"/v1/leads/{email}")).status_code == 200
        assert (await api.get(f"/v1/leads/{email}/score")).status_code == 200
    lead = (await api.get(f"/v1/leads/{BUYER['email']}")).json()
    assert lead["stage"] == "sql"
    await eventually(
        lambda: _has_reply(api, BUYER["email"]), timeout=30, message="the reply never reached the lead"
    )


async def _has_reply(api: httpx.AsyncClient, email: str) -> bool:
    lead = (await api.get(f"/v1/leads/{email}")).json()
    return any(item.get("type") == "sms_replied" for item in lead["timeline"])


async def test_a_provider_refusal_quoting_the_address_is_masked_in_what_the_worker_writes(
    runtime: Runtime, inbox: Inbox
) -> None:
    """Warnings are not INFO, but a lead's address has no place there either: a mail server's temporary
    refusal quotes it, and Temporal logs a failed activity with its whole exception chain."""
    lead, _ = upsert_lead(runtime.db, LeadIn(email=READER["email"], properties={"first_name": "Orsolya"}))
    inbox.reply = f"450 4.2.1 <{READER['email']}>: mailbox busy, try again later"
    request = SendInput(lead.id, "sequence-x-lead-1:step-0", "email", "ebook_delivery", "x", 0)
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    mask_personal_data(handler)  # what configure_logging does to the handlers of leadflow worker and api
    activity_log = logging.getLogger("temporalio.activity")
    activity_log.addHandler(handler)
    try:
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(SendActivities(runtime).send_message, request)
        assert READER["email"] in "".join(traceback.format_exception(refused.value))  # it is there to leak
        try:
            raise refused.value
        except ApplicationError:
            activity_log.warning("Completing activity as failed", exc_info=True)  # as Temporal's worker does
    finally:
        activity_log.removeHandler(handler)
    assert "Completing activity as failed" in written.getvalue() and "450" in written.getvalue()
    assert "orsolya" not in written.getvalue().lower() and "[redacted]" in written.getvalue()
