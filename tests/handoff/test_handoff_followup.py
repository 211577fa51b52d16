"""The hand-off as sales lives it: promoted once, dealt fairly by the team's rules, told at once by email and
signed webhooks (Slack and a CRM), reminded and escalated when nobody accepts, and the lead sent back to
nurture when sales rejects it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from leadflow.content.loader import load_content
from leadflow.content.yamlfile import ContentErrors
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Handoff, HandoffEvent, Message, StageChange
from tests.support.helpers import WEBHOOK_SECRET, Inbox, Stack, WebhookReceiver, eventually, running_stack

ANN, BOB, CY, EVE, BOSS = (f"{name}@sales.test" for name in ("ann", "bob", "cy", "eve", "boss"))


@pytest.fixture
async def sales_stack(sales_runtime: Runtime, temporal: WorkflowEnvironment, inbox: Inbox) -> Any:
    async with running_stack(sales_runtime, temporal.client, inbox) as stack:
        yield stack


def demo_request(email: str, key: str) -> dict[str, Any]:
    return {"id": key, "type": "demo_requested", "email": email, "properties": {"form": "contact-sales"}}


async def promote(stack: Stack, email: str, **properties: Any) -> None:
    await stack.api.post(
        "/v1/leads", json={"email": email, "properties": {"first_name": "Kim", **properties}}
    )
    await stack.api.post("/v1/events", json=demo_request(email, f"{email}-demo"))


def handoff_mail(inbox: Inbox, email: str) -> list[EmailMessage]:
    """The hand-off notifications about the lead `email` (reminders and escalations say more first)."""
    return [
        m
        for m in inbox.messages
        if m["Subject"].strip().startswith("Hot lead:") and f"<{email}>" in m["Subject"]
    ]


def assignee_of(inbox: Inbox, email: str) -> list[str]:
    return [message["To"] for message in handoff_mail(inbox, email)]


def follow_up_of(runtime: Runtime) -> str:
    """The workflow id of the (only) hand-off's follow-up."""
    with runtime.db.read() as session:
        [stage_change_id] = session.scalars(select(Handoff.stage_change_id)).all()
    return runtime.settings.handoff_workflow_id(stage_change_id)


async def started(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        await handle.describe()
    except RPCError:
        return False
    return True


def signed_by_us(request: Any) -> bool:
    """What a receiver checks, written from the documented scheme, not with our own helper."""
    timestamp = request.headers["x-leadflow-timestamp"]
    expected = hmac.new(
        WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(request.headers["x-leadflow-signature"], f"sha256={expected}")


async def test_concurrent_events_promote_once_and_notify_once_on_each_channel(
    sales_stack: Stack, receiver: WebhookReceiver
) -> None:
    stack, lead = sales_stack, "grace@globex.test"
    await stack.api.post(
        "/v1/leads",
        json={"email": lead, "properties": {"first_name": "Grace", "company": "Globex", "job_title": "CTO"}},
    )
    events = [
        demo_request(lead, "g-demo"),
        {"id": "g-price", "type": "page_viewed", "email": lead, "properties": {"url": "/pricing"}},
        {"id": "g-ebook", "type": "ebook_downloaded", "email": lead, "properties": {"title": "Nurture 101"}},
        {"id": "g-blog", "type": "page_viewed", "email": lead, "properties": {"url": "/blog/scoring"}},
    ]
    # Each event alone, all at once, each twice: every path to a second promotion or notification.
    await asyncio.gather(*(stack.api.post("/v1/events", json=event) for event in events + events))

    await eventually(lambda: receiver.at("/slack") and receiver.at("/crm"), message="webhooks not called")
    [email] = await eventually(lambda: handoff_mail(stack.inbox, lead))
    await asyncio.sleep(1.0)  # anything duplicated would have arrived by now
    assert assignee_of(stack.inbox, lead) == [ANN]
    [slack], [crm] = receiver.at("/slack"), receiver.at("/crm")
    assert signed_by_us(slack) and signed_by_us(crm)
    assert slack.headers["idempotency-key"] != crm.headers["idempotency-key"]

    message = slack.json()
    assert "Grace" in message["text"] and "/v1/leads/" in message["text"]
    assert any(block["type"] == "actions" for block in message["blocks"])
    document = crm.json()
    assert document["event"] == "lead.handed_off"
    assert document["lead"]["email"] == lead and document["lead"]["company"] == "Globex"
    assert document["score"]["grade"] in "ABCD" and document["score"]["temperature"] == "hot"
    assert {"rule": "Demo requested", "points": 50} in document["reasons"]
    assert "/pricing" in document["viewed"] and document["downloaded"] == ["Nurture 101"]
    assert document["lead_url"].endswith(f"/v1/leads/{document['lead']['id']}")

    body = email.get_body(preferencelist=("plain",)).get_content()
    assert "Viewed: " in body and "Downloaded: Nurture 101" in body
    with stack.runtime.db.read() as session:
        [promotion] = session.scalars(select(StageChange.reason).where(StageChange.to_stage == "sql")).all()
    assert document["why_now"] == promotion and f"Why now: {promotion}" in body
    with stack.runtime.db.read() as session:
        [handoff] = session.scalars(select(Handoff)).all()
        kinds = session.scalars(select(HandoffEvent.kind).order_by(HandoffEvent.id)).all()
    assert handoff.salesperson == ANN and handoff.team == "sales" and handoff.rule.startswith("round-robin")
    assert kinds == ["assigned", "notified", "notified", "notified"]


async def test_a_webhook_that_is_down_neither_loses_nor_repeats_the_email(
    sales_stack: Stack, receiver: WebhookReceiver
) -> None:
    receiver.failures = 2  # the CRM and Slack answer 503 twice between them, then come back
    await promote(sales_stack, "lin@initech.test")
    assert await eventually(lambda: assignee_of(sales_stack.inbox, "lin@initech.test")) == [ANN]
    await eventually(lambda: receiver.at("/slack") and receiver.at("/crm"), timeout=20, message="no retry")
    await asyncio.sleep(1.0)
    assert receiver.refused == 2
    assert len(receiver.at("/slack")) == 1 and len(receiver.at("/crm")) == 1
    assert len(assignee_of(sales_stack.inbox, "lin@initech.test")) == 1
    with sales_stack.runtime.db.read() as session:
        statuses = sorted((row.channel, row.status) for row in session.execute(select(Message)).scalars())
    assert statuses == [("email", "sent"), ("webhook", "sent"), ("webhook", "sent")]


async def test_round_robin_stays_fair_across_a_worker_restart(
    sales_runtime: Runtime, temporal: WorkflowEnvironment, inbox: Inbox
) -> None:
    leads = [f"lead{n}@firm{n}.test" for n in range(4)]
    async with running_stack(sales_runtime, temporal.client, inbox) as stack:
        for lead in leads[:2]:
            await promote(stack, lead)
            await eventually(lambda lead=lead: assignee_of(inbox, lead))
        await promote(stack, "hans@firma.test", country="DE")
        await eventually(lambda: assignee_of(inbox, "hans@firma.test"))
    # A new worker process, the same store: the team's position was kept there.
    async with running_stack(sales_runtime, temporal.client, inbox) as stack:
        for lead in leads[2:]:
            await promote(stack, lead)
            await eventually(lambda lead=lead: assignee_of(inbox, lead))
    dealt = [assignee_of(inbox, lead)[0] for lead in leads]
    assert dealt == [ANN, BOB, ANN, BOB]  # Cy is on holiday: skipped
    assert assignee_of(inbox, "hans@firma.test") == [EVE]
    with sales_runtime.db.read() as session:
        rules = session.scalars(select(Handoff.rule).where(Handoff.team == "emea")).all()
    assert rules == ["round-robin in team emea (rule: DACH and France)"]


async def test_reject_sends_the_lead_back_to_nurture_and_it_qualifies_again_later(sales_stack: Stack) -> None:
    stack, lead = sales_stack, "ren@hooli.test"
    await promote(stack, lead)
    await eventually(lambda: assignee_of(stack.inbox, lead))

    refused = await stack.api.post(f"/v1/leads/{lead}/handoff", json={"action": "reject"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["message"].endswith("to reject a lead")
    rejected = await stack.api.post(
        f"/v1/leads/{lead}/handoff", json={"action": "reject", "reason": "student"}
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    again = await stack.api.post(f"/v1/leads/{lead}/handoff", json={"action": "accept"})
    assert again.status_code == 409 and "already rejected" in again.json()["detail"]

    # The old demo request no longer counts; a quiet page view does not bring the lead back.
    await stack.api.post("/v1/events", json={"id": "ren-blog", "type": "page_viewed", "email": lead})
    await asyncio.sleep(1.0)
    document = (await stack.api.get(f"/v1/leads/{lead}")).json()
    assert document["stage"] == "recycled" and len(assignee_of(stack.inbox, lead)) == 1

    await stack.api.post("/v1/events", json=demo_request(lead, "ren-demo-2"))
    await eventually(lambda: len(assignee_of(stack.inbox, lead)) == 2, message="not handed off again")
    document = (await stack.api.get(f"/v1/leads/{lead}")).json()
    assert [s["to"] for s in document["stage_history"]] == ["mql", "sql", "recycled", "mql", "sql"]
    assert [h["status"] for h in document["handoffs"]] == ["assigned", "rejected"]


async def test_accept_then_convert_records_the_time_to_accept(sales_stack: Stack) -> None:
    stack, lead = sales_stack, "kim@acme.test"
    none_yet = await stack.api.post(f"/v1/leads/{lead}/handoff", json={"action": "accept"})
    assert none_yet.status_code == 404
    await promote(stack, lead)
    await eventually(lambda: assignee_of(stack.inbox, lead))
    accepted = (
        await stack.api.post(f"/v1/leads/{lead}/handoff", json={"action": "accept", "by": ANN})
    ).json()
    assert accepted["status"] == "accepted" and accepted["seconds_to_accept"] >= 0
    converted = await stack.api.post(
        f"/v1/leads/{lead}/handoff",
        json={"action": "converted", "to": "opportunity", "details": {"id": "OPP-7", "amount": 12000}},
    )
    assert converted.json()["status"] == "converted"
    assert converted.json()["outcome_details"] == {"opportunity": {"id": "OPP-7", "amount": 12000}}
    won = await stack.api.post(f"/v1/leads/{lead}/handoff", json={"action": "converted", "to": "customer"})
    assert won.status_code == 200
    document = (await stack.api.get(f"/v1/leads/{lead}")).json()
    assert document["stage"] == "customer"
    history = [event["kind"] for event in document["handoffs"][0]["history"]]
    assert [kind for kind in history if kind != "notified"] == [
        "assigned",
        "accepted",
        "converted",
        "converted",
    ]


async def test_no_answer_brings_a_reminder_then_an_escalation_and_reassignment(
    skipping: WorkflowEnvironment, sales_runtime: Runtime, inbox: Inbox, receiver: WebhookReceiver
) -> None:
    lead = "sol@umbrella.test"
    async with running_stack(sales_runtime, skipping.client, inbox) as stack:
        await promote(stack, lead)
        await eventually(lambda: assignee_of(inbox, lead) == [ANN])
        await eventually(lambda: len(receiver.received) == 2)

        await skipping.sleep(timedelta(hours=2, minutes=5))
        [reminder] = await eventually(lambda: [m for m in inbox.to(ANN) if "Reminder" in m["Subject"]])
        assert f"<{lead}>" in reminder["Subject"]
        await eventually(lambda: len(receiver.received) == 4)  # Slack and the CRM remind Ann too
        assert receiver.at("/crm")[-1].json()["event"] == "lead.reminder"
        assert not inbox.to(BOSS)

        await skipping.sleep(timedelta(hours=2))
        [escalation] = await eventually(lambda: inbox.to(BOSS))
        assert "Escalation: not accepted by ann@sales.test" in escalation["Subject"]
        [reassigned] = await eventually(lambda: inbox.to(BOB))
        assert "Reassigned to you" in reassigned["Subject"]

        accepted = await stack.api.post(f"/v1/leads/{lead}/handoff", json={"action": "accept"})
        assert accepted.json()["salesperson"] == BOB and accepted.json()["reassignments"] == 1
        handle = stack.client.get_workflow_handle(follow_up_of(sales_runtime))
        assert await handle.result() == "accepted"
        await skipping.sleep(timedelta(hours=12))
    assert len(inbox.to(BOB)) == 1 and len(inbox.to(BOSS)) == 1  # the timers stopped at acceptance
    kinds = [event["kind"] for event in accepted.json()["history"]]
    assert kinds[0] == "assigned"
    escalation = {kinds.index("escalated"), kinds.index("reassigned")}
    assert kinds.index("reminded") < min(escalation) and max(escalation) < kinds.index("accepted")


async def test_accepting_in_time_means_no_reminder(
    skipping: WorkflowEnvironment, sales_runtime: Runtime, inbox: Inbox
) -> None:
    lead = "ivy@umbrella.test"
    async with running_stack(sales_runtime, skipping.client, inbox) as stack:
        await promote(stack, lead)
        await eventually(lambda: assignee_of(inbox, lead))
        await stack.api.post(f"/v1/leads/{lead}/handoff", json={"action": "accept"})
        # The follow-up starts once the email is out, so the answer may come before it exists: it then
        # finds the hand-off accepted in the store when its first timer fires.
        handle = stack.client.get_workflow_handle(follow_up_of(sales_runtime))
        await eventually(lambda: started(handle), message="the hand-off's follow-up never started")
        # Let the answer's signal (when it came after the start) be handled before time moves on: the test
        # server can wedge a workflow whose timer fires while that signal cancels it (sdk-java #2606).
        await asyncio.sleep(0.5)
        await skipping.sleep(timedelta(hours=5))
        assert await handle.result() == "accepted"
    assert [m["Subject"] for m in inbox.messages if "Reminder" in m["Subject"]] == []


def test_assignment_rules_name_known_teams(content_dir: Path) -> None:
    (content_dir / "sales.yaml").write_text(
        "assignment:\n  - {team: emea, when: {country: DE}}\nsalespeople:\n  - {name: Ann, email: ann@x.test}\n"
    )
    with pytest.raises(ContentErrors, match=r"sales.yaml:\d+: .*team 'emea', which has no salespeople"):
        load_content(content_dir)
