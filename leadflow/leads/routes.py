"""A lead's API routes: the lead as people see it, its score at a past time, recycling it, erasing it; and the
lead reference every route under /v1/leads/{reference} takes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import AfterValidator, BaseModel, Field
from temporalio.client import Client

from leadflow.handoff.answers import close_open_handoff
from leadflow.handoff.assignment import HandoffStatus
from leadflow.handoff.closing import FollowUpStopper
from leadflow.http.inputs import Input, as_utc
from leadflow.http.refusals import refusals
from leadflow.leads.erasure import erase_lead, stop_workflows
from leadflow.leads.views import find_lead, lead_document
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.scoring.qualification import recycle, score_at

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
LEAD_ROUTES = refusals(404)


class RecycleIn(Input):
    reason: str = Field(min_length=1, max_length=1000, description="why sales handed the lead back")


class Erased(BaseModel):
    erased: int
    addresses_suppressed: int
    workflows_cancelled: int


def not_found(reference: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no lead with id, email or anonymous id {reference!r}")


def lead_id_of(runtime: Runtime, reference: str) -> int:
    with runtime.db.read() as session:
        lead = find_lead(session, reference)
    if lead is None:
        raise not_found(reference)
    return lead.id


def lead_routes(runtime: Runtime, temporal: Callable[[], Awaitable[Client]] | None) -> APIRouter:
    """`temporal` gives the client that cancels an erased lead's workflows and stops a recycled lead's
    hand-off follow-up at once."""
    routes = APIRouter()
    stop_follow_up = FollowUpStopper(runtime, temporal)

    @routes.get("/leads/{reference}", responses=LEAD_ROUTES)
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

    @routes.post("/leads/{reference}/recycle", responses=refusals(404, 409))
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

        document = await asyncio.to_thread(apply)  # NotRecyclable: the app answers 409
        if document is None:
            raise not_found(reference)
        for stage_change_id in closing:
            await stop_follow_up(stage_change_id, HandoffStatus.RECYCLED)
        return document

    @routes.get("/leads/{reference}/score", responses=LEAD_ROUTES)
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

    @routes.delete("/leads/{reference}", response_model=Erased, responses=LEAD_ROUTES)
    async def erase(reference: LeadReference) -> Erased:
        """Erase the lead (GDPR): events, messages, scores and everything else about it, keeping only a
        keyed hash of its addresses on the suppression list; its workflows are terminated."""
        lead_id = await asyncio.to_thread(lead_id_of, runtime, reference)
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

    return routes
