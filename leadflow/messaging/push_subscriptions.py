"""Browser push subscriptions: validated as the Push API makes them, stored per lead, and recorded as the
lead's consent to push."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit
from uuid import uuid4

from pydantic import ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadflow.http.inputs import Input, LeadId
from leadflow.intake.ingest import EMAIL_PATTERN, EventIn, UnknownLead, leads_by_anonymous_id, store_events
from leadflow.messaging.consent import ConsentStatus
from leadflow.platform import clock
from leadflow.platform.store import Database
from leadflow.platform.store.models import Consent, Lead, PushSubscription
from leadflow.platform.store.upsert import insert_ignoring_conflicts


def _b64url_bytes(value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("is not base64url") from None


class SubscriptionKeys(Input):
    p256dh: str = Field(max_length=200, description="the browser's P-256 public key, base64url")
    auth: str = Field(max_length=100, description="the 16-byte authentication secret, base64url")

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        raw = _b64url_bytes(value)
        if len(raw) != 65 or raw[0] != 4:
            raise ValueError("must be an uncompressed P-256 public key (65 bytes, base64url)")
        return value

    @field_validator("auth")
    @classmethod
    def _secret(cls, value: str) -> str:
        if len(_b64url_bytes(value)) != 16:
            raise ValueError("must be 16 bytes, base64url")
        return value


class BrowserSubscription(Input):
    """What `PushSubscription.toJSON()` gives in the browser."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str = Field(max_length=2048)
    keys: SubscriptionKeys

    @field_validator("endpoint")
    @classmethod
    def _web_address(cls, endpoint: str) -> str:
        # Whether it may be called (https, a public host) depends on a setting: see webpush.endpoint_refusal.
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an https:// push service address")
        return endpoint


class PushSubscriptionIn(Input):
    email: str | None = Field(default=None, pattern=EMAIL_PATTERN, max_length=320)
    lead_id: LeadId | None = None
    subscription: BrowserSubscription

    @model_validator(mode="after")
    def _one_lead(self) -> Self:
        if (self.email is None) == (self.lead_id is None):
            raise ValueError("give exactly one of email, lead_id")
        return self


@dataclass(frozen=True)
class SavedSubscription:
    subscription_id: int
    lead_id: int
    consent_recorded: bool


def save_subscription(db: Database, request: PushSubscriptionIn) -> SavedSubscription:
    """Store (or move to this lead) the subscription, and record push consent unless already granted."""
    with db.transaction() as session:
        return _save(session, _lead_id(session, request), request.subscription)


def save_visitor_subscription(
    db: Database, anonymous_id: str, subscription: BrowserSubscription
) -> SavedSubscription:
    """A subscription from the snippet: for the lead of the browser's anonymous id (an anonymous lead is
    created for a new visitor; its subscription and consent follow it when it is identified or merged)."""
    with db.transaction() as session:
        lead_id = leads_by_anonymous_id(session, {anonymous_id})[anonymous_id]
        return _save(session, lead_id, subscription)


def _save(session: Session, lead_id: int, subscription: BrowserSubscription) -> SavedSubscription:
    now = clock.now()
    endpoint, keys = subscription.endpoint, subscription.keys
    row = {
        "lead_id": lead_id,
        "endpoint": endpoint,
        "p256dh": keys.p256dh,
        "auth": keys.auth,
        "created_at": now,
    }
    insert_ignoring_conflicts(session, PushSubscription, [row], ["endpoint"])
    saved = session.scalars(select(PushSubscription).where(PushSubscription.endpoint == endpoint)).one()
    saved.lead_id, saved.p256dh, saved.auth = lead_id, keys.p256dh, keys.auth  # a browser re-subscribed
    granted = session.scalars(
        select(Consent.status).where(Consent.lead_id == lead_id, Consent.channel == "push")
    ).first()
    if granted != ConsentStatus.GRANTED:
        properties = {"channel": "push", "source": "browser push subscription"}
        event = EventIn(
            id=f"lf-push-{uuid4().hex}", type="subscribed", lead_id=lead_id, properties=properties
        )
        store_events(session, [event])
    return SavedSubscription(saved.id, lead_id, granted != ConsentStatus.GRANTED)


def _lead_id(session: Any, request: PushSubscriptionIn) -> int:
    if request.lead_id is not None:
        if session.get(Lead, request.lead_id) is None:
            raise UnknownLead(request.lead_id, "lead_id")
        return request.lead_id
    found = session.scalars(select(Lead.id).where(Lead.email == request.email)).first()
    if found is None:
        raise UnknownLead(str(request.email), "email")
    return int(found)
