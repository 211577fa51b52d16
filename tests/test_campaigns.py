"""The three shipped campaigns as stories, played on the time-skipping server with the real workflows,
activities, store (SQLite and PostgreSQL) and SMTP server: weeks of nurture in seconds."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from leadflow.content.loader import load_content
from leadflow.runtime import Runtime
from leadflow.simulation import simulated_email
from leadflow.store.models import Event, SegmentMembership
from tests.conftest import Inbox, copy_content
from tests.stories import DAY, about, enrollments, journal, play, sent_at, subjects


async def test_abandoned_form_reminds_by_email_then_sms_and_stops_on_submit(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox
) -> None:
    """1 abandons the form (SMS consent), 2 submits within the 30 minutes, 3 submits after the reminder."""
    report = await play(
        skipping,
        runtime,
        "abandoned_form",
        {
            "lead": {"first_name": "Sam", "sms_consent": True},
            "horizon": "3d",
            "events": [
                {"at": "0m", "type": "form_started", "properties": {"form": "demo"}},
                {"at": "10m", "type": "form_submitted", "properties": {"form": "demo"}, "leads": [2]},
                {"at": "2h", "type": "form_submitted", "properties": {"form": "demo"}, "leads": [3]},
            ],
        },
        leads=3,
    )
    start = report.started_at
    # 1: reminded by email when the 30 minutes are over, the SMS step reached the next day.
    assert subjects(inbox, 1) == ["Sam, you were almost done"]
    assert about(sent_at(runtime, 1, "form_reminder") - start, timedelta(minutes=30))
    assert ("2", "branch: then") in journal(runtime, 1)
    # Twilio is not configured in this story: the SMS step is reached, and skipped (the sequence goes on).
    assert (
        "2.then.0",
        "skipped: SMS is not configured (set LEADFLOW_TWILIO_ACCOUNT_SID and friends)",
    ) in journal(runtime, 1)
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
    assert report.totals["outcomes"] == {"completed": 1, "converted: goal form_submitted reached": 1}


async def test_event_page_regulars_get_help_in_business_hours_then_a_reminder(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox
) -> None:
    """1 views event pages three times in two days; 2 too but takes push; 3 registers after the help email;
    4 views them three times over ten days (never three within seven)."""
    view = {"type": "page_viewed"}
    report = await play(
        skipping,
        runtime,
        "event_page_help",
        {
            "lead": {"first_name": "Eve", "timezone": "America/New_York"},
            "lead_overrides": {2: {"push_subscribed": True}},
            "horizon": "14d",
            "events": [
                {**view, "at": "0m", "properties": {"url": "/events/summit-2026"}},
                {**view, "at": "1h", "properties": {"url": "/blog/what-is-nurture"}, "leads": [1, 2, 3]},
                {**view, "at": "1d", "properties": {"url": "/events/summit-2026/agenda"}, "leads": [1, 2, 3]},
                {**view, "at": "2d", "properties": {"url": "/events/summit-2026"}, "leads": [1, 2, 3]},
                {**view, "at": "5d", "properties": {"url": "/events/summit-2026"}, "leads": [4]},
                {"at": "3d", "type": "event_registered", "leads": [3]},
                {**view, "at": "10d", "properties": {"url": "/EVENTS/summit-2026"}, "leads": [4]},
            ],
        },
        leads=4,
    )
    start = report.started_at
    help_mail = "Eve, everything about the event in one place"
    assert subjects(inbox, 1) == [help_mail, "Seats are going: register for the event"]
    helped = sent_at(runtime, 1, "event_help")
    local = helped.astimezone(ZoneInfo("America/New_York"))
    assert helped - start >= 2 * DAY and local.weekday() < 5 and 9 <= local.hour < 18, local
    assert about(sent_at(runtime, 1, "event_registration_reminder") - helped, 2 * DAY)
    assert enrollments(runtime, 1)[0].status == "completed"
    # 2: the push channel is not there yet: the step is skipped, the reminder still goes by email.
    assert any(label == "1.then.0" and what.startswith("skipped: ") for label, what in journal(runtime, 2))
    assert subjects(inbox, 2) == ["Seats are going: register for the event"]
    # 3: registered on day 3 (after the help email, unless a weekend held it back like lead 1's): converted,
    # no reminder.
    assert subjects(inbox, 3) == ([help_mail] if helped - start < 3 * DAY else [])
    assert (enrollments(runtime, 3)[0].status, enrollments(runtime, 3)[0].exit_reason) == (
        "converted",
        "goal event_registered reached",
    )
    assert enrollments(runtime, 4) == []
    assert report.totals["enrolled"] == 3


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
async def test_ebook_then_webinar_registrants_get_a_reminder_the_rest_a_last_nudge(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, sandboxed: bool
) -> None:
    # Workers run workflows outside the SDK's sandbox (LEADFLOW_WORKFLOW_SANDBOX): the story is the same.
    settings = runtime.settings.model_copy(update={"workflow_sandbox": sandboxed})
    runtime = dataclasses.replace(runtime, settings=settings)
    report = await play(
        skipping,
        runtime,
        "ebook_follow_up",
        {
            "lead": {"first_name": "Mo"},
            "horizon": "20d",
            "events": [
                {"at": "0m", "type": "ebook_downloaded"},
                {"at": "8d", "type": "webinar_registered", "leads": [1]},
            ],
        },
        leads=2,
    )
    start = report.started_at
    common = [
        "Your ebook: The Nurture Playbook",
        "3 tips from the Nurture Playbook",
        "Mo, join our live webinar on lead nurturing",
    ]
    assert subjects(inbox, 1) == [*common, "See you at the live webinar"]
    assert subjects(inbox, 2) == [*common, "Last call: the nurture webinar is on Thursday"]
    days = [
        (sent_at(runtime, 2, template) - start) / DAY
        for template in ("ebook_delivery", "ebook_tips", "webinar_invite", "webinar_last_nudge")
    ]
    assert [round(day, 2) for day in days] == [0, 3, 7, 10]
    assert ("6", "branch: then") in journal(runtime, 1) and ("6", "branch: else") in journal(runtime, 2)
    [registrant], [rest] = enrollments(runtime, 1), enrollments(runtime, 2)
    assert (registrant.status, registrant.exit_reason) == ("converted", "goal webinar_registered reached")
    assert rest.status == "completed" and (rest.finished_at - start) / DAY >= 14
    assert report.totals["messages"]["email webinar_reminder sent"] == 1
