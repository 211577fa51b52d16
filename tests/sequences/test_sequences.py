"""Every step kind and every exit path of a sequence, on the time-skipping server with real activities,
store and SMTP server; and a sequence edited while leads are inside it."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment

from activities.sending import SendActivities
from leadflow.content.loader import load_content
from leadflow.contracts import StepReached, StepsReached
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Enrollment, EnrollmentStep, Message
from leadflow.sequences.model import Variant
from tests.support.helpers import Inbox, copy_content, eventually
from tests.support.stories import DAY, about, enrollments, journal, play, sent_at, subjects, trial_content
from worker import running_worker
from workflows.sequence import pick_variant

EBOOK = {"at": "0m", "type": "ebook_downloaded"}


@pytest.fixture
def trial_runtime(runtime: Runtime, tmp_path: Path) -> Runtime:
    return dataclasses.replace(runtime, content=load_content(trial_content(tmp_path)))


async def test_split_cap_and_temperature_branch(
    skipping: WorkflowEnvironment,
    trial_runtime: Runtime,
    inbox: Inbox,
) -> None:
    """16 trialists: an A/B split drawn and recorded per lead, a second email held back by the daily cap,
    and a branch on temperature and score; lead 1 becomes sales-qualified and stays in the sequence."""
    leads = 16
    await play(
        skipping,
        trial_runtime,
        "trial_nurture",
        {
            "horizon": "4d",
            "events": [
                {"at": "0m", "type": "trial_started"},
                {"at": "30m", "type": "demo_requested", "leads": [1]},
                {"at": "30m", "type": "page_viewed", "properties": {"url": "/pricing"}, "leads": [1]},
                {"at": "40m", "type": "page_viewed", "properties": {"url": "/pricing/teams"}, "leads": [1]},
            ],
        },
        leads=leads,
    )
    variants = Counter()
    for number in range(1, leads + 1):
        [drawn] = [detail for step, detail in journal(trial_runtime, number) if detail.startswith("split")]
        variant = drawn.removeprefix("split: variant ")
        variants[variant] += 1
        assert subjects(inbox, number)[0] == f"variant_{variant.lower()}"
    assert variants["A"] > 0 and variants["B"] > 0, variants  # both drawn: fails once in 30,000 runs
    # The daily cap (sending.yaml) holds the second email until a day after the first.
    first = sent_at(trial_runtime, 2, "variant_a" if subjects(inbox, 2)[0] == "variant_a" else "variant_b")
    assert about(sent_at(trial_runtime, 2, "capped") - first, DAY)
    assert any(detail.startswith("deferred until") for _, detail in journal(trial_runtime, 2))
    # Lead 1 is hot (score 80: demo + pricing): handed to sales, but this sequence says it keeps nurturing.
    assert subjects(inbox, 1)[1:] == ["capped", "hot"]
    assert subjects(inbox, 2)[1:] == ["capped", "cold"]
    assert enrollments(trial_runtime, 1)[0].status == "running"


async def test_leaving_the_segment_ends_the_sequence_and_reenrollment_never_repeats(
    skipping: WorkflowEnvironment,
    trial_runtime: Runtime,
    inbox: Inbox,
) -> None:
    await play(
        skipping,
        trial_runtime,
        "trial_nurture",
        {
            "horizon": "12d",
            "events": [
                {"at": "0m", "type": "trial_started"},
                {"at": "30m", "type": "page_viewed", "properties": {"url": "/careers/jobs"}, "leads": [1]},
                {"at": "10d", "type": "trial_started", "leads": [2]},
            ],
        },
        leads=2,
    )
    [left] = enrollments(trial_runtime, 1)
    assert (left.status, left.exit_reason) == ("exited", "left the segment trialists")
    assert len(subjects(inbox, 1)) == 1  # the split's email only: the capped one was never due
    [only] = enrollments(trial_runtime, 2)  # re-enrollment "never": the second trial start changes nothing
    assert only.status == "completed"


async def test_handed_to_sales_and_opted_out_leads_leave_the_ebook_sequence(
    skipping: WorkflowEnvironment,
    runtime: Runtime,
    inbox: Inbox,
) -> None:
    await play(
        skipping,
        runtime,
        "ebook_follow_up",
        {
            "horizon": "5d",
            "events": [
                {"at": "0m", "type": "ebook_downloaded"},
                {"at": "1d", "type": "demo_requested", "leads": [1]},
                {"at": "1d", "type": "page_viewed", "properties": {"url": "/pricing"}, "leads": [1]},
                {"at": "1d", "type": "page_viewed", "properties": {"url": "/pricing"}, "leads": [1]},
                {"at": "2d", "type": "unsubscribed", "leads": [2]},
            ],
        },
        leads=3,
    )
    handed, opted, staying = (enrollments(runtime, number)[0] for number in (1, 2, 3))
    assert (handed.status, handed.exit_reason) == ("exited", "handed to sales")
    assert about(handed.finished_at - handed.started_at, DAY)
    assert (opted.status, opted.exit_reason) == ("exited", "opted out of email")
    assert about(opted.finished_at - opted.started_at, 2 * DAY)  # at once, not at the next send
    assert staying.status == "running"
    assert len(subjects(inbox, 1)) == len(subjects(inbox, 2)) == 1 and len(subjects(inbox, 3)) == 2


async def test_the_journal_shows_the_step_a_lead_waits_in_and_each_step_once(
    skipping: WorkflowEnvironment,
    runtime: Runtime,
    inbox: Inbox,
) -> None:
    """Journal entries ride along with the step's own activity, or are written just before a wait: two days
    into the ebook sequence the lead's journal already holds the first email and the three-day wait it is
    in. An entry handed over twice (a retried send carries it again) is written once."""
    await play(skipping, runtime, "ebook_follow_up", {"horizon": "2d", "events": [EBOOK]}, leads=1)
    [enrollment] = enrollments(runtime, 1)
    assert (enrollment.status, enrollment.current_step) == ("running", 1)
    with runtime.db.read() as session:
        rows = session.scalars(select(EnrollmentStep).where(EnrollmentStep.lead_id == 1)).all()
    assert [(row.step, row.kind) for row in rows] == [("0", "send"), ("1", "wait")]
    again = StepsReached(
        [StepReached(enrollment.workflow_id, 1, label="1", kind="wait", lead_id=1, at=rows[1].at)]
    )
    await SendActivities(runtime).record_steps(again)
    with runtime.db.read() as session:
        assert session.scalar(select(func.count(EnrollmentStep.id))) == 2


async def test_reenrollment_after_the_cool_down(
    skipping: WorkflowEnvironment,
    runtime: Runtime,
    inbox: Inbox,
) -> None:
    """The ebook sequence re-enrolls 90 days after the previous enrollment ended, not before."""
    report = await play(
        skipping,
        runtime,
        "ebook_follow_up",
        {
            "horizon": "130d",
            "events": [
                {"at": "0m", "type": "ebook_downloaded"},
                {"at": "30d", "type": "ebook_downloaded"},
                {"at": "110d", "type": "ebook_downloaded"},
            ],
        },
        leads=1,
    )
    first, second = enrollments(runtime, 1)
    assert first.status == second.status == "completed"
    assert about(second.started_at - report.started_at, 110 * DAY)
    assert second.workflow_id == f"{first.workflow_id}-2"
    assert subjects(inbox, 1).count("Your ebook: The Nurture Playbook") == 2


async def test_a_sequence_edited_while_leads_are_inside_keeps_them_on_their_version(
    skipping: WorkflowEnvironment,
    runtime: Runtime,
    inbox: Inbox,
    tmp_path: Path,
) -> None:
    """Lead 1 enrolls in version 1; the marketer drops the tips email and the worker loads the new file;
    lead 2 enrolls in version 2. Each finishes the version it entered."""
    copy_content(tmp_path)
    edited = tmp_path / "templates/sequences/ebook_follow_up.yaml"
    edited.write_text(edited.read_text().replace("  - send: {channel: email, template: ebook_tips}\n", ""))
    version_2 = dataclasses.replace(runtime, content=load_content(tmp_path))
    assert (
        version_2.content.sequences["ebook_follow_up"].version
        != runtime.content.sequences["ebook_follow_up"].version
    )
    one, _ = upsert_lead(runtime.db, LeadIn(email="one@initech.test"))
    two, _ = upsert_lead(runtime.db, LeadIn(email="two@initech.test"))
    version_1 = runtime.content
    async with running_worker(skipping.client, runtime) as router:
        ingest_events(
            runtime.db, [EventIn(id="one-ebook", type="ebook_downloaded", email="one@initech.test")]
        )
        router.wake()
        await eventually(lambda: inbox.to("one@initech.test"), message="lead 1 got no ebook")
        runtime.content = version_2.content  # what a worker restarted on the edited files loads
        ingest_events(
            runtime.db, [EventIn(id="two-ebook", type="ebook_downloaded", email="two@initech.test")]
        )
        router.wake()
        await eventually(lambda: inbox.to("two@initech.test"), message="lead 2 got no ebook")
        await skipping.sleep(timedelta(days=15))
        await eventually(lambda: _finished(runtime) == 2, message="the two enrollments did not finish")
    tips = "3 tips from the Nurture Playbook"
    assert tips in [m["Subject"] for m in inbox.to("one@initech.test")]
    assert tips not in [m["Subject"] for m in inbox.to("two@initech.test")]
    assert len(inbox.to("two@initech.test")) == len(inbox.to("one@initech.test")) - 1
    with runtime.db.read() as session:
        versions = dict(session.execute(select(Enrollment.lead_id, Enrollment.sequence_version)).all())
        templates = set(session.scalars(select(Message.template).where(Message.lead_id == two.id)))
    assert versions[one.id] == version_1.sequences["ebook_follow_up"].version
    assert versions[two.id] == version_2.content.sequences["ebook_follow_up"].version
    assert "ebook_tips" not in templates


def test_split_weights_share_the_draws() -> None:
    variants = [Variant(name="A", weight=3), Variant(name="B", weight=1)]
    picks = Counter(pick_variant(variants, draw / 1000).name for draw in range(1000))
    assert picks == {"A": 750, "B": 250}


def _finished(runtime: Runtime) -> int:
    with runtime.db.read() as session:
        return len(session.scalars(select(Enrollment).where(Enrollment.status != "running")).all())
