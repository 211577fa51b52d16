"""A visitor downloads the ebook: the follow-up sequence emails it at once, exactly once."""

from __future__ import annotations

from sqlalchemy import func, select

from leadflow.platform.store.models import Event, Message
from tests.support.helpers import Stack, eventually

ADA = "ada@acme-robotics.test"


async def test_ebook_download_emails_the_ebook_through_the_whole_stack(stack: Stack) -> None:
    saved = await stack.api.post("/v1/leads", json={"email": ADA, "properties": {"first_name": "Ada"}})
    assert saved.status_code == 201, saved.text
    assert saved.json()["created"] is True

    accepted = await stack.api.post(
        "/v1/events",
        json={
            "id": "evt-ebook-1",
            "type": "ebook_downloaded",
            "email": ADA,
            "properties": {"title": "The Nurture Playbook"},
        },
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"accepted": 1, "duplicates": 0}

    [email] = await eventually(lambda: stack.inbox.to(ADA), message="the ebook email never arrived")
    assert email["Subject"] == "Your ebook: The Nurture Playbook"
    assert email.get_content_type() == "multipart/alternative"
    text = email.get_body(preferencelist=("plain",)).get_content()
    html = email.get_body(preferencelist=("html",)).get_content()
    assert text.startswith("Hi Ada,") and "nurture-playbook.pdf" in text
    assert "<strong>The Nurture Playbook</strong>" in html

    # The SMTP server has the email a moment before the send activity records it as sent.
    lead = await eventually(lambda: _with_sent_message(stack, ADA))
    assert lead["properties"]["first_name"] == "Ada"
    assert lead["segments"][0]["id"] == "ebook_downloaders"
    [sequence] = lead["sequences"]
    assert sequence["id"] == "ebook_follow_up" and sequence["status"] == "running"
    assert lead["score"]["total"] == 10
    assert lead["score"]["breakdown"][0]["rule"] == "Ebook downloaded"
    kinds = [(item["kind"], item["type"]) for item in lead["timeline"]]
    assert ("event", "ebook_downloaded") in kinds
    by_id = (await stack.api.get(f"/v1/leads/{lead['id']}")).json()
    assert by_id["email"] == ADA


async def test_the_same_event_posted_twice_sends_one_email(stack: Stack) -> None:
    event = {"id": "evt-twice", "type": "ebook_downloaded", "email": ADA}
    first = await stack.api.post("/v1/events", json=event)
    again = await stack.api.post("/v1/events", json={"events": [event, event]})
    assert first.json() == {"accepted": 1, "duplicates": 0}
    assert again.json() == {"accepted": 0, "duplicates": 2}

    await eventually(lambda: stack.inbox.to(ADA))
    # Give a second (wrong) email every chance to arrive: the router and workflow are idle once drained.
    await eventually(lambda: stack.router.routed >= 1)
    await _settle(stack)
    assert len(stack.inbox.to(ADA)) == 1
    with stack.runtime.db.read() as session:
        assert session.scalar(select(func.count(Event.id))) == 1
        assert session.scalar(select(func.count(Message.id)).where(Message.status == "sent")) == 1


async def test_an_event_for_an_anonymous_visitor_creates_a_lead_without_email(stack: Stack) -> None:
    accepted = await stack.api.post(
        "/v1/events",
        json={
            "id": "anon-1",
            "type": "page_viewed",
            "anonymous_id": "cookie-123",
            "properties": {"url": "/pricing"},
        },
    )
    assert accepted.status_code == 202
    lead = await eventually(lambda: _scored(stack, "cookie-123"))
    assert lead["email"] is None and lead["score"]["total"] == 15


async def _with_sent_message(stack: Stack, reference: str) -> dict | None:
    lead = (await stack.api.get(f"/v1/leads/{reference}")).json()
    return lead if any(item["type"] == "email_sent" for item in lead["timeline"]) else None


async def _scored(stack: Stack, reference: str) -> dict | None:
    response = await stack.api.get(f"/v1/leads/{reference}")
    return response.json() if response.status_code == 200 and response.json()["score"]["total"] else None


async def _settle(stack: Stack) -> None:
    import asyncio

    await asyncio.sleep(1.0)
