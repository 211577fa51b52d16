"""Only changes reach a lead's workflow (leadflow.intake.inert): page views that change nothing it acts on are
scored in the store and never signalled, one that makes the lead hot is; a running sequence still gets
every event it names; and a bot's thousands of events do not hold up another lead's hand-off."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from activities.leads import LeadActivities
from leadflow.content.loader import load_content
from leadflow.contracts import AbsenceTimer, AssessLeadResult, EventRef
from leadflow.intake.inert import InertEvents, what_the_workflow_acts_on
from leadflow.intake.ingest import EventIn, ingest_events
from leadflow.intake.router import LEAD_EVENTS_PER_DRAIN
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Enrollment, Event, Outbox, ScoreSnapshot, WorkflowTimer
from tests.support.helpers import Inbox, Stack, copy_content, eventually, running_stack

SAMPLE_SITE = "http://127.0.0.1:8000/sample"  # what the snippet sends from `leadflow dev`'s sample pages


def page_view(key: str, email: str, page: str) -> dict[str, Any]:
    """A page view as the snippet reports it (leadflow.js pageViewed), sent by the site's backend."""
    properties = {"url": f"{SAMPLE_SITE}/{page}", "path": f"/sample/{page}", "title": page, "referrer": ""}
    return {"id": key, "type": "page_viewed", "email": email, "properties": properties}


async def post(stack: Stack, *events: dict[str, Any]) -> None:
    response = await stack.api.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 202, response.text


async def lead(stack: Stack, email: str) -> dict[str, Any]:
    response = await stack.api.get(f"/v1/leads/{email}")
    assert response.status_code == 200, response.text
    return response.json()


async def signals(stack: Stack, lead_id: int) -> int:
    """`events` signals in the lead workflow's history."""
    handle = stack.client.get_workflow_handle(stack.runtime.settings.lead_workflow_id(lead_id))
    history = await handle.fetch_history()
    return sum(
        event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and event.workflow_execution_signaled_event_attributes.signal_name == "events"
        for event in history.events
    )


def count(runtime: Runtime, model: Any, lead_id: int) -> int:
    with runtime.db.read() as session:
        return int(
            session.scalar(select(func.count()).select_from(model).where(model.lead_id == lead_id)) or 0
        )


def outbox_empty(runtime: Runtime) -> bool:
    with runtime.db.read() as session:
        return not session.scalar(select(func.count(Outbox.id)))


async def first_assessed(stack: Stack, email: str) -> int:
    """The lead's id once its workflow has assessed it (and armed what it wakes for)."""
    await eventually(lambda: outbox_empty(stack.runtime))
    lead_id = (await lead(stack, email))["id"]
    await eventually(lambda: count(stack.runtime, WorkflowTimer, lead_id) == 1, message="never assessed")
    return int(lead_id)


async def test_fifty_page_views_that_change_nothing_are_scored_but_not_signalled_and_a_hot_one_is(
    stack: Stack,
) -> None:
    email = "dana@northwind.test"  # fit: VP 15, 1,000+ people 15, software 10, US 5 = 45, an MQL
    properties = {"job_title": "VP Marketing", "company_size": 1200, "industry": "software", "country": "US"}
    assert (await stack.api.post("/v1/leads", json={"email": email, "properties": properties})).is_success
    await post(stack, page_view("dana-0", email, "index.html"))
    lead_id = await first_assessed(stack, email)
    before = await lead(stack, email)
    assert (before["stage"], before["score"]["temperature"], before["score"]["total"]) == ("mql", "cold", 45)
    assert await signals(stack, lead_id) == 1

    pages = ["index.html", "thanks.html", "index.html?utm_source=news", "blog/lead-scoring", "thanks.html"]
    for flush in range(5):  # the snippet flushes what a visitor did every few seconds
        await post(stack, *(page_view(f"dana-{flush}-{n}", email, pages[n % 5]) for n in range(10)))
        await eventually(lambda: outbox_empty(stack.runtime))
    assert count(stack.runtime, Event, lead_id) == 51
    # The first blog post read makes her warm, and more blog points decay sooner than her workflow wakes:
    # it must know both. The other 30 to 40 views change nothing it acts on.
    assert await signals(stack, lead_id) - 1 <= 2
    assert stack.router.inert is not None and stack.router.inert.assessed >= 30
    # Scored in the store all the same: ten blog posts read (the rule's cap), in the ledger.
    quiet = await lead(stack, email)
    assert (quiet["stage"], quiet["score"]["temperature"], quiet["score"]["total"]) == ("mql", "warm", 55)
    with stack.runtime.db.read() as session:
        latest = session.scalars(
            select(ScoreSnapshot).where(ScoreSnapshot.lead_id == lead_id).order_by(ScoreSnapshot.id.desc())
        ).first()
    assert latest is not None and latest.score == 55

    seen = await signals(stack, lead_id)
    await post(stack, page_view("dana-pricing", email, "pricing.html"))  # 15 points: 70 makes her hot
    await eventually(lambda: outbox_empty(stack.runtime))
    hot = await eventually(lambda: _hot(stack, email), message="the pricing view never made her hot")
    assert hot["score"]["total"] == 70
    assert await signals(stack, lead_id) == seen + 1


async def _hot(stack: Stack, email: str) -> dict[str, Any] | None:
    item = await lead(stack, email)
    return item if item["score"]["temperature"] == "hot" else None


TRIAL_SEGMENT = "id: trialists\nname: Trialists\nentry: {event: trial_started}\n"
THANKS_GOAL_SEQUENCE = """\
id: trial_thanks
name: Trial until the thank-you page
segment: trialists
goal:
  event: page_viewed
  where: {path: {glob: '*/thanks*'}}
steps:
  - wait: 1d
"""


async def test_a_running_sequence_still_gets_the_page_view_its_goal_waits_for(
    runtime: Runtime, temporal: WorkflowEnvironment, inbox: Inbox, tmp_path: Path
) -> None:
    content_dir = copy_content(tmp_path)
    (content_dir / "segments/trialists.yaml").write_text(TRIAL_SEGMENT)
    (content_dir / "templates/sequences/trial_thanks.yaml").write_text(THANKS_GOAL_SEQUENCE)
    trial = replace(runtime, content=load_content(content_dir))
    email = "omar@initrode.test"
    async with running_stack(trial, temporal.client, inbox) as stack:
        await post(stack, {"id": "omar-trial", "type": "trial_started", "email": email})
        lead_id = await first_assessed(stack, email)
        enrollment = await eventually(lambda: _enrollment(trial, lead_id), message="never enrolled")
        assert enrollment.status == "running"
        await post(stack, *(page_view(f"omar-{n}", email, "index.html") for n in range(3)))
        await post(stack, page_view("omar-thanks", email, "thanks.html"))
        await eventually(
            lambda: (e := _enrollment(trial, lead_id)) is not None and e.status == "converted",
            message="the goal's page view never reached the sequence",
        )


def _enrollment(runtime: Runtime, lead_id: int) -> Enrollment | None:
    with runtime.db.read() as session:
        return session.scalars(select(Enrollment).where(Enrollment.lead_id == lead_id)).first()


async def test_a_bot_posting_five_thousand_events_does_not_hold_up_another_leads_hand_off(
    stack: Stack,
) -> None:
    bot, buyer = "crawler@bots.test", "maria@globex.test"
    await post(stack, page_view("bot-0", bot, "index.html"))
    await first_assessed(stack, bot)
    for batch in range(10):
        await post(stack, *(page_view(f"bot-{batch}-{n}", bot, "index.html") for n in range(500)))
    started = time.perf_counter()
    await post(  # 50 + 15 + 15: the SQL mark (as bench/ingest_and_speed_to_lead.py's timed leads)
        stack,
        {"id": "maria-demo", "type": "demo_requested", "email": buyer},
        page_view("maria-pricing-1", buyer, "pricing.html"),
        page_view("maria-pricing-2", buyer, "pricing.html#faq"),
    )
    await eventually(lambda: _hand_off_sent(stack, buyer), timeout=30, message="no hand-off")
    handed_off_in = time.perf_counter() - started
    # Routed in the drain after it arrived, not after the bot's backlog: that still waits in the outbox.
    with stack.runtime.db.read() as session:
        bot_rows_left = session.scalar(select(func.count(Outbox.id)))
    assert bot_rows_left and bot_rows_left > 2 * LEAD_EVENTS_PER_DRAIN, bot_rows_left
    assert handed_off_in < 10, handed_off_in
    await eventually(lambda: outbox_empty(stack.runtime), timeout=120)
    assert count(stack.runtime, Event, (await lead(stack, bot))["id"]) == 5001


def _hand_off_sent(stack: Stack, email: str) -> bool:
    return any(email in str(message["Subject"]) for message in stack.inbox.messages)


def test_the_workflow_acts_on_any_change_of_what_it_reads_and_on_an_earlier_wake_up() -> None:
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    quiet = AssessLeadResult(
        score=45, stage="mql", temperature="cold", next_rescore_at=now + timedelta(days=9)
    )

    def acts(**changed: Any) -> str | None:
        return what_the_workflow_acts_on(replace(quiet, **changed), "mql", "cold", now + timedelta(days=9))

    assert acts() is None
    assert acts(next_rescore_at=now + timedelta(days=30)) is None  # later: its own timer wakes it first
    assert acts(next_rescore_at=now + timedelta(days=2)) == "an earlier wake-up"
    assert what_the_workflow_acts_on(quiet, "mql", "cold", None) == "an earlier wake-up"  # it has none
    assert acts(stage="sql", new_stages=["sql"]) == "a stage"
    assert acts(temperature="warm") == "the temperature"
    assert acts(left_segments=["event_page_regulars"]) == "a segment left"
    assert acts(handoff_stage_change_id=7) == "a hand-off"
    assert acts(rescore_lead_workflows=["lead-9"]) == "an account turned hot"
    assert acts(absence_timers=[AbsenceTimer(3, now)]) == "an absence window"
    assert acts(merged_into=4) == "a merge"


def test_events_another_router_routed_meanwhile_are_neither_assessed_again_nor_signalled(
    runtime: Runtime,
) -> None:
    ingest_events(runtime.db, [EventIn(id="v-0", type="page_viewed", email="vic@hooli.test")])
    inert = InertEvents(runtime.db, lambda: runtime.content, LeadActivities(runtime).assess_in)
    with runtime.db.transaction() as session:
        rows = session.execute(select(Outbox.id, Outbox.lead_id, Outbox.event_id)).all()
        lead_id = rows[0].lead_id
        session.add(WorkflowTimer(lead_id=lead_id, rescore_at=None))  # as if its workflow assessed it
    view = page_view("v-1", "vic@hooli.test", "index.html")
    ingest_events(runtime.db, [EventIn(**view)])
    with runtime.db.read() as session:
        row = session.execute(select(Outbox.id, Event.id).join(Event, Event.id == Outbox.event_id)).all()[-1]
    items = [(row[0], EventRef(row[1], "page_viewed", datetime.now(UTC), view["properties"]))]
    assert inert.assess_if_inert(lead_id, items).inert is True
    assert inert.assess_if_inert(lead_id, items).inert is None  # its row is gone: routed once
    assert inert.assessed == 1
