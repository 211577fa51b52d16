"""`wait_until: {at: …, offset: …}`: waiting until a moment from the file, a lead property or an event seen
since enrollment, played on the time-skipping server with the real workflows, activities and SMTP server
(the entering event's form is the shipped webinar reminder's, in test_campaigns.py)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from leadflow.content.loader import load_content
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Message
from tests.support.helpers import Inbox, copy_content, eventually
from tests.support.stories import DAY, about, enrollments, journal, play, sent_at, subjects
from tests.support.stories import email_template as template
from worker import running_worker

SEGMENT = """\
id: trialists
name: Trialists
entry: {event: trial_started}
"""
SEQUENCE = """\
id: renewal
name: Renewal
segment: trialists
steps:
  - wait_until: {at: {lead_property: renewal_at}, offset: -2d}
  - send: {channel: email, template: renewal}
  - wait_until: {at: {event: call_booked, property: slot}, offset: -1h}
  - send: {channel: email, template: call_soon}
  - wait_until: {at: 'FIXED'}
  - send: {channel: email, template: last_day}
"""


def on_time(sent: datetime, moment: datetime) -> bool:
    """Sent at `moment` (a whole minute), but for the real milliseconds the send itself takes."""
    return timedelta(0) <= sent - moment < timedelta(seconds=5)


def moments_content(tmp_path: Path, fixed: datetime) -> Path:
    copy_content(tmp_path)
    (tmp_path / "segments/trialists.yaml").write_text(SEGMENT)
    (tmp_path / "templates/sequences/renewal.yaml").write_text(SEQUENCE.replace("FIXED", fixed.isoformat()))
    for name in ("renewal", "call_soon", "last_day"):
        (tmp_path / f"templates/email/{name}.j2").write_text(template(name))
    return tmp_path


async def test_waits_until_a_lead_property_an_event_since_enrollment_and_a_date_in_the_file(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, tmp_path: Path
) -> None:
    """1 renews in 3 days and books a call (slot on day 4), then, while waiting for it, moves it to day 5: each
    wait ends at its moment, the call's when the newer booking says. 2 has no renewal date and books no call, 3's renewal
    date is not a date: their waits are skipped, journaled, and the sequence goes on at once. 4 unsubscribes
    while waiting: the wait ends there. All wait for the date written in the file (day 6)."""
    now = (await skipping.get_current_time()).replace(second=0, microsecond=0)
    fixed = now + 6 * DAY
    runtime = dataclasses.replace(runtime, content=load_content(moments_content(tmp_path, fixed)))
    renews = (now + 3 * DAY).isoformat()
    report = await play(
        skipping,
        runtime,
        "renewal",
        {
            "lead": {"renewal_at": renews},
            "lead_overrides": {2: {"renewal_at": None}, 3: {"renewal_at": "next tuesday"}},
            "horizon": "7d",
            "events": [
                {"at": "0m", "type": "trial_started"},
                {"at": "12h", "type": "call_booked", "dates": {"slot": "4d"}, "leads": [1]},
                {"at": "2d", "type": "call_booked", "dates": {"slot": "5d"}, "leads": [1]},
                {"at": "12h", "type": "unsubscribed", "leads": [4]},
            ],
        },
        leads=4,
    )
    start = report.started_at
    assert subjects(inbox, 1) == ["renewal", "call_soon", "last_day"]
    assert on_time(sent_at(runtime, 1, "renewal"), now + DAY)  # renewal_at minus two days
    assert about(sent_at(runtime, 1, "call_soon") - start, 5 * DAY - timedelta(hours=1))  # the moved slot
    assert on_time(sent_at(runtime, 1, "last_day"), fixed)
    waits = [detail for _, detail in journal(runtime, 1) if detail.startswith("waiting until")]
    assert waits[0] == f"waiting until {(now + DAY).isoformat()}"
    assert len(waits) == 4 and waits[-1] == f"waiting until {fixed.isoformat()}"  # the call's read twice

    for number, reason in (
        (2, "skipped: the lead's renewal_at is missing"),
        (3, "skipped: the lead's renewal_at is not a date-time like 2027-01-14T16:00:00Z"),
    ):
        assert subjects(inbox, number) == ["renewal", "call_soon", "last_day"]
        assert ("0", reason) in journal(runtime, number)
        assert ("2", "skipped: no call_booked since enrollment") in journal(runtime, number)
        assert about(sent_at(runtime, number, "call_soon") - start, timedelta(0))
        assert on_time(sent_at(runtime, number, "last_day"), fixed)
        assert "next tuesday" not in str(journal(runtime, number))  # a property's value is not repeated

    assert subjects(inbox, 4) == []
    [quit_early] = enrollments(runtime, 4)
    assert quit_early.status == "exited" and about(quit_early.finished_at - start, timedelta(hours=12))


def test_a_date_written_in_the_file_is_read_with_its_time_zone() -> None:
    from leadflow.sequences.model import Moment

    moment = Moment.model_validate({"at": "2027-01-14T17:00:00+01:00", "offset": "-1d"})
    assert moment.resolve(moment.at).at == datetime(2027, 1, 13, 16, 0, tzinfo=UTC)


CHECKED = {
    "segments/plain.yaml": "id: plain\nname: Plain\nentry: {event: trial_started}\n",
    "segments/scored.yaml": "id: scored\nname: Scored\nentry: {score: 40}\n",
    "segments/typos.yaml": "id: typos\nname: Typos\nentry: {event: trial_started}\n",
    "templates/sequences/dated.yaml": """\
id: dated
name: Dated
segment: plain
steps:
  - wait_until: {at: '2020-01-14T16:00:00Z', offset: 1d}
  - wait_until: {at: {event_property: starts_at}, offset: -1d}
  - wait_until: {at: {event: webinar_registered, property: starts_at}, offset: -1d}
  - wait_until: {at: {lead_property: renewal_at}, offset: -30d}
  - wait_until: {at: '2999-01-14T16:00:00+01:00'}
""",
    "templates/sequences/scored.yaml": """\
id: scored
name: Scored
segment: scored
steps:
  - wait_until: {at: {event_property: starts_at}}
""",
    "templates/sequences/typos.yaml": """\
id: typos
name: Typos
segment: typos
steps:
  - wait_until: {at: '2027-01-14T16:00'}
  - wait_until: {at: {lead: renewal_at}}
  - wait_until: {at: {lead_property: renewal_at}, offset: soon}
  - wait_until: {days: weekdays, start: '09:00', offset: 1d}
""",
}


def test_check_reports_a_past_date_a_property_no_entering_event_gives_and_a_bad_moment(
    tmp_path: Path,
) -> None:
    copy_content(tmp_path)
    for name, text in CHECKED.items():
        (tmp_path / name).write_text(text)
    leadflow = Path(sys.executable).parent / "leadflow"
    run = subprocess.run([str(leadflow), "check", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    lines = (run.stdout + run.stderr).replace("\n  ", " ").splitlines()

    def reported(name: str, line: int, words: str) -> bool:
        prefix = f"{tmp_path / 'templates/sequences' / name}:{line}: "
        return any(entry.startswith(prefix) and words in " ".join(entry.split()) for entry in lines)

    assert reported(
        "dated.yaml", 5, "2020-01-15T16:00:00+00:00 (`at` moved by the offset) is already past"
    ), lines
    assert reported(
        "dated.yaml",
        6,
        "not every trial_started event that makes a lead enter segment 'plain' has 'starts_at'",
    ), lines
    assert reported("scored.yaml", 5, "no event makes a lead enter segment 'scored'"), lines
    assert reported("typos.yaml", 5, "2027-01-14T16:00:00 has no time zone"), lines
    assert reported("typos.yaml", 6, "`at` is a date-time like 2027-01-14T16:00:00Z, {event: TYPE"), lines
    assert reported("typos.yaml", 7, "duration 'soon' is not like 30m"), lines
    assert reported("typos.yaml", 8, "wait_until.offset: unknown field"), lines
    # The later moments of dated.yaml are fine; the shipped content's moment (webinar_reminder.yaml) too.
    assert not any(f"dated.yaml:{line}:" in entry for entry in lines for line in (7, 8, 9)), lines
    assert not any("webinar_reminder" in entry for entry in lines), lines
    assert "Traceback" not in run.stdout + run.stderr


# The webinar campaign before registrants were spared the invite: everyone invited on day 7, then a branch.
EBOOK_BEFORE_DATES = """\
id: ebook_follow_up
name: Ebook follow-up then webinar invite
segment: ebook_downloaders
reenroll:
  after: 90d
steps:
  - send: {channel: email, template: ebook_delivery}
  - wait: 3d
  - send: {channel: email, template: ebook_tips}
  - wait: 4d
  - send: {channel: email, template: webinar_invite}
  - wait: 3d
  - branch:
      if: {event: webinar_registered}
      then:
        - send: {channel: email, template: webinar_reminder}
        - goal: {event: webinar_registered}
      else:
        - send: {channel: email, template: webinar_last_nudge}
        - goal: {event: webinar_registered}
        - wait: 4d
"""


async def test_a_lead_inside_the_campaign_before_the_new_version_finishes_the_version_it_entered(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, tmp_path: Path
) -> None:
    """Lo downloads the ebook under the old file, then the worker loads today's; Lo registers (as the old
    sample site did, without a date) and is invited and reminded as the old version says. Ny enters today's
    version and registers an hour later with a date: never invited, reminded a day before the webinar."""
    copy_content(tmp_path)
    (tmp_path / "templates/sequences/ebook_follow_up.yaml").write_text(EBOOK_BEFORE_DATES)
    for path in ("segments/webinar_registrants.yaml", "templates/sequences/webinar_reminder.yaml"):
        (tmp_path / path).unlink()
    today = runtime.content
    runtime.content = load_content(tmp_path)
    upsert_lead(runtime.db, LeadIn(email="lo@initech.test"))
    upsert_lead(runtime.db, LeadIn(email="ny@initech.test"))
    async with running_worker(skipping.client, runtime) as router:
        ingest_events(runtime.db, [EventIn(id="lo-ebook", type="ebook_downloaded", email="lo@initech.test")])
        router.wake()
        await eventually(lambda: inbox.to("lo@initech.test"), message="Lo got no ebook")
        runtime.content = today  # what a worker restarted on the new files loads
        start = await skipping.get_current_time()
        ingest_events(runtime.db, [EventIn(id="ny-ebook", type="ebook_downloaded", email="ny@initech.test")])
        router.wake()
        await eventually(lambda: inbox.to("ny@initech.test"), message="Ny got no ebook")
        await skipping.sleep(timedelta(hours=1))
        starts_at = (start + 12 * DAY).isoformat()
        seats = [
            EventIn(id="lo-seat", type="webinar_registered", email="lo@initech.test"),
            EventIn(
                id="ny-seat",
                type="webinar_registered",
                email="ny@initech.test",
                properties={"starts_at": starts_at},
            ),
        ]
        ingest_events(runtime.db, seats)
        router.wake()
        await skipping.sleep(timedelta(days=15))
        await eventually(lambda: len(inbox.to("ny@initech.test")) == 3, message="Ny was not reminded")
        await eventually(
            lambda: len(inbox.to("lo@initech.test")) == 4, message="Lo's old version did not end"
        )
    assert [m["Subject"] for m in inbox.to("lo@initech.test")] == [
        "Your ebook: The Nurture Playbook",
        "3 tips from the Nurture Playbook",
        "You, join our live webinar on lead nurturing",
        "See you at the live webinar",
    ]
    assert [m["Subject"] for m in inbox.to("ny@initech.test")] == [
        "Your ebook: The Nurture Playbook",
        "3 tips from the Nurture Playbook",
        "See you at the live webinar",
    ]
    with runtime.db.read() as session:
        reminded = session.scalars(
            select(Message.sent_at).where(Message.template == "webinar_reminder").order_by(Message.lead_id)
        ).all()
    assert round((reminded[0] - start) / DAY, 2) == 10  # Lo: the old version's day-10 reminder
    assert about(reminded[1] - start, 11 * DAY)  # Ny: a day before its webinar
