"""The sample landing site `leadflow dev` serves at /sample/: an ebook form, an event page (save a seat, allow
notifications) and a pricing page with a contact form, each carrying the snippet, so the three shipped campaigns
can be watched: browse → events → score → segment → sequence → email or web push.

It also serves `leadflow-sw.js`, the one-line service worker a customer site hosts on its own origin (a
service worker must be same-origin with the page): it imports Leadflow's /t/sw.js.

The same pages can be served from another origin (the browser tests do) by giving the snippet's full URL.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from urllib.parse import urljoin

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

SAMPLE_DIR = Path(__file__).with_name("sample")
SAMPLE_SITE_KEY = "pk_dev_sample_site"  # the `sample` site of the shipped sites.yaml
PAGES = frozenset(["index.html", "events.html", "pricing.html", "thanks.html"])
SERVICE_WORKER = (
    "leadflow-sw.js"  # the shipped sample site's `service_worker` (sites.yaml), next to the pages
)


def sample_site(snippet_src: str) -> Starlette:
    """The sample pages with `<script src="{snippet_src}">`. Forms post to thanks.html, which answers POST."""

    async def page(request: Request) -> Response:
        name = request.path_params.get("page", "index.html")
        if name == SERVICE_WORKER:
            worker = f"importScripts({json.dumps(urljoin(snippet_src, '/t/sw.js'))});\n"
            return Response(worker, media_type="text/javascript")
        if name not in PAGES:
            return PlainTextResponse("no such page", 404)
        return HTMLResponse(render(name, snippet_src))

    methods = ["GET", "POST"]
    return Starlette(routes=[Route("/", page, methods=methods), Route("/{page}", page, methods=methods)])


def render(name: str, snippet_src: str) -> str:
    first_line, _, content = _read(name).partition("\n")
    title = first_line.removeprefix("<!-- title:").removesuffix("-->").strip()
    return (
        _read("_layout.html")
        .replace("{{TITLE}}", title)
        .replace("{{SNIPPET_SRC}}", snippet_src)
        .replace("{{CONTENT}}", content)
    )


@cache
def _read(name: str) -> str:
    return (SAMPLE_DIR / name).read_text(encoding="utf-8")
