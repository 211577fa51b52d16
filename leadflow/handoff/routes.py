"""The hand-off's API route: sales answers the lead's latest hand-off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field, model_validator
from temporalio.client import Client

from leadflow.handoff.answers import SalesAnswer, answer, handoff_document
from leadflow.handoff.closing import FollowUpStopper
from leadflow.http.inputs import Input
from leadflow.http.refusals import refusals
from leadflow.leads.routes import LeadReference, not_found
from leadflow.leads.views import find_lead
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime

log = logging.getLogger(__name__)


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


def handoff_routes(runtime: Runtime, temporal: Callable[[], Awaitable[Client]] | None) -> APIRouter:
    routes = APIRouter()
    stop_follow_up = FollowUpStopper(runtime, temporal)

    @routes.post("/leads/{reference}/handoff", responses=refusals(404, 409))
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

        applied = await asyncio.to_thread(apply)  # HandoffRefused, NotRecyclable: the app answers 409
        if applied is None:
            raise not_found(reference)
        stage_change_id, outcome, document = applied
        await stop_follow_up(stage_change_id, outcome)
        return document

    return routes
