"""The three shipped campaigns as stories, played on the time-skipping server with the real workflows,
activities, store (SQLite and PostgreSQL) and SMTP server: weeks of nurture in seconds."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from leadflow.content.loader import load_content
from leadflow.http.app import create_app
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Event, SegmentMembership
from leadflow.sequences.simulation import simulated_email
from tests.support.helpers import API_KEY, Inbox, channel_settings, copy_content
from tests.support.peers import PushService, TwilioApi
from tests.support.stories import DAY, about, enrollments, journal, play, sent_at, subjects


@pytest.fixture
def settings_overrides(twilio: TwilioApi) -> dict[str, Any]:
    return channel_settings(twilio)  # SMS to the loopback Twilio, web push to the loopback push service


@asynccontextmanager
async def api_of(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP API, as a site's backend calls it (the events it stores are routed once the play starts).
    Create the leads 1..N in order through it: the stories read simulated lead N as lead id N."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as api:
        yield api


async def test_abandoned_form_reminds_by_email_then_sms_and_stops_on_submit(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, twilio: TwilioApi
) -> None:
    """1 abandons the form, with a phone and SMS consent recorded through the API; 2 submits within the 30
    minutes; 3 submits after the reminder; 4 abandons it with a phone but no consent; 5 with consent
    withdrawn by a STOP reply, stored like Twilio's webhook stores it."""
    async with api_of(runtime) as api:
        for number in range(1, 6):  # in order: lead N is the Nth simulated lead
            phone = {"phone": f"+1415555010{number}"} if number != 2 else {}
            lead = {"email": simulated_email(number), **phone}
            assert (await api.post("/v1/leads", json=lead)).status_code == 201
        for number in (1, 3, 5):
            consent = {"status": "granted", "source": "demo form, SMS box"}
            granted = await api.put(f"/v1/leads/{simulated_email(number)}/consent/sms", json=consent)
            assert granted.status_code == 200 and granted.json()["status"] == "granted"
        withdrawn = {"status": "withdrawn", "source": "SMS reply STOP"}
        assert (await api.put(f"/v1/leads/{simulated_email(5)}/consent/sms", json=withdrawn)).is_success
    form = {"form": "demo", "url": "http://127.0.0.1:8000/sample/#get-it"}
    report = await play(
        skipping,
        runtime,
        "abandoned_form",
        {
            "lead": {"first_name": "Sam"},
            "horizon": "3d",
            "events": [
                {"at": "0m", "type": "form_started", "properties": form},
                {"at": "10m", "type": "form_submitted", "properties": form, "leads": [2]},
                {"at": "2h", "type": "form_submitted", "properties": form, "leads": [3]},
            ],
        },
        leads=5,
    )
    start = report.started_at
    # 1: reminded by email when the 30 minutes are over, then the next day an SMS at the loopback Twilio.
    assert subjects(inbox, 1) == ["Sam, you were almost done"]
    assert about(sent_at(runtime, 1, "form_reminder") - start, timedelta(minutes=30))
    assert ("2", "branch: then") in journal(runtime, 1)
    assert sent_at(runtime, 1, "form_reminder", "sms") - start >= DAY + timedelta(minutes=30)
    assert [message["To"] for message in twilio.messages] == ["+14155550101"]
    [first] = enrollments(runtime, 1)
    assert first.status == "completed" and first.finished_at - start >= DAY + timedelta(minutes=30)
    # 2: submitted in time, so never in the segment: nothing sent.
    assert subjects(inbox, 2) == [] and enrollments(runtime, 2) == []
    # 3: reminded, then submitted: converted before the SMS, and out of the segment.
    assert subjects(inbox, 3) == ["Sam, you were almost done"]
    [third] = enrollments(runtime, 3)
    assert (third.status, third.exit_reason) == ("converted", "goal form_submitted reached")
    assert not any(step.startswith("2") for step, _ in journal(runtime, 3))
    with runtime.db.read() as session:
        membership = session.scalars(select(SegmentMembership).where(SegmentMembership.lead_id == 3)).one()
    assert membership.left_at is not None and about(membership.left_at - start, timedelta(hours=2))
    # 4 (a phone, no consent) and 5 (consent withdrawn): the email only; the SMS branch is not taken.
    for number in (4, 5):
        assert subjects(inbox, number) == ["Sam, you were almost done"]
        assert ("2", "branch: else") in journal(runtime, number)
    assert report.totals["outcomes"] == {"completed": 3, "converted: goal form_submitted reached": 1}


SAMPLE_EVENT_PAGE = "http://127.0.0.1:8000/sample/events.html"


def page_view(url: str, snippet: bool = True) -> dict[str, Any]:
    """A page view as the snippet sends it (location.href, location.pathname, …), or as a server posts it
    to /v1/events, with the full address alone."""
    if not snippet:
        return {"type": "page_viewed", "properties": {"url": url}}
    path = urlsplit(url).path
    return {
        "type": "page_viewed",
        "properties": {"url": url, "path": path, "title": "Events", "referrer": ""},
    }


async def test_event_page_regulars_get_help_in_business_hours_then_a_reminder(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, push_service: PushService
) -> None:
    """1 views the sample site's event page three times in two days (the snippet's page views); 2 too, and its
    browser subscribed to push through the API; 3 registers with the page's button after the help email; 4
    views event pages three times over ten days (never three within seven); 5's views are posted by a server
    with full addresses only."""
    async with api_of(runtime) as api:
        for number in range(1, 6):  # in order: lead N is the Nth simulated lead
            assert (await api.post("/v1/leads", json={"email": simulated_email(number)})).status_code == 201
        browser = push_service.browser("eves-laptop")
        subscription = {"email": simulated_email(2), "subscription": browser.subscription()}
        assert (await api.post("/v1/push/subscriptions", json=subscription)).status_code == 201
    registered = {"webinar": "growth-summit", "url": SAMPLE_EVENT_PAGE, "text": "Save my seat"}
    report = await play(
        skipping,
        runtime,
        "event_page_help",
        {
            "lead": {"first_name": "Eve", "timezone": "America/New_York"},
            "horizon": "14d",
            "events": [
                {**page_view(SAMPLE_EVENT_PAGE), "at": "0m", "leads": [1, 2, 3, 4]},
                {**page_view("http://127.0.0.1:8000/sample/"), "at": "1h", "leads": [1, 2, 3]},
                {**page_view(SAMPLE_EVENT_PAGE + "#agenda"), "at": "1d", "leads": [1, 2, 3]},
                {**page_view(SAMPLE_EVENT_PAGE + "?utm_source=x"), "at": "2d", "leads": [1, 2, 3]},
                {**page_view(SAMPLE_EVENT_PAGE), "at": "5d", "leads": [4]},
                {"at": "3d", "type": "webinar_registered", "properties": registered, "leads": [3]},
                {**page_view(SAMPLE_EVENT_PAGE.upper()), "at": "10d", "leads": [4]},
                *(
                    {**page_view(f"https://www.acme.test/events/summit-2026/{part}", False), "leads": [5]}
                    | {"at": at}
                    for at, part in (("0m", ""), ("1d", "agenda"), ("2d", "faq"))
                ),
            ],
        },
        leads=5,
    )
    start = report.started_at
    help_mail = "Eve, everything about the event in one place"
    assert subjects(inbox, 1) == [help_mail, "Seats are going: register for the event"]
    helped = sent_at(runtime, 1, "event_help")
    local = helped.astimezone(ZoneInfo("America/New_York"))
    assert helped - start >= 2 * DAY and local.weekday() < 5 and 9 <= local.hour < 18, local
    assert about(sent_at(runtime, 1, "event_registration_reminder") - helped, 2 * DAY)
    assert enrollments(runtime, 1)[0].status == "completed"
    # 2: the push, at the loopback push service (which decrypted it), instead of the help email.
    assert ("1", "branch: then") in journal(runtime, 2)
    assert [(name, payload["title"]) for name, payload in push_service.delivered] == [
        ("eves-laptop", "Coming to the event?")
    ]
    assert subjects(inbox, 2) == ["Seats are going: register for the event"]
    # 3: registered on day 3 (after the help email, unless a weekend held it back like lead 1's): converted,
    # no reminder.
    assert subjects(inbox, 3) == ([help_mail] if helped - start < 3 * DAY else [])
    assert (enrollments(runtime, 3)[0].status, enrollments(runtime, 3)[0].exit_reason) == (
        "converted",
        "goal webinar_registered reached",
    )
    assert enrollments(runtime, 4) == []
    # 5: a path is read from the full address a server posted.
    assert subjects(inbox, 5) == [help_mail, "Seats are going: register for the event"]
    assert report.totals["enrolled"] == 4


async def test_a_visitor_who_registers_in_the_flush_of_her_third_view_is_never_helped(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox
) -> None:
    """The snippet flushes every few seconds: the third event-page view and "Save my seat" arrive together.
    She has registered: she is not a regular who needs help, then or on any later view."""
    registered = {"webinar": "growth-summit", "url": SAMPLE_EVENT_PAGE, "text": "Save my seat"}
    await play(
        skipping,
        runtime,
        "event_page_help",
        {
            "lead": {"first_name": "Nia", "timezone": "America/New_York"},
            "horizon": "7d",
            "events": [
                {**page_view(SAMPLE_EVENT_PAGE), "at": "0m"},
                {**page_view(SAMPLE_EVENT_PAGE + "#agenda"), "at": "1d"},
                {**page_view(SAMPLE_EVENT_PAGE), "at": "2d"},
                {"at": "2d", "type": "webinar_registered", "properties": registered},
            ],
        },
        leads=1,
    )
    assert subjects(inbox, 1) == []
    assert enrollments(runtime, 1) == []


async def test_an_event_page_regular_who_goes_quiet_leaves_when_the_seven_days_slide_past(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, tmp_path: Path
) -> None:
    """1 views three event pages within two hours, then nothing: seven days after the first view only two
    are left in the window, so at that moment (a durable timer: no new event comes) it leaves the segment and
    its sequence, which says `left_segment: true`, exits before its last email. 2 comes back on days 3 to 5:
    still a regular on day 9. (The sequence gets a last email 10 days on, so it is still running then.)"""
    copy_content(tmp_path)
    sequence = tmp_path / "templates/sequences/event_page_help.yaml"
    sequence.write_text(
        sequence.read_text() + "  - wait: 10d\n  - send: {channel: email, template: event_help}\n"
    )
    regulars = dataclasses.replace(runtime, content=load_content(tmp_path))
    view = {"type": "page_viewed"}
    report = await play(
        skipping,
        regulars,
        "event_page_help",
        {
            "lead": {"first_name": "Eve"},
            "horizon": "9d",
            "events": [
                {**view, "at": "0m", "properties": {"url": "/events/summit-2026"}},
                {**view, "at": "1h", "properties": {"url": "/events/summit-2026/agenda"}},
                {**view, "at": "2h", "properties": {"url": "/events/summit-2026/faq"}},
                *(
                    {**view, "at": f"{day}d", "properties": {"url": "/events/summit-2026"}, "leads": [2]}
                    for day in (3, 4, 5)
                ),
            ],
        },
        leads=2,
    )
    start = report.started_at
    [quiet] = enrollments(regulars, 1)
    assert (quiet.status, quiet.exit_reason) == ("exited", "left the segment event_page_regulars")
    assert about(quiet.finished_at - start, 7 * DAY)
    assert subjects(inbox, 1) == [
        "Eve, everything about the event in one place",
        "Seats are going: register for the event",
    ]
    [regular] = enrollments(regulars, 2)
    assert regular.status == "running" and len(subjects(inbox, 2)) == 2
    with regulars.db.read() as session:
        left = dict(session.execute(select(SegmentMembership.lead_id, SegmentMembership.left_at)).all())
    assert about(left[1] - start, 7 * DAY) and left[2] is None


async def test_the_ebook_email_names_the_ebook_the_lead_downloaded(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox
) -> None:
    """The download that enrolled the lead is the template's `event`: 1 downloaded "Lead Scoring 101" and
    gets it by name; 2's form sent no title, so the email names the default."""
    await play(
        skipping,
        runtime,
        "ebook_follow_up",
        {
            "horizon": "1h",
            "events": [
                {
                    "at": "0m",
                    "type": "ebook_downloaded",
                    "properties": {"title": "Lead Scoring 101"},
                    "leads": [1],
                },
                {"at": "0m", "type": "ebook_downloaded", "leads": [2]},
            ],
        },
        leads=2,
    )
    assert subjects(inbox, 1) == ["Your ebook: Lead Scoring 101"]
    [email] = inbox.to(simulated_email(1))
    assert "<strong>Lead Scoring 101</strong>" in email.get_body(preferencelist=("html",)).get_content()
    assert subjects(inbox, 2) == ["Your ebook: The Nurture Playbook"]
    [enrolled] = enrollments(runtime, 1)
    with runtime.db.read() as session:
        download = session.get(Event, enrolled.event_id)
    assert download is not None and download.properties == {"title": "Lead Scoring 101"}


@pytest.mark.parametrize("sandboxed", [True, False], ids=["in the sandbox", "as workers run it"])
async def test_a_registrant_is_never_invited_and_is_reminded_a_day_before_the_webinar(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, sandboxed: bool
) -> None:
    """All three download the ebook. 1 saves a seat an hour later, for a webinar 12 days after the download;
    2 never registers; 3 registers on day 8, after the invite, for a webinar 8.5 days after the download (less than a
    day away: reminded at once)."""
    # Workers run workflows outside the SDK's sandbox (LEADFLOW_WORKFLOW_SANDBOX): the story is the same.
    settings = runtime.settings.model_copy(update={"workflow_sandbox": sandboxed})
    runtime = dataclasses.replace(runtime, settings=settings)
    seat = {"webinar": "growth-summit", "webinar_title": "Growth Summit webinar"}  # as the sample site sends
    report = await play(
        skipping,
        runtime,
        "ebook_follow_up",
        {
            "lead": {"first_name": "Mo"},
            "horizon": "16d",
            "events": [
                {"at": "0m", "type": "ebook_downloaded"},
                {
                    "at": "1h",
                    "type": "webinar_registered",
                    "properties": seat,
                    "dates": {"starts_at": "12d"},
                    "leads": [1],
                },
                {
                    "at": "8d",
                    "type": "webinar_registered",
                    "properties": seat,
                    "dates": {"starts_at": "204h"},
                    "leads": [3],
                },
            ],
        },
        leads=3,
    )
    start = report.started_at
    ebook = ["Your ebook: The Nurture Playbook", "3 tips from the Nurture Playbook"]
    invited = [*ebook, "Mo, join our live webinar on lead nurturing"]
    assert subjects(inbox, 1) == [*ebook, "See you at the live webinar"]
    assert subjects(inbox, 2) == [*invited, "Last call: the nurture webinar is on Thursday"]
    assert subjects(inbox, 3) == [*invited, "See you at the live webinar"]
    # 1: reminded one day before the registration's starts_at, naming the webinar it registered for.
    assert about(sent_at(runtime, 1, "webinar_reminder") - start, 11 * DAY)
    [reminder] = [m for m in inbox.to(simulated_email(1)) if m["Subject"] == "See you at the live webinar"]
    assert "Growth Summit webinar" in reminder.get_body(preferencelist=("html",)).get_content()
    ebook_run, reminder_run = enrollments(runtime, 1)
    assert (ebook_run.status, ebook_run.exit_reason) == ("converted", "goal webinar_registered reached")
    # At the goal step, when the others are invited on day 7.
    assert abs(ebook_run.finished_at - sent_at(runtime, 2, "webinar_invite")) < timedelta(seconds=5)
    assert (reminder_run.sequence_id, reminder_run.status) == ("webinar_reminder", "completed")
    waited = [detail for step, detail in journal(runtime, 1) if detail.startswith("waiting until ")]
    assert waited == [f"waiting until {(start + 11 * DAY).isoformat()}"]
    # 2: invited on day 7, the last nudge on day 10, then the sequence ends.
    days = [
        (sent_at(runtime, 2, template) - start) / DAY
        for template in ("ebook_delivery", "ebook_tips", "webinar_invite", "webinar_last_nudge")
    ]
    assert [round(day, 2) for day in days] == [0, 3, 7, 10]
    [rest] = enrollments(runtime, 2)
    assert rest.status == "completed" and (rest.finished_at - start) / DAY >= 14
    # 3: the moment had passed when it registered: the reminder goes at once, and it says so.
    assert about(sent_at(runtime, 3, "webinar_reminder") - start, 8 * DAY)
    assert ("0", f"{(start + 7 * DAY + timedelta(hours=12)).isoformat()} has passed: going on") in journal(
        runtime, 3
    )
    assert report.totals["messages"]["email webinar_invite sent"] == 2
    assert report.totals["messages"]["email webinar_reminder sent"] == 2
