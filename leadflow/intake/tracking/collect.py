"""What the snippet sends to `POST /t/collect`, and storing it: an identify and events, in one transaction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from leadflow.content.fields import EVENT_TYPE
from leadflow.http.inputs import Input
from leadflow.intake.identity import Identified, claim, prove
from leadflow.intake.ingest import EventIn, IngestResult, LeadIn, properties_at_most, store_events
from leadflow.intake.tracking.model import Site
from leadflow.messaging.push_subscriptions import BrowserSubscription
from leadflow.platform import clock
from leadflow.platform.store import Database
from leadflow.scoring.model import TRACKER_EVENTS

MAX_BODY_BYTES = 32_768  # a beacon may carry 64 KiB; a batch of 50 small events is far below this
PUSH_MAX_BODY_BYTES = 4_096  # a site key, an anonymous id and one PushSubscription.toJSON()
MAX_EVENTS = 50
MAX_PROPERTIES_BYTES = 4_096
MAX_AGE = timedelta(days=1)
CLIENT_ID = r"^[A-Za-z0-9_-]{8,64}$"
PROOF = r"^[A-Za-z0-9_.-]{1,300}$"  # what leadflow.messaging.links makes: URL-safe base64 and dots


_small = properties_at_most(MAX_PROPERTIES_BYTES)


class TrackedEvent(Input):
    free_form = ("properties",)
    id: str = Field(pattern=CLIENT_ID, description="random per event: a resent batch is stored once")
    type: str = Field(pattern=EVENT_TYPE, max_length=100)
    age_ms: int = Field(
        default=0, ge=0, le=int(MAX_AGE.total_seconds() * 1000), description="ms before sending"
    )
    properties: dict[str, Any] = Field(default_factory=dict)

    _check_properties = field_validator("properties")(_small)

    @field_validator("type")
    @classmethod
    def _allowed_for_site(cls, event_type: str, info: ValidationInfo) -> str:
        site: Site | None = (info.context or {}).get("site")
        if site is not None and event_type not in TRACKER_EVENTS and event_type not in site.events:
            allowed = ", ".join(sorted(TRACKER_EVENTS | set(site.events)))
            raise ValueError(f"site {site.id!r} may not send {event_type!r} events (allowed: {allowed})")
        return event_type


class CollectIn(Input):
    """One request from the snippet: the site key, the browser's anonymous id, and what happened."""

    site: str = Field(max_length=100)
    anonymous_id: str = Field(pattern=CLIENT_ID)
    consent: bool = False
    identify: LeadIn | None = Field(
        default=None, description="who the visitor says they are: a claim, not proof (see the README)"
    )
    proof: str | None = Field(
        default=None,
        pattern=PROOF,
        description="the `lf_proof` a click in an email added to the page's address: this browser got it",
    )
    identify_source: Literal["page", "form_abandoned"] = Field(
        default="page",
        description="`form_abandoned`: the address was typed into a form the visitor left unsent (only for "
        "sites with identify_on_form_abandon)",
    )
    events: list[TrackedEvent] = Field(default_factory=list, max_length=MAX_EVENTS)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.events and self.identify is None and self.proof is None:
            raise ValueError("send at least one event, an identify or a proof")
        return self


def store_collected(
    db: Database, site: Site, body: CollectIn, proven_lead: int | None = None
) -> tuple[IngestResult, Identified | None]:
    """The proof (`proven_lead`, read from `body.proof`), then the identify's claim (so this batch's events
    land on the lead they belong to), then the events; all or nothing.

    Event ids are namespaced by site (`web:<site id>:<id>`), so a public key cannot collide with, and so
    suppress, events that other sources send."""
    now = clock.now()
    events = [
        EventIn(
            id=f"web:{site.id}:{event.id}",
            type=event.type,
            anonymous_id=body.anonymous_id,
            timestamp=now - timedelta(milliseconds=event.age_ms),
            properties=event.properties,
        )
        for event in body.events
    ]
    with db.transaction() as session:
        identified = None
        if proven_lead is not None:
            identified = prove(session, body.anonymous_id, proven_lead)
        if body.identify is not None:
            identity = body.identify
            identified = claim(
                session,
                body.anonymous_id,
                identity.email,
                identity.properties,
                new_addresses=not site.double_opt_in,
            )
        result = store_events(session, events) if events else IngestResult(0, 0, [])
    return result, identified


class VisitorSubscriptionIn(Input):
    """What `leadflow.push.subscribe()` sends to `POST /t/push`: the browser's PushSubscription.toJSON()."""

    site: str = Field(max_length=100)
    anonymous_id: str = Field(pattern=CLIENT_ID)
    consent: bool = False
    subscription: BrowserSubscription = Field(
        description="PushSubscription.toJSON(): the endpoint must be an https address of a public host"
    )
