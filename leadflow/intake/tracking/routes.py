"""The public tracking routes: the snippet (`GET /t/leadflow.js`), what it sends (`POST /t/collect`), and web
push from the page: the service worker (`GET /t/sw.js`) and the browser's subscription (`POST /t/push`).

They take a public site key (sites.yaml), never a server-side API key, and can only write: the answer to a
collect says how many events were accepted, nothing about any lead.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from leadflow.http.ratelimit import RateLimiter, retry_after_header
from leadflow.http.refusals import refusals, request_body
from leadflow.intake.tracking.collect import MAX_EVENTS, CollectIn, VisitorSubscriptionIn, store_collected
from leadflow.intake.tracking.model import RateLimit, Site
from leadflow.messaging.links import PROOF_MAX_AGE
from leadflow.messaging.providers.webpush import endpoint_refusal
from leadflow.messaging.push_subscriptions import save_visitor_subscription
from leadflow.platform.runtime import Runtime

SNIPPET = Path(__file__).with_name("leadflow.js")
SERVICE_WORKER = Path(__file__).with_name("sw.js")
CONFIG_MARKER = "/*CONFIG*/"
Parsed = TypeVar("Parsed", bound=BaseModel)
ORIGIN_HEADER = {  # OpenAPI: the header a public page's POST is judged by
    "parameters": [
        {
            "name": "Origin",
            "in": "header",
            "description": "the page's origin: one sites.yaml allows for the key (else 403)",
            "schema": {"type": "string"},
        }
    ]
}
SNIPPET_MAX_AGE = 300  # seconds browsers may cache the snippet (a settings change shows within 5 minutes)
PROOF_REFUSED = {
    "field": "proof",
    "message": "not a proof leadflow made, or older than "
    f"{PROOF_MAX_AGE.total_seconds() / 60:.0f} minutes: open the link in the email again",
    "type": "value_error",
}


class Refused(Exception):
    def __init__(self, status_code: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status_code, self.detail, self.headers = status_code, detail, headers or {}


def tracking_routes(runtime: Runtime, on_events_accepted: Callable[[], None] | None = None) -> APIRouter:
    router = APIRouter(prefix="/t", tags=["tracking (public site keys)"])
    limiter = RateLimiter(time.monotonic)

    def site_of(key: str) -> Site | None:
        return runtime.content.sites.get(key)

    @router.get(
        "/leadflow.js",
        response_class=Response,
        responses={404: {"description": "unknown site key", "content": {"text/javascript": {}}}},
    )
    async def snippet(request: Request, site: str = "") -> Response:
        """The tracking snippet with the site's settings in it. Paste
        `<script async src="…/t/leadflow.js?site=KEY"></script>` into the site's pages."""
        found = site_of(site)
        if found is None:
            return Response(
                "console.warn('leadflow: unknown site key: see sites.yaml');\n",
                status.HTTP_404_NOT_FOUND,
                media_type="text/javascript",
            )
        body, encoding = snippet_for(found, runtime.push.keys.public_key if runtime.push else ""), {}
        if "gzip" in request.headers.get("accept-encoding", ""):
            body, encoding = gzip.compress(body, mtime=0), {"Content-Encoding": "gzip"}
        return Response(
            body,
            media_type="text/javascript",
            headers={
                "Cache-Control": f"public, max-age={SNIPPET_MAX_AGE}",
                "Vary": "Accept-Encoding",
                **encoding,
            },
        )

    @router.options("/collect", include_in_schema=False)
    @router.options("/push", include_in_schema=False)
    async def preflight(request: Request) -> Response:
        # The snippet sends text/plain (no preflight); this serves clients that send application/json.
        origin = request.headers.get("origin", "")
        if not any(site.allows_origin(origin) for site in runtime.content.sites.values()):
            return Response(status_code=status.HTTP_403_FORBIDDEN)
        return Response(
            status_code=status.HTTP_204_NO_CONTENT,
            headers={
                **cors(origin),
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "86400",
            },
        )

    @router.post(
        "/collect",
        status_code=status.HTTP_202_ACCEPTED,
        responses={204: {"description": "Do-Not-Track: nothing recorded"}, **refusals(400, 403, 413, 429)},
        # Read by the route itself: the snippet sends text/plain, which needs no CORS preflight.
        openapi_extra={**request_body(CollectIn, "text/plain", "application/json"), **ORIGIN_HEADER},
    )
    async def collect(request: Request) -> Response:
        """Events (and an identify) from the snippet, for one site key and one browser's anonymous id.
        Refused: unknown key or origin (403), over the rate limits (429), too large or too many events (413),
        invalid, or a `proof` forged or expired (422)."""
        allowed: dict[str, str] = {}
        try:
            site, data, allowed = await admitted(request)
            if site.honor_do_not_track and request.headers.get("dnt") == "1":
                return Response(status_code=status.HTTP_204_NO_CONTENT, headers=allowed)
            body = validate(CollectIn, data, {"site": site})
            if site.consent == "required" and not body.consent:
                raise Refused(status.HTTP_403_FORBIDDEN, "this site requires the visitor's consent")
            proven_lead = runtime.tracker.read_proof(body.proof) if body.proof else None
            if body.proof and proven_lead is None:
                raise Refused(status.HTTP_422_UNPROCESSABLE_CONTENT, [PROOF_REFUSED])
            if body.identify_source == "form_abandoned":
                if not site.identify_on_form_abandon:
                    raise Refused(
                        status.HTTP_403_FORBIDDEN,
                        "this site does not identify visitors from abandoned forms "
                        "(identify_on_form_abandon in sites.yaml)",
                    )
                if privacy_signal(request):  # Do-Not-Track or Global Privacy Control: the events, no identify
                    body = body.model_copy(update={"identify": None})
        except Refused as refused:
            return JSONResponse(
                {"detail": refused.detail}, refused.status_code, headers={**allowed, **refused.headers}
            )
        if body.identify is None and body.proof is None and not body.events:
            return Response(status_code=status.HTTP_204_NO_CONTENT, headers=allowed)
        result, _ = await asyncio.to_thread(store_collected, runtime.db, site, body, proven_lead)
        if result.accepted and on_events_accepted:
            on_events_accepted()
        return JSONResponse(
            {"accepted": result.accepted, "duplicates": result.duplicates},
            status.HTTP_202_ACCEPTED,
            headers=allowed,
        )

    @router.get("/sw.js", response_class=Response, responses={200: {"content": {"text/javascript": {}}}})
    async def service_worker() -> Response:
        """The web push service worker: shows each notification (title, body; a click opens its url). A
        service worker must come from the page's own origin: the site serves a one-line file,
        `importScripts("…/t/sw.js");`, at its `service_worker` path (sites.yaml)."""
        return Response(
            _service_worker_source(),
            media_type="text/javascript",
            headers={
                "Cache-Control": f"public, max-age={SNIPPET_MAX_AGE}",
                "Service-Worker-Allowed": "/",  # registered directly (same origin), it may serve any scope
            },
        )

    @router.post(
        "/push",
        status_code=status.HTTP_201_CREATED,
        responses={
            204: {"description": "Do-Not-Track: nothing recorded"},
            **refusals(400, 403, 404, 413, 429),
        },
        openapi_extra={
            **request_body(VisitorSubscriptionIn, "text/plain", "application/json"),
            **ORIGIN_HEADER,
        },
    )
    async def subscribe_push(request: Request) -> Response:
        """A browser's PushSubscription from `leadflow.push.subscribe()`, for one site key and the browser's
        anonymous id: stored for that visitor's lead (an anonymous lead for a new visitor; it follows the lead
        when the visitor is identified) and recorded as the lead's push consent. The endpoint must be an https
        address of a public host. Refused: unknown key or origin, no consent where required (403), over the
        rate limits (429), too large (413), invalid (422)."""
        allowed: dict[str, str] = {}
        try:
            if runtime.push is None:
                raise Refused(status.HTTP_404_NOT_FOUND, "web push is not configured on this server")
            site, data, allowed = await admitted(request)
            if site.honor_do_not_track and request.headers.get("dnt") == "1":
                return Response(status_code=status.HTTP_204_NO_CONTENT, headers=allowed)
            body = validate(VisitorSubscriptionIn, data, {})
            endpoint = body.subscription.endpoint
            refusal = endpoint_refusal(endpoint, runtime.settings.push_allow_loopback_for_tests)
            if refusal:
                field = {"field": "subscription.endpoint", "message": refusal, "type": "value_error"}
                raise Refused(status.HTTP_422_UNPROCESSABLE_CONTENT, [field])
            if site.consent == "required" and not body.consent:
                raise Refused(status.HTTP_403_FORBIDDEN, "this site requires the visitor's consent")
        except Refused as refused:
            return JSONResponse(
                {"detail": refused.detail}, refused.status_code, headers={**allowed, **refused.headers}
            )
        saved = await asyncio.to_thread(
            save_visitor_subscription, runtime.db, body.anonymous_id, body.subscription
        )
        if saved.consent_recorded and on_events_accepted:
            on_events_accepted()
        return JSONResponse({"subscribed": True}, status.HTTP_201_CREATED, headers=allowed)

    async def admitted(request: Request) -> tuple[Site, dict[str, Any], dict[str, str]]:
        """The site whose key the body names, the body, and the CORS headers for the answer; Refused when
        the key or the origin is unknown, the body not JSON, or the key or this address over its rate."""
        origin = request.headers.get("origin", "")
        raw = await request.body()  # bounded by leadflow.http.bodylimit, set up by the API
        data = parse_json(raw)
        site = site_of(str(data.get("site", "")))
        if site is None:
            raise Refused(status.HTTP_403_FORBIDDEN, "unknown site key")
        if not site.allows_origin(origin):
            raise Refused(
                status.HTTP_403_FORBIDDEN, f"origin {origin or '(none)'!r} may not send events for this site"
            )
        client = request.client.host if request.client else "unknown"
        try:
            check_rate(limiter, f"key:{site.key}", site.per_key, "this site key")
            check_rate(limiter, f"ip:{site.key}:{client}", site.per_ip, "this address")
        except Refused as refused:
            refused.headers = {**cors(origin), **refused.headers}  # the page may read why
            raise
        return site, data, cors(origin)

    return router


def privacy_signal(request: Request) -> bool:
    """The browser asks not to be tracked: Do-Not-Track or Global Privacy Control."""
    return request.headers.get("dnt") == "1" or request.headers.get("sec-gpc") == "1"


@cache
def _service_worker_source() -> bytes:
    return SERVICE_WORKER.read_bytes()


@cache
def _snippet_source() -> str:
    return SNIPPET.read_text(encoding="utf-8")


def snippet_for(site: Site, push_key: str = "") -> bytes:
    """The snippet with this site's settings written into its CONFIG line (`push_key`: the VAPID public key,
    empty while web push is not configured)."""
    config = {
        "site": site.key,
        "consent": site.consent,
        "honor_do_not_track": site.honor_do_not_track,
        "flush_seconds": site.flush_seconds,
        "identify_on_form_abandon": site.identify_on_form_abandon,
        "push_key": push_key,
        "service_worker": site.service_worker,
    }
    source = _snippet_source()
    start = source.index(CONFIG_MARKER)
    end = source.index(";", start)
    return (source[:start] + json.dumps(config) + source[end:]).encode()


def cors(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise Refused(status.HTTP_400_BAD_REQUEST, f"malformed JSON: {error}") from None
    if not isinstance(data, dict):
        raise Refused(status.HTTP_400_BAD_REQUEST, "the body must be a JSON object")
    return data


def check_rate(limiter: RateLimiter, bucket: str, limit: RateLimit, whom: str) -> None:
    wait = limiter.retry_after(bucket, limit)
    if wait:
        raise Refused(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many requests from {whom}: at most {limit.per_minute} a minute",
            {"Retry-After": retry_after_header(wait)},
        )


def validate(model: type[Parsed], data: dict[str, Any], context: dict[str, Any]) -> Parsed:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as invalid:
        if any(
            problem["loc"] == ("events",) and problem["type"] == "too_long" for problem in invalid.errors()
        ):
            raise Refused(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"a request may carry at most {MAX_EVENTS} events: nothing of it was stored",
            ) from None
        raise Refused(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "field": ".".join(str(part) for part in problem["loc"]) or "body",
                    "message": problem["msg"].removeprefix("Value error, "),
                    "type": problem["type"],
                }
                for problem in invalid.errors()
            ],
        ) from None
