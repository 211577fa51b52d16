"""The HTTP app (FastAPI): each domain's routes (intake, leads, hand-off, messaging, tracking, engagement, the
dashboard) assembled behind the guards every request passes. Every /v1 route needs `Authorization: Bearer
<key>` (leadflow.http.apikeys), within the key's rate limit; every request body is bounded
(LEADFLOW_MAX_BODY_BYTES), and refused whole when too large."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from leadflow.handoff.routes import handoff_routes
from leadflow.http.apikeys import Caller, Keyring
from leadflow.http.bodylimit import BodySizeLimit
from leadflow.http.ratelimit import RateLimiter, retry_after_header
from leadflow.http.refusals import Problem, refusals
from leadflow.http.securityheaders import SecurityHeaders
from leadflow.intake.engagement import public_routes
from leadflow.intake.ingest import MAX_BATCH_EVENTS
from leadflow.intake.routes import intake_routes
from leadflow.intake.tracking.collect import MAX_BODY_BYTES as COLLECT_MAX_BODY_BYTES
from leadflow.intake.tracking.collect import PUSH_MAX_BODY_BYTES
from leadflow.intake.tracking.model import RateLimit
from leadflow.intake.tracking.routes import tracking_routes
from leadflow.leads.routes import lead_routes
from leadflow.messaging.routes import messaging_routes
from leadflow.platform.errors import LeadflowError
from leadflow.platform.logs import redact_access_log
from leadflow.platform.runtime import Runtime
from leadflow.reports import dashboard

bearer = HTTPBearer(auto_error=False)
log = logging.getLogger(__name__)


def create_app(
    runtime: Runtime,
    on_events_accepted: Callable[[], None] | None = None,
    temporal: Callable[[], Awaitable[Client]] | None = None,
) -> FastAPI:
    """The API over `runtime`; `on_events_accepted` lets an in-process router start routing at once;
    `temporal` gives the client (connected on first use) that cancels an erased lead's workflows and lets
    sales' answers stop a hand-off's follow-up timers at once (without it, the follow-up notices the answer
    in the store when its next timer fires)."""
    settings = runtime.settings
    app = FastAPI(
        title="Leadflow",
        version="0.1.0",
        description="Events in, qualified conversations out.",
        responses={413: {"model": Problem, "description": "the request body is too large"}},
    )
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        smaller={"/t/collect": COLLECT_MAX_BODY_BYTES, "/t/push": PUSH_MAX_BODY_BYTES},
    )
    app.add_middleware(SecurityHeaders)  # outermost: a 413 carries the headers too
    redact_access_log()
    app.include_router(public_routes(runtime, on_events_accepted))
    keyring = Keyring(runtime.db, settings.resolved_secret_key, settings.api_keys)
    limiter = RateLimiter(time.monotonic)
    per_key = RateLimit(per_minute=settings.api_rate_per_minute, burst=settings.api_rate_burst)

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        caller = keyring.caller(credentials.credentials) if credentials else None
        if caller is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing, unknown or revoked API key: send Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        wait = limiter.retry_after(f"api:{caller.digest}", per_key)
        if wait:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"too many requests with API key {caller.name!r}: at most {per_key.per_minute} a minute "
                f"(bursts of {per_key.burst}); retry in {retry_after_header(wait)} s",
                headers={"Retry-After": retry_after_header(wait)},
            )
        return caller

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(problem["type"] == "json_invalid" for problem in problems):
            reason = problems[0].get("ctx", {}).get("error", "")
            return JSONResponse(
                {"detail": f"malformed JSON: {reason}".rstrip(": ")}, status.HTTP_400_BAD_REQUEST
            )
        readable = _readable(list(problems), error.body)
        if any(problem["field"] == "events" and problem["type"] == "too_long" for problem in readable):
            return JSONResponse(
                {
                    "detail": f"a batch may hold at most {MAX_BATCH_EVENTS} events: nothing of it was stored; "
                    "send it in several batches"
                },
                status.HTTP_413_CONTENT_TOO_LARGE,
            )
        return JSONResponse({"detail": readable}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(LeadflowError)
    async def refused(request: Request, error: LeadflowError) -> JSONResponse:
        if error.http_status is None:  # not a client's doing: a 500, as any other failure
            raise error
        return JSONResponse({"detail": str(error)}, error.http_status)

    v1 = APIRouter(
        prefix="/v1", dependencies=[Depends(authorized)], responses=refusals(400, 401, 429), tags=["v1"]
    )
    # Each domain's routes, in the order the API documents them.
    v1.include_router(intake_routes(runtime, on_events_accepted))
    v1.include_router(lead_routes(runtime, temporal))
    v1.include_router(handoff_routes(runtime, temporal))
    v1.include_router(messaging_routes(runtime, on_events_accepted))
    app.include_router(v1)
    app.include_router(tracking_routes(runtime, on_events_accepted))
    dashboard.install(app, runtime, keyring)
    return app


def _readable(problems: list[Any], body: Any) -> list[dict[str, Any]]:
    """Validation errors with the field path a client wrote (`events.3.type`). For the event union body,
    only the errors of the form the client meant: a batch when it has `events`, else a single event."""
    meant = "EventBatchIn" if isinstance(body, dict) and "events" in body else "ClientEventIn"
    readable = []
    for problem in problems:
        location = [str(part) for part in problem["loc"] if part != "body"]
        branch = _union_branch(location[0]) if location else None
        if branch:
            if branch != meant:
                continue
            location.pop(0)
        readable.append(
            {"field": ".".join(location) or "body", "message": problem["msg"], "type": problem["type"]}
        )
    return readable or [{"field": "body", "message": "invalid request body", "type": "invalid"}]


def _union_branch(part: str) -> str | None:
    # pydantic names a union member by its class, wrapped when it has validators ("function-after[…, ClientEventIn]").
    for name in ("EventBatchIn", "ClientEventIn"):
        if part == name or part.endswith(f" {name}]"):
            return name
    return None
