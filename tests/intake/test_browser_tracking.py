"""The snippet in a real browser: a visitor browses anonymously, abandons a form, comes back from a link in
our email, submits the form, and the lead they turn out to be has it all; other origins are refused; without consent nothing leaves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from leadflow.platform.store.models import Event
from tests.support.browser import chromium, needs_chromium, screenshot, website
from tests.support.helpers import Stack, eventually
from tests.support.proofs import link_to_page, send_invitation

pytestmark = needs_chromium
ADA = "ada@acme-robotics.test"


def event_types(stack: Stack) -> list[str]:
    with stack.runtime.db.read() as session:
        return list(session.scalars(select(Event.type).order_by(Event.id)))


async def lead(stack: Stack, reference: str) -> dict[str, Any]:
    response = await stack.api.get(f"/v1/leads/{reference}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_visitor_browses_abandons_a_form_comes_back_and_becomes_a_known_lead(
    stack: Stack, playwright: Any, tmp_path: Path
) -> None:
    # Ada is known before she ever visits (a list import): her anonymous visit must merge into her lead.
    saved = await stack.api.post("/v1/leads", json={"email": ADA, "properties": {"company": "Acme Robotics"}})
    ada_id = saved.json()["id"]
    async with website(stack) as site, chromium(playwright, tmp_path / "profile") as browser:
        page = await browser.new_page()
        await page.goto(site.url("index.html?utm_source=newsletter&utm_medium=email&utm_campaign=spring"))
        await eventually(lambda: "page_viewed" in event_types(stack), message="no page view arrived")

        await page.mouse.wheel(0, 20_000)  # read to the end of the long landing page
        await eventually(lambda: "scrolled" in event_types(stack), message="no scroll event arrived")
        await page.fill("#ebook input[name=first_name]", "Ada")
        await eventually(lambda: "form_started" in event_types(stack), message="no form_started arrived")
        await screenshot(page, "tracking-1-form-started")
        await page.goto("about:blank")  # she leaves without submitting
        await eventually(
            lambda: "form_abandoned" in event_types(stack), message="the abandoned form was lost"
        )
        [cookie] = [c for c in await browser.cookies() if c["name"] == "lf_aid"]
        anonymous = await lead(stack, cookie["value"])
        assert anonymous["email"] is None and anonymous["id"] != ada_id
        assert {"page_viewed", "scrolled", "form_started", "form_abandoned", "page_left"} <= {
            item["type"] for item in anonymous["timeline"]
        }

        # She comes back another day through a link in our webinar invitation (proof that this browser is
        # hers: a form alone is not, anybody can type her address), and this time submits the form.
        invitation = await send_invitation(stack.runtime, ada_id)
        await page.goto(site.api + link_to_page(stack.runtime, invitation, ada_id, site.url("events.html")))
        await page.click("text=Ebook")
        await page.fill("#ebook input[name=email]", "Ada@Acme-Robotics.test")
        await page.fill("#ebook input[name=first_name]", "Ada")
        await page.fill("#ebook input[name=job_title]", "Head of Growth")
        async with page.expect_navigation():
            await page.click("#ebook button[type=submit]")
        await screenshot(page, "tracking-2-thanks")
        await eventually(
            lambda: [m for m in stack.inbox.to(ADA) if m["Subject"] == "Your ebook: The Nurture Playbook"],
            message="the ebook email never arrived",
        )

    known = await eventually(lambda: _with(stack, ADA, "email_sent"), message="the send was never recorded")
    assert known["id"] == ada_id
    assert known["properties"] == {
        "company": "Acme Robotics",
        "first_name": "Ada",
        "job_title": "Head of Growth",
    }
    types = [item["type"] for item in reversed(known["timeline"])]
    # Everything the anonymous visitor did now belongs to Ada, in order, then the identify and the email.
    for earlier, later in [
        ("page_viewed", "scrolled"),
        ("scrolled", "form_started"),
        ("form_started", "form_abandoned"),
        ("form_abandoned", "form_submitted"),
    ]:
        assert types.index(earlier) < types.index(later), types
    last_email = len(types) - 1 - types[::-1].index("email_sent")  # the ebook's (the invitation came first)
    assert types.index("form_submitted") < last_email, types
    assert {"page_left", "ebook_downloaded", "identified"} <= set(types)
    [merge] = known["merged_leads"]
    assert merge["id"] == anonymous["id"] and merge["events_moved"] >= 5  # the first visit's, at the proof
    assert known["anonymous_ids"] == [cookie["value"]]
    assert (await lead(stack, cookie["value"]))["id"] == ada_id
    assert known["source"]["first_touch"]["source"] == "newsletter"
    assert known["source"]["first_touch"]["campaign"] == "spring"
    assert {s["id"]: s["status"] for s in known["sequences"]}["ebook_follow_up"] == "running"
    assert known["score"]["total"] >= 25  # ebook 10 + senior job title 15


@pytest.fixture
def sqlite_only(stack: Stack) -> Stack:
    if stack.runtime.db.dialect != "sqlite":
        pytest.skip("what the browser does or does not send does not depend on the store: once is enough")
    return stack


async def test_a_page_on_an_origin_the_key_does_not_allow_sends_nothing(
    sqlite_only: Stack, playwright: Any, tmp_path: Path
) -> None:
    stack = sqlite_only
    async with website(stack) as site, chromium(playwright, tmp_path / "profile") as browser:
        page = await browser.new_page()
        # localhost and 127.0.0.1 are different origins: the site key allows only the latter.
        await page.goto(site.url("index.html", host="localhost"))
        await page.evaluate("leadflow.flush()")
        await eventually(lambda: site.collected(), message="the snippet never tried to send")
        assert set(site.collected()) == {403}
        await screenshot(page, "tracking-3-origin-refused")
        await page.goto("about:blank")
    await asyncio.sleep(0.5)
    assert event_types(stack) == []


async def test_nothing_is_sent_until_the_visitor_consents(
    sqlite_only: Stack, playwright: Any, tmp_path: Path
) -> None:
    stack = sqlite_only
    async with website(stack) as site, chromium(playwright, tmp_path / "profile") as browser:
        site.configure(consent="required")
        sent: list[str] = []
        browser.on(
            "request", lambda request: sent.append(request.url) if "/t/collect" in request.url else None
        )
        page = await browser.new_page()
        await page.goto(site.url("index.html"))
        await page.mouse.wheel(0, 20_000)
        await page.fill("#ebook input[name=first_name]", "Ada")
        await asyncio.sleep(2.5)  # more than two flush intervals
        await page.goto(site.url("pricing.html"))  # leaving flushes whatever is queued, if allowed
        await asyncio.sleep(0.5)
        assert sent == [] and event_types(stack) == []
        assert not [c for c in await browser.cookies() if c["name"].startswith("lf_")]  # no cookie either

        # The visitor accepts: the page view queued on this page goes out, and the next pages are tracked.
        await page.evaluate("leadflow.consent(true)")
        await eventually(
            lambda: event_types(stack) == ["page_viewed"], message="consent did not release events"
        )
        await page.goto(site.url("events.html"))
        await eventually(lambda: event_types(stack).count("page_viewed") == 2)
        assert len({c["name"] for c in await browser.cookies()} & {"lf_aid", "lf_consent"}) == 2


async def _with(stack: Stack, reference: str, timeline_type: str) -> dict[str, Any] | None:
    document = await lead(stack, reference)
    return document if any(item["type"] == timeline_type for item in document["timeline"]) else None
