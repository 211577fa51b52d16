"""Events push a lead over the sales threshold: promoted to SQL once, one salesperson emailed once."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from leadflow.platform.store.models import Handoff, StageChange
from tests.support.helpers import Stack, eventually

GRACE = "grace@globex.test"
SALES = ("sam.rivera@leadflow.localhost", "alex.chen@leadflow.localhost")


def _sales_mail(stack: Stack) -> list:
    return [message for message in stack.inbox.messages if message["To"] in SALES]


async def test_threshold_crossing_events_arriving_together_promote_once_and_notify_once(stack: Stack) -> None:
    await stack.api.post(
        "/v1/leads",
        json={
            "email": GRACE,
            "properties": {
                "first_name": "Grace",
                "last_name": "Hopper",
                "company": "Globex",
                "job_title": "Engineer",
            },
        },
    )
    events = [
        {"id": "g-demo", "type": "demo_requested", "email": GRACE, "properties": {"form": "contact-sales"}},
        {"id": "g-price-1", "type": "page_viewed", "email": GRACE, "properties": {"url": "/pricing"}},
        {
            "id": "g-price-2",
            "type": "page_viewed",
            "email": GRACE,
            "properties": {"url": "/pricing/enterprise"},
        },
        {"id": "g-price-3", "type": "page_viewed", "email": GRACE, "properties": {"url": "/pricing"}},
        {"id": "g-blog", "type": "page_viewed", "email": GRACE, "properties": {"url": "/blog/scoring"}},
    ]
    # Each event in its own request, all at once, each sent twice: every path to a second promotion.
    responses = await asyncio.gather(*(stack.api.post("/v1/events", json=e) for e in events + events))
    assert all(response.status_code == 202 for response in responses)

    [notification] = await eventually(lambda: _sales_mail(stack), message="no sales notification")
    await asyncio.sleep(1.0)
    assert len(_sales_mail(stack)) == 1
    assert "Hot lead: Grace Hopper <grace@globex.test> at Globex" in notification["Subject"]
    body = notification.get_body(preferencelist=("plain",)).get_content()
    assert "Demo requested: +50" in body and "Pricing page viewed: +30" in body
    assert "page_viewed /pricing" in body  # recent activity, with what was viewed
    assert "/v1/leads/" in body  # a link to open the lead

    with stack.runtime.db.read() as session:
        promotions = session.scalar(select(func.count(StageChange.id)).where(StageChange.to_stage == "sql"))
        handoffs = session.scalars(select(Handoff)).all()
    assert promotions == 1
    assert len(handoffs) == 1 and handoffs[0].notified_at is not None
    lead = (await stack.api.get(f"/v1/leads/{GRACE}")).json()
    assert lead["stage"] == "sql" and lead["owner"] == handoffs[0].salesperson == notification["To"]
    assert [(s["from"], s["to"]) for s in lead["stage_history"]] == [("lead", "mql"), ("mql", "sql")]
    assert lead["score"]["total"] == 81  # 50 + 30 (pricing, capped) + 1 (blog)


async def test_a_lead_already_handed_to_sales_gets_no_marketing_sequence(stack: Stack) -> None:
    await stack.api.post(
        "/v1/events",
        json={
            "events": [
                {"id": "h-demo", "type": "demo_requested", "email": GRACE},
                {"id": "h-price", "type": "page_viewed", "email": GRACE, "properties": {"url": "/pricing"}},
                {"id": "h-price-2", "type": "page_viewed", "email": GRACE, "properties": {"url": "/pricing"}},
            ]
        },
    )
    await eventually(lambda: _sales_mail(stack))
    await stack.api.post("/v1/events", json={"id": "h-ebook", "type": "ebook_downloaded", "email": GRACE})
    lead = await eventually(lambda: _lead_with_segment(stack))
    assert lead["sequences"] == []
    assert stack.inbox.to(GRACE) == []


async def _lead_with_segment(stack: Stack) -> dict | None:
    lead = (await stack.api.get(f"/v1/leads/{GRACE}")).json()
    return lead if lead["segments"] else None
