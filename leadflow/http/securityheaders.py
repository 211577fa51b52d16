"""Security headers on every answer of the API.

All of them carry `X-Content-Type-Options: nosniff` (a JSON answer or a tracking pixel is never run as a
script or shown as a page). HTML pages also carry `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`
(their addresses can name a lead or carry a token) and a Content-Security-Policy: the page's own when it sets
one (the dashboard's, see leadflow.reports.dashboard), else BASELINE_POLICY, which forbids framing, `<base>` and
plugins but leaves scripts and styles alone: the API's /docs load Swagger UI from a CDN, and the sample site
`leadflow dev` serves stands in for a marketer's own site, inline scripts and all.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BASELINE_POLICY = "frame-ancestors 'none'; base-uri 'self'; object-src 'none'"


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("X-Frame-Options", "DENY")
                    headers.setdefault("Referrer-Policy", "no-referrer")
                    headers.setdefault("Content-Security-Policy", BASELINE_POLICY)
            await send(message)

        await self.app(scope, receive, with_headers)
