"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright (never `playwright install`),
the API served on a real port. Pages load, show the report's numbers, a hot lead opens its page; a screenshot
of each page (wide and narrow) goes to test-artifacts/ for a person to look at."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from leadflow.http.app import create_app
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.reports import Period, build_report
from tests.support import browser as browsers
from tests.support.browser import needs_chromium, screenshot
from tests.support.helpers import API_KEY, free_port
from tests.support.report_data import NOW, SEQUENCE, seed

NARROW = {"width": 390, "height": 844}

pytestmark = needs_chromium


@contextlib.asynccontextmanager
async def serving(runtime: Runtime) -> AsyncIterator[str]:
    """The API (the dashboard with it) on a real port."""
    port = free_port()
    async with browsers.serving(create_app(runtime), port):
        yield f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as driver, browsers.chromium(driver, profile) as context:
        yield context


async def no_sideways_scroll(page: Any) -> bool:
    """The page fits the screen's width (wide tables scroll inside their own box)."""
    return bool(await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


async def test_the_dashboard_in_chromium(runtime: Runtime, content: Any, tmp_path: Path) -> None:
    if runtime.db.dialect != "sqlite":
        pytest.skip("one backend is enough for the browser; the reports are checked on both")
    seed(runtime.db, content)
    with runtime.db.read() as session:
        report = build_report(session, Period.last("30d", NOW))
    with clock.frozen_at(NOW):
        async with serving(runtime) as base, chromium(tmp_path / "profile") as browser:
            page = await browser.new_page()
            await page.goto(f"{base}/dashboard?since=30d")
            await page.fill("input[name=key]", API_KEY)
            await page.click("button[type=submit] >> text=Sign in")
            await page.wait_for_selector("#funnel")
            assert page.url == f"{base}/dashboard?since=30d"
            for stage in report.funnel.stages:
                shown = await page.text_content(f'tr[data-stage="{stage.stage}"] .count')
                assert shown is not None and int(shown) == stage.leads, stage.stage
            shown_scores = await page.locator("#hot-leads .score").all_text_contents()
            assert [int(score) for score in shown_scores] == [lead.score for lead in report.hot_leads]
            assert await page.locator("#funnel svg").count() == 1
            assert await page.locator(f"#sequence-{SEQUENCE} svg").count() == 1
            await screenshot(page, "dashboard-overview")

            hottest = report.hot_leads[0]
            await page.click(f'#hot-leads a[href="/dashboard/leads/{hottest.id}"]')
            await page.wait_for_selector("#timeline")
            assert page.url == f"{base}/dashboard/leads/{hottest.id}"
            assert await page.text_content("#summary .score") == str(hottest.score)
            assert hottest.email and hottest.email in (await page.text_content("#lead-title") or "")
            await screenshot(page, "dashboard-lead")

            await page.click(f'#sequences a[href="/dashboard/sequences/{SEQUENCE}"]')
            await page.wait_for_selector("#diagram svg")
            (sequence,) = report.sequences.sequences
            for step in sequence.steps:
                entered = await page.text_content(f'tr[data-step="{step.step}"] .entered')
                assert entered is not None and int(entered) == step.entered
            await screenshot(page, "dashboard-sequence")

            await page.goto(f"{base}/dashboard/preview")
            await page.select_option("select[name=template]", "ebook_delivery")
            await page.select_option("select[name=lead]", str(hottest.id))
            await page.click("button >> text=Preview")
            await page.wait_for_selector("#subject")
            assert (await page.text_content("#subject") or "").strip()
            frame = page.frame_locator("#rendered iframe")
            assert await frame.locator("body").count() == 1
            await screenshot(page, "dashboard-preview")

            await page.set_viewport_size(NARROW)
            for path, name in (
                ("/dashboard?since=30d", "overview"),
                (f"/dashboard/leads/{hottest.id}", "lead"),
                (f"/dashboard/sequences/{SEQUENCE}", "sequence"),
            ):
                await page.goto(base + path)
                assert await no_sideways_scroll(page), path
                await screenshot(page, f"dashboard-{name}-narrow")


async def test_an_empty_dashboard_in_chromium(runtime: Runtime, tmp_path: Path) -> None:
    if runtime.db.dialect != "sqlite":
        pytest.skip("one backend is enough for the browser")
    async with serving(runtime) as base, chromium(tmp_path / "profile") as browser:
        page = await browser.new_page()
        await page.goto(f"{base}/dashboard")
        await page.fill("input[name=key]", API_KEY)
        await page.click("button[type=submit] >> text=Sign in")
        await page.wait_for_selector("#funnel")
        assert page.url == f"{base}/dashboard"
        assert "No hot leads" in (await page.text_content("#hot-leads") or "")
        await screenshot(page, "dashboard-empty")
