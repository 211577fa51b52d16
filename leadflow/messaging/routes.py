"""Messaging's API routes: a lead's consent per channel, and browsers' push subscriptions with the key they
subscribe with."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal
from uuid import uuid4

from fastapi import APIRouter, HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import Field

from leadflow.http.inputs import Input
from leadflow.http.refusals import refusals
from leadflow.intake.ingest import EventIn, ingest_events
from leadflow.leads.routes import LEAD_ROUTES, LeadReference, lead_id_of
from leadflow.messaging.consent import CONSENT_EVENTS, ConsentStatus, consent_document
from leadflow.messaging.providers.webpush import endpoint_refusal
from leadflow.messaging.push_subscriptions import PushSubscriptionIn, save_subscription
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import Channel


class ConsentIn(Input):
    status: Literal["granted", "withdrawn"]
    source: str = Field(min_length=1, max_length=500, description="where it was given: a form, a call, …")


def messaging_routes(runtime: Runtime, on_events_accepted: Callable[[], None] | None) -> APIRouter:
    routes = APIRouter()

    @routes.put("/leads/{reference}/consent/{channel}", responses=LEAD_ROUTES)
    async def set_consent(
        reference: LeadReference, channel: Channel, consent_in: ConsentIn
    ) -> dict[str, Any]:
        """Record that the lead granted or withdrew consent for a channel, with where it happened. Stored
        as a `subscribed` / `unsubscribed` event, so the lead's workflow sees it (an opt-out exits its
        sequences); answers the channel's consent with its history."""
        lead_id = await asyncio.to_thread(lead_id_of, runtime, reference)
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

    @routes.post("/push/subscriptions", status_code=status.HTTP_201_CREATED, responses=refusals(404))
    async def subscribe_push(subscription_in: PushSubscriptionIn) -> dict[str, Any]:
        """Store a browser's PushSubscription for a lead (by `email` or `lead_id`); subscribing is the
        lead's consent to push, recorded as a `subscribed` event. The endpoint must be https on a public host."""
        endpoint = subscription_in.subscription.endpoint
        refusal = endpoint_refusal(endpoint, runtime.settings.push_allow_loopback_for_tests)
        if refusal:
            where = ("body", "subscription", "endpoint")
            raise RequestValidationError(
                [{"type": "value_error", "loc": where, "msg": refusal, "input": endpoint}]
            )
        saved = await asyncio.to_thread(save_subscription, runtime.db, subscription_in)
        if saved.consent_recorded and on_events_accepted:
            on_events_accepted()
        return {"id": saved.subscription_id, "lead_id": saved.lead_id, "consent": ConsentStatus.GRANTED}

    @routes.get("/push/key", responses=refusals(404))
    async def push_key() -> dict[str, str]:
        """The VAPID public key a web page passes to `pushManager.subscribe` as `applicationServerKey`."""
        if runtime.push is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, "web push is not configured (LEADFLOW_VAPID_PRIVATE_KEY)"
            )
        return {"public_key": runtime.push.keys.public_key}

    return routes
