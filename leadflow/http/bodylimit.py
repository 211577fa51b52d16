"""Request bodies are bounded in size and depth, and refused (413 saying the limit, 422 naming the field) before
they are parsed.

A declared `Content-Length` over the limit is answered at once, without reading a byte of the body; a body
sent without one (chunked) is counted as it arrives and refused the moment it passes the limit. (Starlette's
own `max_body_size` answers a bare plain-text "Content Too Large"; this says what the limit is, as JSON.)

A JSON body nested deeper than `MAX_BODY_DEPTH` levels is refused before any parser recurses into it: Python's
`json` raises RecursionError near 1,000 levels, and Temporal's converter gives up near 256. The depth is
counted in linear time without recursion; only a refused body is walked again, to name the field.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate

from fastapi import status
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_DEPTH = 32  # objects and arrays within objects and arrays; free-form properties nest at most 16
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')
_BRACKETS = b"[{]}"
_STEPS = bytes.maketrans(_BRACKETS, b"\x01\x01\xff\xff")  # +1 opening, -1 (as a signed byte) closing
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(_BRACKETS)))
_NOT_BRACKETS_OR_QUOTES = bytes(sorted(set(range(256)) - set(_BRACKETS + b'"')))
_LONGEST_KEY = 100  # characters of each key shown in a refused field's path


def too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes: nothing of it was stored; send less at once"


def nested_deeper_than(body: bytes, limit: int) -> str | None:
    """The field (`events.0.properties.a`) of the first object or array in the JSON `body` that lies more than
    `limit` levels deep, or None when none does."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return None
    if b'\\"' in body or b"\\\\" in body:  # an escaped quote or backslash: find the strings' ends exactly
        brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    else:  # every quote opens or closes a string: what lies between the quotes' pairs is outside them
        brackets = b"".join(body.translate(None, _NOT_BRACKETS_OR_QUOTES).split(b'"')[::2])
    steps = brackets.translate(_STEPS)
    if max(accumulate(memoryview(steps).cast("b")), default=0) <= limit:
        return None
    return _field_at_depth(body, limit)


def _field_at_depth(body: bytes, limit: int) -> str:
    # One frame per open object or array: [is an object, its current key or index, expecting a key].
    frames: list[list[object]] = []
    for token in _TOKEN.finditer(body):
        mark = token.group()
        if mark in (b"{", b"["):
            if len(frames) == limit:
                break
            frames.append([mark == b"{", "" if mark == b"{" else 0, mark == b"{"])
        elif mark in (b"}", b"]"):
            if frames:
                frames.pop()
        elif not frames:
            continue
        elif mark == b",":
            frame = frames[-1]
            if frame[0]:
                frame[2] = True
            else:
                frame[1] = int(str(frame[1])) + 1
        elif mark == b":":
            frames[-1][2] = False
        elif frames[-1][0] and frames[-1][2]:  # a string where an object expects its key
            frames[-1][1] = _key(mark)[:_LONGEST_KEY]
    return ".".join(str(frame[1]) for frame in frames) or "body"


def _key(quoted: bytes) -> str:
    try:
        return str(json.loads(quoted))
    except ValueError:
        return quoted[1:-1].decode("utf-8", "replace")


def _looks_like_json(body: bytes) -> bool:
    return body.lstrip()[:1] in (b"{", b"[")


class BodySizeLimit:
    """ASGI middleware: at most `max_bytes` per request body, or the smaller limit of a path in `smaller`; a
    JSON body at most `MAX_BODY_DEPTH` levels deep."""

    def __init__(self, app: ASGIApp, max_bytes: int, smaller: dict[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.smaller = app, max_bytes, smaller or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.smaller.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": too_large(limit)}, status.HTTP_413_CONTENT_TOO_LARGE)(
                scope, receive, send
            )
            return
        # The body is read whole here (it is bounded): its depth is known before the app parses it.
        chunks: list[bytes] = []
        received, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees it as it would
                await self.app(scope, _replaying([message], receive), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await JSONResponse({"detail": too_large(limit)}, status.HTTP_413_CONTENT_TOO_LARGE)(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        field = nested_deeper_than(body, MAX_BODY_DEPTH) if _looks_like_json(body) else None
        if field is not None:
            problem = {
                "field": field,
                "message": f"is nested deeper than {MAX_BODY_DEPTH} levels: nothing of the request was stored",
                "type": "too_deep",
            }
            await JSONResponse({"detail": [problem]}, status.HTTP_422_UNPROCESSABLE_CONTENT)(
                scope, receive, send
            )
            return
        await self.app(scope, _replaying([{"type": "http.request", "body": body}], receive), send)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives `messages` first, then what `receive` gives (a disconnect)."""
    waiting = list(messages)

    async def replay() -> Message:
        return waiting.pop(0) if waiting else await receive()

    return replay
