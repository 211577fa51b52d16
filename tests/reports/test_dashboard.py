"""The dashboard over HTTP: sign-in (Bearer key, the form), every page on an empty store and on the seeded
one, and the numbers on the pages matching the report. (Attacks on sign-in: tests/http/test_attack_web.py.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from leadflow.http.app import create_app
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.reports import Period, build_report
from leadflow.reports.dashboard import COOKIE
from tests.support.helpers import API_KEY
from tests.support.report_data import NOW, SEQUENCE, seed


@pytest.fixture
async def browserless(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no key unless told to."""
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://leadflow.test") as client:
        yield client


BEARER = {"Authorization": f"Bearer {API_KEY}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def form_token(page: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found[1]


async def csrf_token(client: httpx.AsyncClient, path: str = "/dashboard/login") -> str:
    """The token of the page at `path` (the client keeps the cookie it pairs with)."""
    return form_token((await client.get(path)).text)


async def sign_in(client: httpx.AsyncClient, key: str, target: str = "/dashboard") -> httpx.Response:
    token = await csrf_token(client)
    return await client.post(
        "/dashboard/login", content=urlencode({"csrf_token": token, "key": key, "next": target}), headers=FORM
    )


async def test_without_a_key_the_browser_gets_the_sign_in_form(browserless: httpx.AsyncClient) -> None:
    for path in ("/dashboard", "/dashboard/leads/1", "/dashboard/sequences/x", "/dashboard/preview"):
        answer = await browserless.get(path)
        assert answer.status_code == 401 and 'name="key"' in answer.text, path
    wrong = await browserless.get("/dashboard", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert (await browserless.get("/dashboard?key=nope")).status_code == 401
    browserless.cookies.set(COOKIE, API_KEY, domain="leadflow.test", path="/dashboard")
    assert (await browserless.get("/dashboard")).status_code == 401  # the key itself is no session token


async def test_signing_in_sets_an_http_only_cookie(browserless: httpx.AsyncClient) -> None:
    answer = await sign_in(browserless, API_KEY, "/dashboard?since=7d")
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard?since=7d"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and API_KEY not in cookie
    assert (await browserless.get("/dashboard?since=7d")).status_code == 200  # the client kept the cookie


async def test_the_sign_in_form(browserless: httpx.AsyncClient) -> None:
    refused = await sign_in(browserless, "nope")
    assert refused.status_code == 401 and "not one of" in refused.text
    elsewhere = await sign_in(browserless, API_KEY, "https://evil.test/")
    assert elsewhere.status_code == 303 and elsewhere.headers["location"] == "/dashboard"
    assert (await browserless.get("/dashboard")).status_code == 200
    token = await csrf_token(browserless, "/dashboard")
    await browserless.post("/dashboard/logout", content=urlencode({"csrf_token": token}), headers=FORM)
    assert (await browserless.get("/dashboard")).status_code == 401


async def test_every_page_renders_on_an_empty_store(browserless: httpx.AsyncClient) -> None:
    for path in (
        "/dashboard",
        "/dashboard?since=all",
        f"/dashboard/sequences/{SEQUENCE}",
        "/dashboard/preview",
    ):
        answer = await browserless.get(path, headers=BEARER)
        assert answer.status_code == 200, (path, answer.text[:500])
    assert "No hot leads" in (await browserless.get("/dashboard", headers=BEARER)).text
    assert (await browserless.get("/dashboard/leads/1", headers=BEARER)).status_code == 404
    assert (await browserless.get("/dashboard/sequences/nope", headers=BEARER)).status_code == 404
    assert (await browserless.get("/dashboard?since=soon", headers=BEARER)).status_code == 400
    preview = await browserless.get("/dashboard/preview?template=ebook_delivery&lead=99", headers=BEARER)
    assert "No lead" in preview.text


async def test_the_pages_show_the_reports_numbers(
    browserless: httpx.AsyncClient, runtime: Runtime, content: Any
) -> None:
    seed(runtime.db, content)
    with clock.frozen_at(NOW):
        page = (await browserless.get("/dashboard?since=30d", headers=BEARER)).text
    with runtime.db.read() as session:
        report = build_report(session, Period.last("30d", NOW))
    for stage in report.funnel.stages:
        row = re.search(rf'data-stage="{stage.stage}">.*?class="n count">(\d+)<', page, re.S)
        assert row and int(row[1]) == stage.leads, stage.stage
    assert f"<b>{report.scoring.mql_never_sql}</b> of {report.scoring.mqls} MQLs" in page
    for lead in report.hot_leads:
        assert f'href="/dashboard/leads/{lead.id}"' in page
    sequence = (await browserless.get(f"/dashboard/sequences/{SEQUENCE}", headers=BEARER)).text
    assert "<svg" in sequence and 'class="at">1</tspan> here now' in sequence
    lead = report.hot_leads[0]
    shown = (await browserless.get(f"/dashboard/leads/{lead.id}", headers=BEARER)).text
    assert lead.email in shown and "Score over time" in shown and "<polyline" in shown
    preview = await browserless.get(
        f"/dashboard/preview?template=ebook_delivery&lead={lead.id}", headers=BEARER
    )
    assert preview.status_code == 200 and 'id="subject"' in preview.text and "srcdoc=" in preview.text
