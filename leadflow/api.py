"""The HTTP API (FastAPI). Every /v1 route needs `Authorization: Bearer <key>` (leadflow.apikeys), within the
key's rate limit; every request body is bounded (LEADFLOW_MAX_BODY_BYTES), and refused whole when too large."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import uuid4

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, Field, model_validator
from temporalio.client import Client
from temporalio.service import RPCError

from leadflow import clock, dashboard
from leadflow.apikeys import Caller, Keyring
from leadflow.bodylimit import BodySizeLimit
from leadflow.channels.webpush import endpoint_refusal
from leadflow.consent import CONSENT_EVENTS, ConsentStatus, consent_document
from leadflow.content.models import RateLimit
from leadflow.erasure import erase_lead, stop_workflows
from leadflow.errors import LeadflowError
from leadflow.handoff.answers import SalesAnswer, answer, close_open_handoff, handoff_document
from leadflow.handoff.assignment import HandoffStatus
from leadflow.identity import identify_visitor
from leadflow.ingest import (
    MAX_BATCH_EVENTS,
    ClientEventIn,
    EventBatchIn,
    EventIn,
    LeadIn,
    UnknownLead,
    ingest_events,
    upsert_lead,
)
from leadflow.inputs import Input, as_utc
from leadflow.leads import find_lead, lead_document
from leadflow.logs import redact_access_log
from leadflow.push import PushSubscriptionIn, save_subscription
from leadflow.qualification import NotRecyclable, recycle, score_at
from leadflow.ratelimit import RateLimiter, retry_after_header
from leadflow.refusals import Problem, refusals
from leadflow.router import outbox_status
from leadflow.runtime import Runtime
from leadflow.securityheaders import SecurityHeaders
from leadflow.settings import Channel
from leadflow.tracking.collect import MAX_BODY_BYTES as COLLECT_MAX_BODY_BYTES
from leadflow.tracking.collect import PUSH_MAX_BODY_BYTES
from leadflow.tracking.routes import tracking_routes
from leadflow.webhooks import public_routes
from workflows.handoff import HandoffWorkflow

bearer = HTTPBearer(auto_error=False)
log = logging.getLogger(__name__)

LeadReference = Annotated[
    str,
    Path(
        min_length=1,
        max_length=320,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="the lead's id, email or anonymous id",
    ),
]


class Accepted(BaseModel):
    accepted: int
    duplicates: int


class LeadSaved(BaseModel):
    id: int
    email: str
    phone: str | None = None
    created: bool


class RecycleIn(Input):
    reason: str = Field(min_length=1, max_length=1000, description="why sales handed the lead back")


class HandoffAnswerIn(Input):
    """Sales' answer to a hand-off."""

    free_form = ("details",)

    action: Literal["accept", "reject", "recycle", "converted"]
    reason: str = Field(default="", max_length=1000, description="why (needed to reject or recycle)")
    by: str | None = Field(default=None, max_length=320, description="who answers (default: the assignee)")
    to: Literal["opportunity", "customer"] = Field(default="opportunity", description="for converted")
    details: dict[str, Any] = Field(
        default_factory=dict, description="for converted: the opportunity or customer (id, amount, …)"
    )

    @model_validator(mode="after")
    def _reason_to_hand_back(self) -> HandoffAnswerIn:
        if self.action in ("reject", "recycle") and not self.reason.strip():
            raise ValueError(f"a reason is needed to {self.action} a lead")
        return self


class IdentifyRequest(LeadIn):
    """A visitor known by an anonymous id (the snippet's `lf_aid` cookie) told us their email."""

    anonymous_id: str = Field(min_length=1, max_length=200)


class IdentifyResult(BaseModel):
    lead_id: int
    outcome: str
    merged_lead_id: int | None = None
    events_moved: int = 0


class ConsentIn(Input):
    status: Literal["granted", "withdrawn"]
    source: str = Field(min_length=1, max_length=500, description="where it was given: a form, a call, …")


class Erased(BaseModel):
    erased: int
    addresses_suppressed: int
    workflows_cancelled: int


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

    @app.exception_handler(UnknownLead)
    async def unknown_lead(request: Request, error: UnknownLead) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status.HTTP_404_NOT_FOUND)

    v1 = APIRouter(
        prefix="/v1", dependencies=[Depends(authorized)], responses=refusals(400, 401, 429), tags=["v1"]
    )
    lead_routes = refusals(404)

    @v1.post("/leads", response_model=LeadSaved, responses={201: {"model": LeadSaved}})
    async def save_lead(lead_in: LeadIn) -> JSONResponse:
        """Create a lead by email, or merge the given properties into the existing one."""
        lead, created = await asyncio.to_thread(upsert_lead, runtime.db, lead_in)
        body = LeadSaved(id=lead.id, email=lead.email or "", phone=lead.phone, created=created).model_dump()
        return JSONResponse(body, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @v1.post(
        "/events", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted, responses=refusals(404)
    )
    async def accept_events(body: ClientEventIn | EventBatchIn) -> Accepted:
        """One event, or a batch `{"events": [...]}`. Stored before the answer; a repeated id is ignored."""
        events: list[EventIn] = [*body.events] if isinstance(body, EventBatchIn) else [body]
        result = await asyncio.to_thread(ingest_events, runtime.db, events)
        if result.accepted and on_events_accepted:
            on_events_accepted()
        return Accepted(accepted=result.accepted, duplicates=result.duplicates)

    def not_found(reference: LeadReference) -> HTTPException:
        return HTTPException(
            status.HTTP_404_NOT_FOUND, f"no lead with id, email or anonymous id {reference!r}"
        )

    @v1.post("/identify", response_model=IdentifyResult)
    async def identify(request: IdentifyRequest) -> IdentifyResult:
        """Attach an anonymous id to the lead with this email, merging the anonymous visitor's history into
        it (see the identity rules in the README); `properties` are merged into the lead like POST /v1/leads."""
        identified = await asyncio.to_thread(
            identify_visitor, runtime.db, request.anonymous_id, request.email, request.properties
        )
        if on_events_accepted:
            on_events_accepted()
        return IdentifyResult(**asdict(identified))

    @v1.get("/leads/{reference}", responses=lead_routes)
    async def get_lead(reference: LeadReference) -> dict[str, Any]:
        """A lead by id, email or anonymous id: properties, score with breakdown, stage, segments,
        sequences and the recent timeline."""

        def read() -> dict[str, Any] | None:
            with runtime.db.read() as session:
                lead = find_lead(session, reference)
                return lead_document(session, lead) if lead else None

        document = await asyncio.to_thread(read)
        if document is None:
            raise not_found(reference)
        return document

    @v1.post("/leads/{reference}/recycle", responses=refusals(404, 409))
    async def recycle_lead(reference: LeadReference, body: RecycleIn) -> dict[str, Any]:
        """Sales hands the lead back: it is stamped "recycled" and qualifies again (MQL, then SQL) on new
        engagement; behavior before now no longer counts. 409 unless the lead is MQL, SQL or opportunity."""
        closing: list[int] = []

        def apply() -> dict[str, Any] | None:
            with runtime.db.transaction() as session:
                lead = find_lead(session, reference)
                if lead is None:
                    return None
                now = clock.now()
                recycle(session, lead.id, body.reason, runtime.content.scoring, now)
                closed = close_open_handoff(session, lead.id, HandoffStatus.RECYCLED, body.reason, now)
                closing.extend([closed.stage_change_id] if closed else [])
                return lead_document(session, lead)

        try:
            document = await asyncio.to_thread(apply)
        except NotRecyclable as refused:
            raise HTTPException(status.HTTP_409_CONFLICT, str(refused)) from None
        if document is None:
            raise not_found(reference)
        for stage_change_id in closing:
            await stop_follow_up(stage_change_id, HandoffStatus.RECYCLED)
        return document

    async def stop_follow_up(stage_change_id: int, outcome: str) -> None:
        if temporal is None:
            return
        try:
            client = await temporal()
        except (
            Exception
        ) as error:  # Temporal down: the follow-up sees the answer in the store at its next timer
            log.warning(
                "hand-off %s %s; its follow-up was not told at once: %s", stage_change_id, outcome, error
            )
            return
        handle = client.get_workflow_handle(runtime.settings.handoff_workflow_id(stage_change_id))
        try:
            await handle.signal(HandoffWorkflow.closed, outcome)
        except RPCError:
            pass  # finished already, or a hand-off from before follow-ups: nothing is waiting

    @v1.post("/leads/{reference}/handoff", responses=refusals(404, 409))
    async def answer_handoff(reference: LeadReference, body: HandoffAnswerIn) -> dict[str, Any]:
        """Sales answers the lead's latest hand-off: `accept`; `reject` or `recycle` with a `reason` (back
        to nurture, stamped recycled: it qualifies again on new engagement); `converted` `to` an opportunity
        or a customer with its `details`. Accepting or converting stops the reminders. 409 when the
        hand-off's state does not allow it (none yet, already closed)."""
        reply = SalesAnswer(body.action, body.reason.strip(), body.by, body.to, body.details)

        def apply() -> tuple[int, str, dict[str, Any]] | None:
            with runtime.db.transaction() as session:
                lead = find_lead(session, reference)
                if lead is None:
                    return None
                handoff = answer(session, lead, reply, runtime.content.scoring, clock.now())
                session.flush()
                return handoff.stage_change_id, handoff.status, handoff_document(session, handoff)

        try:
            applied = await asyncio.to_thread(apply)
        except NotRecyclable as refused:
            raise HTTPException(status.HTTP_409_CONFLICT, str(refused)) from None
        if applied is None:
            raise not_found(reference)
        stage_change_id, outcome, document = applied
        await stop_follow_up(stage_change_id, outcome)
        return document

    @v1.get("/leads/{reference}/score", responses=lead_routes)
    async def lead_score_at(
        reference: LeadReference, at: Annotated[datetime, AfterValidator(as_utc)] | None = None
    ) -> dict[str, Any]:
        """The lead's score recomputed from the ledger at a past time `at` (ISO 8601; default now): the
        model in force then, the events received by then, every contribution explained."""
        moment = at or clock.now()

        def read() -> dict[str, Any] | None:
            with runtime.db.read() as session:
                lead = find_lead(session, reference)
                if lead is None:
                    raise not_found(reference)
                past = score_at(session, lead.id, moment)
                if past is None:
                    return None
                return {
                    "at": moment,
                    **past.result.figures(score_key="total"),
                    "model_version": past.model_version,
                    "ledger_entry": {"computed_at": past.snapshot.computed_at, "score": past.snapshot.score},
                }

        document = await asyncio.to_thread(read)
        if document is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"the ledger has no score for {reference!r} at {moment}"
            )
        return document

    def lead_id_of(reference: LeadReference) -> int:
        with runtime.db.read() as session:
            lead = find_lead(session, reference)
        if lead is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no lead with id, email or anonymous id {reference!r}"
            )
        return lead.id

    @v1.put("/leads/{reference}/consent/{channel}", responses=lead_routes)
    async def set_consent(
        reference: LeadReference, channel: Channel, consent_in: ConsentIn
    ) -> dict[str, Any]:
        """Record that the lead granted or withdrew consent for a channel, with where it happened. Stored
        as a `subscribed` / `unsubscribed` event, so the lead's workflow sees it (an opt-out exits its
        sequences); answers the channel's consent with its history."""
        lead_id = await asyncio.to_thread(lead_id_of, reference)
        kind = next(event for event, state in CONSENT_EVENTS.items() if state == consent_in.status)
        event = EventIn(
            id=f"lf-consent-{uuid4().hex}",
            type=kind,
            lead_id=lead_id,
            properties={"channel": channel, "source": consent_in.source},
        )
        await asyncio.to_thread(ingest_events, runtime.db, [event])
        if on_events_accepted:
            on_events_accepted()

        def read() -> dict[str, Any]:
            with runtime.db.read() as session:
                return dict(consent_document(session, lead_id)[channel])

        return await asyncio.to_thread(read)

    @v1.delete("/leads/{reference}", response_model=Erased, responses=lead_routes)
    async def erase(reference: LeadReference) -> Erased:
        """Erase the lead (GDPR): events, messages, scores and everything else about it, keeping only a
        keyed hash of its addresses on the suppression list; its workflows are terminated."""
        lead_id = await asyncio.to_thread(lead_id_of, reference)
        erasure = await asyncio.to_thread(erase_lead, runtime.db, runtime.settings, lead_id, clock.now())
        if erasure is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"lead {lead_id} was erased meanwhile")
        cancelled = 0
        if temporal is not None:
            try:
                cancelled = await stop_workflows(await temporal(), erasure)
            except Exception as error:  # Temporal down: docs/operations.md says what becomes of them
                log.warning(
                    "erased lead %s; its workflows %s were not terminated: %s",
                    lead_id,
                    " ".join(erasure.workflow_ids),
                    error,
                )
        return Erased(
            erased=lead_id, addresses_suppressed=erasure.addresses_suppressed, workflows_cancelled=cancelled
        )

    @v1.post("/push/subscriptions", status_code=status.HTTP_201_CREATED, responses=refusals(404))
    async def subscribe_push(subscription_in: PushSubscriptionIn) -> dict[str, Any]:
        """Store a browser's PushSubscription for a lead (by `email` or `lead_id`); subscribing is the
        lead's consent to push, recorded as a `subscribed` event. The endpoint must be https on a public host."""
        endpoint = subscription_in.subscription.endpoint
        refusal = endpoint_refusal(endpoint, settings.push_allow_loopback_for_tests)
        if refusal:
            where = ("body", "subscription", "endpoint")
            raise RequestValidationError(
                [{"type": "value_error", "loc": where, "msg": refusal, "input": endpoint}]
            )
        saved = await asyncio.to_thread(save_subscription, runtime.db, subscription_in)
        if saved.consent_recorded and on_events_accepted:
            on_events_accepted()
        return {"id": saved.subscription_id, "lead_id": saved.lead_id, "consent": ConsentStatus.GRANTED}

    @v1.get("/push/key", responses=refusals(404))
    async def push_key() -> dict[str, str]:
        """The VAPID public key a web page passes to `pushManager.subscribe` as `applicationServerKey`."""
        if runtime.push is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, "web push is not configured (LEADFLOW_VAPID_PRIVATE_KEY)"
            )
        return {"public_key": runtime.push.keys.public_key}

    @v1.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness plus the outbox: events waiting to be routed, the routing lag, and the dead letters
        (events that can never be routed, set aside: `leadflow outbox dead-letters list`)."""
        outbox = await asyncio.to_thread(outbox_status, runtime.db)
        return {
            "status": "ok",
            "outbox": {"depth": outbox.depth, "lag_seconds": round(outbox.lag_seconds, 3)},
            "dead_letters": outbox.dead_letters,
        }

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
