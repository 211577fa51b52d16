"""The intake's API routes: a lead saved, events accepted (stored before the answer), a visitor identified,
and the outbox's health."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from leadflow.http.refusals import refusals
from leadflow.intake.identity import identify_visitor
from leadflow.intake.ingest import ClientEventIn, EventBatchIn, EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.intake.router import outbox_status
from leadflow.platform.runtime import Runtime


class Accepted(BaseModel):
    accepted: int
    duplicates: int


class LeadSaved(BaseModel):
    id: int
    email: str
    phone: str | None = None
    created: bool


class IdentifyRequest(LeadIn):
    """A visitor known by an anonymous id (the snippet's `lf_aid` cookie) told us their email."""

    anonymous_id: str = Field(min_length=1, max_length=200)


class IdentifyResult(BaseModel):
    lead_id: int
    outcome: str
    merged_lead_id: int | None = None
    events_moved: int = 0


def intake_routes(runtime: Runtime, on_events_accepted: Callable[[], None] | None) -> APIRouter:
    """`on_events_accepted` lets an in-process router start routing at once."""
    routes = APIRouter()

    @routes.post("/leads", response_model=LeadSaved, responses={201: {"model": LeadSaved}})
    async def save_lead(lead_in: LeadIn) -> JSONResponse:
        """Create a lead by email, or merge the given properties into the existing one."""
        lead, created = await asyncio.to_thread(upsert_lead, runtime.db, lead_in)
        body = LeadSaved(id=lead.id, email=lead.email or "", phone=lead.phone, created=created).model_dump()
        return JSONResponse(body, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @routes.post(
        "/events", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted, responses=refusals(404)
    )
    async def accept_events(body: ClientEventIn | EventBatchIn) -> Accepted:
        """One event, or a batch `{"events": [...]}`. Stored before the answer; a repeated id is ignored."""
        events: list[EventIn] = [*body.events] if isinstance(body, EventBatchIn) else [body]
        result = await asyncio.to_thread(ingest_events, runtime.db, events)
        if result.accepted and on_events_accepted:
            on_events_accepted()
        return Accepted(accepted=result.accepted, duplicates=result.duplicates)

    @routes.post("/identify", response_model=IdentifyResult)
    async def identify(request: IdentifyRequest) -> IdentifyResult:
        """Attach an anonymous id to the lead with this email, merging the anonymous visitor's history into
        it (see the identity rules in the README); `properties` are merged into the lead like POST /v1/leads."""
        identified = await asyncio.to_thread(
            identify_visitor, runtime.db, request.anonymous_id, request.email, request.properties
        )
        if on_events_accepted:
            on_events_accepted()
        return IdentifyResult(**asdict(identified))

    @routes.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness plus the outbox: events waiting to be routed, the routing lag, and the dead letters
        (events that can never be routed, set aside: `leadflow outbox dead-letters list`)."""
        outbox = await asyncio.to_thread(outbox_status, runtime.db)
        return {
            "status": "ok",
            "outbox": {"depth": outbox.depth, "lag_seconds": round(outbox.lag_seconds, 3)},
            "dead_letters": outbox.dead_letters,
        }

    return routes
