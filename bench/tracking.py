"""Tracking snippet: its size, and the requests it makes for a typical visit (batched). Prints JSON.

The visit runs in Debian's headless Chromium (Playwright) against the API and the sample site on real ports;
page timers run on Playwright's fake clock, so a visit of a few minutes takes seconds. The requests are
counted where they arrive (the API), beacons sent while a page unloads included.

    .venv/bin/python bench/tracking.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import platform
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from leadflow.content.loader import load_content
from leadflow.http.app import create_app
from leadflow.intake.tracking.routes import snippet_for
from leadflow.intake.tracking.sample_site import SAMPLE_SITE_KEY, sample_site
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT, Settings
from leadflow.platform.store.models import Event
from tests.support.browser import chromium, recording, serving
from tests.support.helpers import free_port

SECOND = 1000


async def typical_visit(page: Any, site: str) -> list[str]:
    """Lands from a newsletter, reads and scrolls, saves a seat on the event page (its form), looks at pricing,
    downloads the ebook through the form, leaves from the thank-you page. Returns what the visitor did, for the report."""
    steps = []

    async def read(seconds: int) -> None:
        await page.clock.run_for(seconds * SECOND)

    await page.goto(f"{site}/index.html?utm_source=newsletter&utm_medium=email")
    await read(20)
    await page.mouse.wheel(0, 20_000)
    await read(10)
    steps.append("landing page: read 30 s, scrolled to the end")
    await page.click("text=our next webinar")
    await read(15)
    await page.fill("#seat input[name=email]", "ada@acme-robotics.test")
    await read(5)
    async with page.expect_navigation():
        await page.click("#seat button[type=submit]")
    await read(4)
    steps.append("event page: 20 s, saved a seat (the form: identify); thank-you page 4 s")
    await page.click("text=Pricing")
    await read(25)
    steps.append("pricing: 25 s")
    await page.click("text=Ebook")
    await page.fill("#ebook input[name=email]", "ada@acme-robotics.test")
    await page.fill("#ebook input[name=first_name]", "Ada")
    await read(8)
    async with page.expect_navigation():
        await page.click("#ebook button[type=submit]")
    await read(6)
    steps.append("ebook form: filled in 8 s, submitted; thank-you page 6 s")
    await page.goto("about:blank")
    steps.append("left")
    return steps


async def visit_with(flush_seconds: float) -> dict[str, Any]:
    """One typical visit with the sample site's settings but this flush interval: what reached the API."""
    content = load_content(PROJECT_ROOT)
    site = content.sites[SAMPLE_SITE_KEY].model_copy(update={"flush_seconds": flush_seconds})
    with tempfile.TemporaryDirectory() as data:
        runtime = Runtime.from_settings(Settings(data_dir=Path(data), content_dir=PROJECT_ROOT))
        runtime.content = dataclasses.replace(runtime.content, sites={site.key: site})
        runtime.db.upgrade()
        api_port, site_port = free_port(), free_port()
        answers: list[tuple[str, int]] = []
        app = recording(create_app(runtime), answers)
        snippet_src = f"http://127.0.0.1:{api_port}/t/leadflow.js?site={SAMPLE_SITE_KEY}"
        async with (
            serving(app, api_port),
            serving(sample_site(snippet_src), site_port),
            async_playwright() as driver,
            chromium(driver, Path(data) / "profile") as browser,
        ):
            await browser.clock.install()
            page = await browser.new_page()
            steps = await typical_visit(page, f"http://127.0.0.1:{site_port}")
            await asyncio.sleep(1.0)  # the last beacon may still be on its way
        with runtime.db.read() as session:
            events = list(session.scalars(select(Event.type).where(Event.key.like("web:%"))))
        runtime.db.dispose()
    requests = Counter(path for path, _ in answers)
    collects = requests["/t/collect"]
    return {
        "flush_seconds": flush_seconds,
        "steps": steps,
        "pages": 6,
        "events_stored": len(events),
        "events_by_type": dict(Counter(events)),
        "collect_requests": collects,
        "snippet_downloads": requests["/t/leadflow.js"],
        "events_per_request": round(len(events) / collects, 2) if collects else None,
        "statuses": sorted({status for _, status in answers}),
    }


async def main() -> dict[str, Any]:
    source = snippet_for(load_content(PROJECT_ROOT).sites[SAMPLE_SITE_KEY])
    return {
        "benchmark": "tracking snippet",
        "python": platform.python_version(),
        "snippet": {"bytes": len(source), "gzip_bytes": len(gzip.compress(source, mtime=0))},
        # The shipped default (5 s: a pricing-page view reaches scoring within seconds), and a long interval
        # (everything of a page goes out in the beacon as the visitor leaves it).
        "typical_visit": [await visit_with(5.0), await visit_with(30.0)],
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))
