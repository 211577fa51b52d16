"""Request bodies are bounded, and refused with a 413 that says the limit, before they are read into memory.

A declared `Content-Length` over the limit is answered at once, without reading a byte of the body; a body
sent without one (chunked) is counted as it arrives and refused the moment it passes the limit. (Starlette's
own `max_body_size` answers a bare plain-text "Content Too Large"; this says what the limit is, as JSON.)
"""

from __future__ import annotations

from fastapi import HTTPException, status
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes: nothing of it was stored; send less at once"


class BodySizeLimit:
    """ASGI middleware: at most `max_bytes` per request body, or the smaller limit of a path in `smaller`."""

    def __init__(self, app: ASGIApp, max_bytes: int, smaller: dict[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.smaller = app, max_bytes, smaller or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.smaller.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": too_large(limit)}, status.HTTP_413_CONTENT_TOO_LARGE)(
                scope, receive, send
            )
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing and the routes that read the
                    # body themselves, and is answered as JSON by the app's exception handling.
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, too_large(limit))
            return message

        await self.app(scope, counted, send)
