"""A real browser for the tracking tests: Debian's headless Chromium driven by Playwright, and the API and the
sample site served on real 127.0.0.1 ports (the page and the API on different origins, as on a real site)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadflow.content.loader import load_content
from leadflow.http.app import create_app
from leadflow.intake.tracking.model import Site
from leadflow.intake.tracking.sample_site import SAMPLE_SITE_KEY, sample_site
from leadflow.platform.settings import PROJECT_ROOT
from tests.support.helpers import Stack, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
SITE_KEY = "pk_test_browser_site"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium is not installed (scripts/test installs Debian's package as root)"
)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # pytest owns the signals


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, port: int, **options: Any) -> AsyncIterator[None]:
    """`app` served by uvicorn on 127.0.0.1:`port` until the block ends (`options`: uvicorn.Config's)."""
    settings = {"log_level": "warning", "lifespan": "off", **options}
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, **settings))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def recording(app: ASGIApp, answers: list[tuple[str, int]]) -> ASGIApp:
    """`app`, noting the path and status of every answer to the tracking routes (what the browser got)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start" and scope["path"].startswith("/t/"):
                answers.append((scope["path"], message["status"]))
            await send(message)

        await app(scope, receive, noting)

    return wrapped


@dataclass
class Website:
    """The API and the sample site, on their own ports; the site key's settings change with `configure`."""

    stack: Stack
    api: str
    site_port: int
    answers: list[tuple[str, int]] = field(default_factory=list)  # (path, status) of each /t/ request

    def collected(self) -> list[int]:
        """The status of each POST /t/collect so far."""
        return [status for path, status in self.answers if path == "/t/collect"]

    def url(self, page: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.site_port}/{page}"

    def configure(self, **settings: Any) -> Site:
        """The shipped sample site's settings (sites.yaml), on this site's origin, flushing every second."""
        site = Site.model_validate(
            {
                **_shipped_sample_site().model_dump(),
                "id": "browser",
                "key": SITE_KEY,
                "origins": [f"http://127.0.0.1:{self.site_port}"],
                "flush_seconds": 1,
                **settings,
            }
        )
        runtime = self.stack.runtime
        runtime.content = dataclasses.replace(runtime.content, sites={site.key: site})
        return site


@functools.cache
def _shipped_sample_site() -> Site:
    return load_content(PROJECT_ROOT).sites[SAMPLE_SITE_KEY]


@contextlib.asynccontextmanager
async def website(stack: Stack) -> AsyncIterator[Website]:
    api_port, site_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    served = Website(stack, api, site_port)
    app = recording(create_app(stack.runtime, on_events_accepted=stack.router.wake), served.answers)
    async with (
        serving(app, api_port),
        serving(sample_site(f"{api}/t/leadflow.js?site={SITE_KEY}"), site_port),
    ):
        served.configure()
        yield served


@contextlib.asynccontextmanager
async def chromium(playwright: Any, profile: Path) -> AsyncIterator[Any]:
    """A browser with a fresh profile; never `playwright install`: the system's Chromium."""
    context = await playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )
    try:
        yield context
    finally:
        await context.close()


async def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
