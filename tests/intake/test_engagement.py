"""What a lead does with an email comes back as events: opens, clicks, and the one-click unsubscribe, which
takes effect before the answer and takes the lead out of its sequences. Forged links record nothing."""

from __future__ import annotations

import re
from email.message import EmailMessage
from urllib.parse import urlsplit

import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import select

from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.messaging.consent import suppression_of
from leadflow.platform.store.models import Consent, Enrollment, Event
from tests.support.helpers import Stack, eventually

LEAD = "kim@initech.test"


async def first_email(stack: Stack) -> EmailMessage:
    """Kim downloads the ebook; the ebook follow-up sequence sends its first email."""
    upsert_lead(stack.runtime.db, LeadIn(email=LEAD, properties={"first_name": "Kim"}))
    ingest_events(stack.runtime.db, [EventIn(id="kim-ebook", type="ebook_downloaded", email=LEAD)])
    stack.router.wake()
    messages = await eventually(lambda: stack.inbox.to(LEAD), message="the ebook email never arrived")
    return messages[0]


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def path_of(url: str) -> str:
    return urlsplit(url).path


def events(stack: Stack, kind: str) -> list[Event]:
    with stack.runtime.db.read() as session:
        return list(session.scalars(select(Event).where(Event.type == kind).order_by(Event.id)))


async def test_opens_and_clicks_become_events_once_per_message_and_link(stack: Stack) -> None:
    html = html_of(await first_email(stack))
    pixel = re.search(r'<img src="([^"]+/t/o/[^"]+)"', html)
    click = re.search(r'href="([^"]+/t/c/[^"]+)"', html)
    assert pixel and click
    for _ in range(2):  # a second open (or an image proxy) is not a second event
        opened = await stack.api.get(path_of(pixel[1]))
        assert (opened.status_code, opened.headers["content-type"]) == (200, "image/gif")
    clicked = await stack.api.get(path_of(click[1].replace("&amp;", "&")))
    assert clicked.status_code == 302
    assert clicked.headers["location"] == "https://leadflow.localhost/ebooks/nurture-playbook.pdf"
    [open_event] = events(stack, "email_opened")
    [click_event] = events(stack, "email_clicked")
    assert open_event.properties["template"] == "ebook_delivery"
    assert click_event.properties["url"] == "https://leadflow.localhost/ebooks/nurture-playbook.pdf"
    # They enter the lead's workflow like any other event: the lead document shows the rescored lead.
    await eventually(
        lambda: _timeline_has(stack, "email_clicked"), message="the click never reached the lead"
    )


@pytest.mark.parametrize("route", ["/t/o/", "/t/c/", "/u/"])
async def test_forged_or_altered_links_get_404_and_record_nothing(stack: Stack, route: str) -> None:
    html = html_of(await first_email(stack))
    genuine = {
        "/t/o/": re.search(r'/t/o/([^"]+)"', html),
        "/t/c/": re.search(r'/t/c/([^"]+)"', html),
        "/u/": re.search(r'/u/([^"]+)"', html),
    }[route]
    assert genuine
    token = genuine[1]
    payload, _, signature = token.rpartition(".")
    other_lead = URLSafeSerializer("guessed-secret", salt="leadflow-unsubscribe").dumps([1, "email"])
    forgeries = [
        f"{payload}.{signature[:-2]}xx",  # altered signature
        f"{payload[:-2]}AA.{signature}",  # altered payload (another message or lead)
        str(other_lead),  # signed with another key
        "not-a-token",
    ]
    for forged in forgeries:
        for method in ("GET", "POST") if route == "/u/" else ("GET",):
            response = await stack.api.request(method, route + forged)
            assert response.status_code == 404, (forged, response.text)
    other_kind = re.search(r'/t/o/([^"]+)"', html)
    assert other_kind
    assert (
        await stack.api.get("/t/c/" + other_kind[1])
    ).status_code == 404  # an open token is no click token
    assert (
        events(stack, "email_opened") == events(stack, "email_clicked") == events(stack, "unsubscribed") == []
    )


async def test_one_click_unsubscribe_takes_effect_at_once_and_exits_the_sequence(stack: Stack) -> None:
    message = await first_email(stack)
    link = message["List-Unsubscribe"].strip().strip("<>")
    assert link in html_of(message)  # the same link is in the body
    page = await stack.api.get(path_of(link))  # opening the link (or a mail scanner) changes nothing
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert events(stack, "unsubscribed") == []
    # What a mail client sends for RFC 8058 one-click unsubscribe.
    response = await stack.api.post(
        path_of(link),
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    with stack.runtime.db.read() as session:  # stored before the answer
        consent = session.scalars(select(Consent)).one()
        assert (consent.channel, consent.status, consent.source) == ("email", "withdrawn", "unsubscribe link")
        assert suppression_of(session, "email", LEAD) is not None
    again = await stack.api.post(path_of(link))
    assert again.status_code == 200 and len(events(stack, "unsubscribed")) == 1
    enrollment = await eventually(lambda: _finished_enrollment(stack), message="the sequence did not exit")
    assert (enrollment.status, enrollment.exit_reason) == ("exited", "opted out of email")
    assert len(stack.inbox.to(LEAD)) == 1


def _finished_enrollment(stack: Stack) -> Enrollment | None:
    with stack.runtime.db.read() as session:
        return session.scalars(select(Enrollment).where(Enrollment.status != "running")).first()


async def _timeline_has(stack: Stack, kind: str) -> bool:
    document = (await stack.api.get(f"/v1/leads/{LEAD}")).json()
    return any(item["type"] == kind for item in document["timeline"])
