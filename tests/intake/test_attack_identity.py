"""Attacks on who is who, over real HTTP: an API key holder who takes one of leadflow's own event ids first
(to have a real unsubscribe dropped as its duplicate), and a browser that claims a known person's address
with the public site key (to score, enroll or hand that person to sales). Neither works; a browser that
proves itself with a signed link from the person's email does count for them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from alembic.config import Config
from sqlalchemy import select

from leadflow.http.app import create_app
from leadflow.intake.tracking.model import Site
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store import Database
from leadflow.platform.store.db import MIGRATIONS_DIR
from leadflow.platform.store.models import Consent, Event, Handoff, Lead
from tests.support.browser import chromium, needs_chromium, serving, website
from tests.support.helpers import API_KEY, Inbox, Stack, eventually, free_port
from tests.support.proofs import invite, link_to_page, send_invitation

GRACE = "grace@globex.test"
ORIGIN = "https://www.globex-partner.test"
KEY = "pk_test_attack_site"
AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}


@contextlib.asynccontextmanager
async def over_http(runtime: Runtime, stack: Stack | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """`leadflow api` on a real 127.0.0.1 port (routing to the stack's worker when given); a client of it
    that sends no key unless told to."""
    port = free_port()
    app = create_app(runtime, on_events_accepted=stack.router.wake if stack else None)
    async with serving(app, port), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        yield client


# --- row 3: leadflow's own event ids are not the clients' to take -------------------------------------


async def test_an_unsubscribe_cannot_be_pre_empted_by_taking_its_event_id_first(
    runtime: Runtime, inbox: Inbox
) -> None:
    async with over_http(runtime) as http:
        saved = await http.post("/v1/leads", json={"email": GRACE}, headers=AUTHORIZED)
        grace = saved.json()["id"]
        # The id the unsubscribe link gives Grace's first opt-out, stored first by an API key holder.
        taken = f"lf-unsubscribe-{grace}-email-0"
        single = {"id": taken, "type": "page_viewed", "lead_id": grace}
        answers = [
            await http.post("/v1/events", json=single, headers=AUTHORIZED),
            await http.post("/v1/events", json={"events": [single]}, headers=AUTHORIZED),
        ]
        assert [answer.status_code for answer in answers] == [422, 422]
        assert answers[0].json()["detail"][0]["field"] == "id"
        assert answers[1].json()["detail"][0]["field"] == "events.0.id"
        assert "reserved" in answers[0].json()["detail"][0]["message"]

        await send_invitation(runtime, grace)
        [email] = inbox.to(GRACE)
        unsubscribe = re.search(r"/u/[A-Za-z0-9_.-]+", email["List-Unsubscribe"])
        assert unsubscribe
        page = await http.post(unsubscribe[0])
        assert page.status_code == 200 and "no more email" in page.text

    with runtime.db.read() as session:
        assert session.scalars(select(Event.type).where(Event.key == taken)).all() == ["unsubscribed"]
        assert session.scalars(select(Consent.status).where(Consent.lead_id == grace)).one() == "withdrawn"
    inbox.messages.clear()
    assert (await invite(runtime, grace, step=1)).status == "suppressed" and inbox.to(GRACE) == []


def _migrate(db: Database, how: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = db.engine
    getattr(command, how)(config, revision)


def test_ids_taken_before_the_rule_are_freed_and_genuine_ones_still_deduplicate(db: Database) -> None:
    now = clock.now()
    with db.transaction() as session:
        grace, kim = (
            Lead(email=e, properties={}, stage="lead", score=0, created_at=now, updated_at=now)
            for e in (GRACE, "kim@initech.test")
        )
        session.add_all([grace, kim])
        session.flush()
        keys = {
            f"lf-unsubscribe-{grace.id}-email-0": ("page_viewed", kim.id),  # forged: not an unsubscribe
            f"lf-unsubscribe-{grace.id}-email-1": ("unsubscribed", kim.id),  # forged: names another lead
            "lf-made-up-1": ("page_viewed", kim.id),  # forged: no id leadflow makes
            f"lf-unsubscribe-{kim.id}-email-0": ("unsubscribed", kim.id),  # genuine
            f"identified:cookie-1:{kim.id}": ("identified", kim.id),  # genuine
            "web:sample:0123456789abcdef": ("page_viewed", kim.id),  # the tracker's: left alone
            "order-17": ("page_viewed", kim.id),  # a client's own id
        }
        rows = {
            key: Event(key=key, type=kind, lead_id=lead, occurred_at=now, received_at=now, properties={})
            for key, (kind, lead) in keys.items()
        }
        session.add_all(rows.values())
        session.flush()
        ids = {key: row.id for key, row in rows.items()}
    _migrate(db, "downgrade", "0009_faults")
    _migrate(db, "upgrade", "head")
    with db.read() as session:
        stored = dict(session.execute(select(Event.id, Event.key)).all())
    forged = list(keys)[:3]
    assert {stored[ids[key]] for key in forged} == {f"lf-forged-{ids[key]}" for key in forged}
    assert all(stored[ids[key]] == key for key in list(keys)[3:])


# --- row 4: a public claim is not proof -------------------------------------------------------------


def use_site(runtime: Runtime) -> None:
    site = Site(id="partner", key=KEY, origins=[ORIGIN], events=["demo_requested"])
    runtime.content = dataclasses.replace(runtime.content, sites={site.key: site})


async def lead_document(http: httpx.AsyncClient, reference: str | int) -> dict[str, Any]:
    response = await http.get(f"/v1/leads/{reference}", headers=AUTHORIZED)
    assert response.status_code == 200, response.text
    return response.json()


def handoffs_of(runtime: Runtime, lead_id: int) -> list[Handoff]:
    with runtime.db.read() as session:
        return list(session.scalars(select(Handoff).where(Handoff.lead_id == lead_id)))


async def test_a_forged_claim_of_a_known_address_scores_enrolls_and_hands_off_nobody(stack: Stack) -> None:
    use_site(stack.runtime)
    async with over_http(stack.runtime, stack) as http:
        saved = await http.post(
            "/v1/leads", json={"email": GRACE, "properties": {"first_name": "Grace"}}, headers=AUTHORIZED
        )
        grace = saved.json()["id"]
        hot = [
            {"id": "mallory-demo-01", "type": "demo_requested", "properties": {"form": "contact-sales"}},
            *(
                {
                    "id": f"mallory-price-{n}",
                    "type": "page_viewed",
                    "properties": {"url": f"{ORIGIN}/pricing"},
                }
                for n in range(3)
            ),
        ]
        claim = {
            "site": KEY,
            "anonymous_id": "mallory-browser",
            "identify": {"email": GRACE, "properties": {"job_title": "CEO", "country": "DE"}},
            "events": hot,
        }
        answer = await http.post(
            "/t/collect",
            content=json.dumps(claim),
            headers={"Origin": ORIGIN, "Content-Type": "text/plain"},
        )
        assert answer.status_code == 202

        # The claimant's browser has a lead of its own, scored and handled: the events were all processed.
        async def claimant_scored() -> dict[str, Any] | None:
            document = await lead_document(http, "mallory-browser")
            return document if document["score"]["total"] >= 50 else None

        claimant = await eventually(claimant_scored, message="the claimant's events were never scored")
        assert claimant["id"] != grace and claimant["email"] is None
        victim = await lead_document(http, grace)
    assert victim["properties"] == {"first_name": "Grace"}  # no blank filled either
    assert victim["score"]["total"] == 0 and victim["stage"] == "lead"
    assert victim["sequences"] == [] and victim["merged_leads"] == [] and victim["anonymous_ids"] == []
    assert [item for item in victim["timeline"] if item["kind"] == "event"] == []
    assert handoffs_of(stack.runtime, grace) == []
    assert stack.inbox.to(GRACE) == []


@needs_chromium
async def test_the_claimants_browser_counts_once_it_opens_a_signed_link_from_her_email(
    stack: Stack, playwright: Any, tmp_path: Path
) -> None:
    saved = await stack.api.post("/v1/leads", json={"email": GRACE, "properties": {"first_name": "Grace"}})
    grace = saved.json()["id"]
    async with website(stack) as site, chromium(playwright, tmp_path / "profile") as browser:
        page = await browser.new_page()
        await page.goto(site.url("index.html"))
        await page.fill("#ebook input[name=email]", GRACE)
        await page.fill("#ebook input[name=job_title]", "CTO")
        async with page.expect_navigation():
            await page.click("#ebook button[type=submit]")
        [cookie] = [c["value"] for c in await browser.cookies() if c["name"] == "lf_aid"]

        async def claimed() -> dict[str, Any] | None:
            response = await stack.api.get(f"/v1/leads/{cookie}")
            if response.status_code != 200:
                return None
            document = response.json()
            return document if "ebook_downloaded" in {i["type"] for i in document["timeline"]} else None

        claimant = await eventually(claimed, message="the form's events never arrived")
        assert claimant["id"] != grace
        assert "identify_claimed" in {item["type"] for item in claimant["timeline"]}
        untouched = (await stack.api.get(f"/v1/leads/{grace}")).json()
        assert untouched["score"]["total"] == 0 and untouched["sequences"] == []

        # Grace reads our webinar invitation and follows its link to the pricing page, in this browser.
        message_id = await send_invitation(stack.runtime, grace)
        link = link_to_page(stack.runtime, message_id, grace, site.url("pricing.html?utm_source=invite"))
        await page.goto(site.api + link)
        await eventually(lambda: page.url == site.url("pricing.html?utm_source=invite"))  # proof taken out

        async def proven() -> dict[str, Any] | None:
            document = (await stack.api.get(f"/v1/leads/{cookie}")).json()
            return document if document["id"] == grace and document["score"]["total"] >= 30 else None

        known = await eventually(proven, message="the proof never made the browser Grace's")
    # Everything the browser did, claim included, now counts for Grace: the ebook (and its email) too.
    assert [merge["id"] for merge in known["merged_leads"]] == [claimant["id"]]
    # The ebook, the pricing page, the click; not the title the claim gave (an unproven claim's are dropped).
    assert known["score"]["total"] == 10 + 15 + 5
    await eventually(
        lambda: [m for m in stack.inbox.to(GRACE) if "ebook" in m["Subject"].lower()],
        message="the ebook email never arrived",
    )
    with stack.runtime.db.read() as session:
        urls = session.scalars(select(Event.properties["url"].as_string()).where(Event.type == "page_viewed"))
        assert all("lf_proof" not in url for url in urls)
