"""Accepting leads and events: validated, stored once with their outbox rows, in one transaction."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from leadflow.content.fields import EVENT_TYPE
from leadflow.http.inputs import Input, LeadId, as_utc
from leadflow.leads.lifecycle import Stage
from leadflow.messaging.consent import CONSENT_EVENTS, apply_consent_event, channel_of
from leadflow.platform import clock
from leadflow.platform.converter import make_lead_keys
from leadflow.platform.errors import LeadflowError
from leadflow.platform.settings import CHANNELS
from leadflow.platform.store import Database
from leadflow.platform.store.models import Account, Event, Identity, Lead, Outbox
from leadflow.platform.store.upsert import insert_ignoring_conflicts

MAX_PROPERTIES_BYTES = 16_384
MAX_BATCH_EVENTS = 1000
MAX_FUTURE = timedelta(days=1)
# No blank or control character: they end a mail header (\x1c splits a line as \n does).
_ADDRESS_PART = r"[^@\s\x00-\x1f\x7f-\x9f]+"
EMAIL_PATTERN = rf"^{_ADDRESS_PART}@{_ADDRESS_PART}\.{_ADDRESS_PART}$"
PHONE_PATTERN = r"^\+[1-9]\d{6,14}$"
# The ids leadflow gives its own events (links and webhooks `lf-…`, the tracker `web:<site>:…`, identity
# `identified:…` and `merged:…`). A client may not use them: else an API key holder who stores
# `lf-unsubscribe-{lead}-email-0` first would have the lead's real unsubscribe dropped as a duplicate.
RESERVED_ID_PREFIXES = ("lf-", "web:", "identified:", "merged:")
FREE_MAIL_DOMAINS = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "msn.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mail.com",
        "gmx.com",
        "gmx.de",
        "web.de",
        "proton.me",
        "protonmail.com",
        "yandex.ru",
        "qq.com",
        "163.com",
        "example.com",
        "example.org",
        "example.net",
    ]
)


def properties_at_most(limit: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A validator refusing properties larger than `limit` bytes of JSON."""

    def check(properties: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(properties, default=str)) > limit:
            raise ValueError(f"properties are larger than {limit} bytes")
        return properties

    return check


_small_properties = properties_at_most(MAX_PROPERTIES_BYTES)


def _known_timezone(properties: dict[str, Any]) -> dict[str, Any]:
    zone = properties.get("timezone")
    if zone is not None:
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {zone!r} is not an IANA time zone such as Europe/Paris") from None
    return properties


class LeadIn(Input):
    free_form = ("properties",)
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN, description="E.164, e.g. +14155550100")
    properties: dict[str, Any] = Field(default_factory=dict)

    _check_properties = field_validator("properties")(_small_properties)
    _check_timezone = field_validator("properties")(_known_timezone)

    @field_validator("email")
    @classmethod
    def _normalise(cls, email: str) -> str:
        return email.strip().lower()


class EventIn(Input):
    free_form = ("properties",)
    id: str = Field(min_length=1, max_length=200, description="idempotency key: a repeat is ignored")
    type: str = Field(pattern=EVENT_TYPE, max_length=100)
    email: str | None = Field(default=None, pattern=EMAIL_PATTERN, max_length=320)
    lead_id: LeadId | None = None
    anonymous_id: str | None = Field(default=None, min_length=1, max_length=200)
    timestamp: datetime | None = None
    properties: dict[str, Any] = Field(default_factory=dict)

    _check_properties = field_validator("properties")(_small_properties)

    @field_validator("email")
    @classmethod
    def _normalise(cls, email: str | None) -> str | None:
        return email.strip().lower() if email else email

    @field_validator("timestamp")
    @classmethod
    def _aware_and_not_future(cls, timestamp: datetime | None) -> datetime | None:
        if timestamp is None:
            return None
        timestamp = as_utc(timestamp)
        if timestamp > clock.now() + MAX_FUTURE:
            raise ValueError("timestamp is more than a day in the future")
        return timestamp

    @field_validator("properties")
    @classmethod
    def _consent_channel(cls, properties: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("type")
        if kind in CONSENT_EVENTS and channel_of(properties) not in CHANNELS:
            raise ValueError(
                f"channel of a {kind} event must be one of {', '.join(CHANNELS)} (default email)"
            )
        return properties

    @model_validator(mode="after")
    def _one_identity(self) -> Self:
        given = [name for name in ("email", "lead_id", "anonymous_id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of email, lead_id, anonymous_id")
        return self


class ClientEventIn(EventIn):
    """An event sent by an API client: any id but those leadflow reserves for its own events."""

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, event_id: str) -> str:
        if event_id.startswith(RESERVED_ID_PREFIXES):
            reserved = ", ".join(f"{prefix!r}" for prefix in RESERVED_ID_PREFIXES)
            raise ValueError(f"ids starting with {reserved} are reserved for leadflow's own events")
        return event_id


class EventBatchIn(Input):
    events: list[ClientEventIn] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class UnknownLead(LeadflowError, LookupError):
    http_status = 404

    def __init__(self, lead: int | str, where: str) -> None:
        super().__init__(f"{where}: lead {lead!r} does not exist")


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    lead_ids: list[int]


def account_domain(email: str | None, properties: dict[str, Any]) -> str | None:
    """The account a lead belongs to: its company website if given, else a work email's domain."""
    website = properties.get("company_domain") or properties.get("website")
    if isinstance(website, str) and website.strip():
        return website.strip().lower().removeprefix("https://").removeprefix("http://").split("/")[0]
    if email and (domain := email.rsplit("@", 1)[-1]) not in FREE_MAIL_DOMAINS:
        return domain
    return None


def upsert_lead(db: Database, lead_in: LeadIn) -> tuple[Lead, bool]:
    """The lead with this email, created or with `properties` merged in; and whether it was created. Run
    again when the store's connection drops under it (an upsert by email can be repeated)."""

    def upsert(session: Session) -> tuple[Lead, bool]:
        lead_ids = lead_ids_by_email(session, {lead_in.email: lead_in.properties})
        lead = session.get_one(Lead, lead_ids[lead_in.email][0])
        created = lead_ids[lead_in.email][1]
        if not created and lead_in.properties:
            lead.properties = {**lead.properties, **lead_in.properties}
            lead.updated_at = clock.now()
        if lead_in.phone and lead.phone != lead_in.phone:
            lead.phone = lead_in.phone
            lead.updated_at = clock.now()
        return lead, created

    return db.retrying(upsert)


def lead_ids_by_email(
    session: Session, properties_by_email: dict[str, dict[str, Any]]
) -> dict[str, tuple[int, bool]]:
    now = clock.now()
    emails = list(properties_by_email)
    existing = dict(session.execute(select(Lead.email, Lead.id).where(Lead.email.in_(emails))).all())
    missing = [email for email in emails if email not in existing]
    if missing:
        accounts = account_ids_by_email(
            session, {e: account_domain(e, properties_by_email[e]) for e in missing}
        )
        rows = [
            {
                "email": email,
                "properties": properties_by_email[email],
                "stage": Stage.LEAD,
                "score": 0,
                "account_id": accounts.get(email),
                "created_at": now,
                "updated_at": now,
            }
            for email in missing
        ]
        insert_ignoring_conflicts(session, Lead, rows, ["email"])
        created = dict(session.execute(select(Lead.email, Lead.id).where(Lead.email.in_(missing))).all())
        make_lead_keys(session, created.values())  # here, not on the router's path when it first signals
    else:
        created = {}
    return {
        email: (existing[email], False) if email in existing else (created[email], True) for email in emails
    }


def account_ids_by_email(session: Session, domain_by_email: dict[str, str | None]) -> dict[str, int]:
    domains = {domain for domain in domain_by_email.values() if domain}
    if not domains:
        return {}
    now = clock.now()
    insert_ignoring_conflicts(
        session,
        Account,
        [{"domain": d, "name": d.split(".")[0].title(), "created_at": now} for d in domains],
        ["domain"],
    )
    ids = dict(session.execute(select(Account.domain, Account.id).where(Account.domain.in_(domains))).all())
    return {email: ids[domain] for email, domain in domain_by_email.items() if domain}


def leads_by_anonymous_id(session: Session, anonymous_ids: set[str]) -> dict[str, int]:
    known = dict(
        session.execute(
            select(Identity.anonymous_id, Identity.lead_id).where(Identity.anonymous_id.in_(anonymous_ids))
        ).all()
    )
    for anonymous_id in anonymous_ids - known.keys():
        known[anonymous_id] = new_anonymous_lead(session)
        session.add(Identity(anonymous_id=anonymous_id, lead_id=known[anonymous_id], created_at=clock.now()))
    return known


def new_anonymous_lead(session: Session) -> int:
    """A lead known only by a browser: no email, no properties."""
    now = clock.now()
    lead = Lead(properties={}, stage=Stage.SUBSCRIBER, score=0, created_at=now, updated_at=now)
    session.add(lead)
    session.flush()
    make_lead_keys(session, [lead.id])
    return lead.id


def ingest_events(db: Database, events: list[EventIn]) -> IngestResult:
    """Store each new event once with its outbox row; repeats of a known id are counted and ignored.

    All or nothing: an unknown lead id anywhere refuses the whole batch before anything is written. Run
    again when the store's connection drops under it (events are idempotent by id).
    """
    return db.retrying(lambda session: store_events(session, events))


def store_events(session: Session, events: list[EventIn]) -> IngestResult:
    """`ingest_events` inside the caller's transaction (the tracker, the unsubscribe link and webhooks use it)."""
    now = clock.now()
    by_id = {event.lead_id for event in events if event.lead_id is not None}
    known = set(session.scalars(select(Lead.id).where(Lead.id.in_(by_id)))) if by_id else set()
    for index, event in enumerate(events):
        if event.lead_id is not None and event.lead_id not in known:
            raise UnknownLead(event.lead_id, f"events[{index}].lead_id" if len(events) > 1 else "lead_id")
    emails: dict[str, dict[str, Any]] = {event.email: {} for event in events if event.email}
    lead_by_email = (
        {e: lead_id for e, (lead_id, _) in lead_ids_by_email(session, emails).items()} if emails else {}
    )
    anonymous = {event.anonymous_id for event in events if event.anonymous_id}
    lead_by_anonymous = leads_by_anonymous_id(session, anonymous) if anonymous else {}

    def lead_of(event: EventIn) -> int:
        if event.email:
            return lead_by_email[event.email]
        if event.anonymous_id:
            return lead_by_anonymous[event.anonymous_id]
        assert event.lead_id is not None
        return event.lead_id

    unique = _first_of_each_key(events)
    survivor = surviving_leads(session, {lead_of(event) for event in unique})
    rows: list[dict[str, Any]] = [
        {
            "key": event.id,
            "lead_id": survivor[lead_of(event)],
            "type": event.type,
            "occurred_at": event.timestamp or now,
            "received_at": now,
            "properties": with_page_path(event.properties),
        }
        for event in unique
    ]
    inserted = insert_ignoring_conflicts(
        session, Event, rows, ["key"], returning=(Event.id, Event.lead_id, Event.key)
    )
    if inserted:
        session.execute(
            insert(Outbox),
            [
                {"lead_id": lead_id, "event_id": event_id, "created_at": now}
                for event_id, lead_id, _ in inserted
            ],
        )
    new_keys = {key for _, _, key in inserted}
    for row in rows:
        if row["key"] in new_keys and row["type"] in CONSENT_EVENTS:
            apply_consent_event(
                session, row["lead_id"], row["type"], row["properties"], row["occurred_at"], row["key"]
            )
    lead_ids = sorted({int(row["lead_id"]) for row in rows})
    return IngestResult(accepted=len(inserted), duplicates=len(events) - len(inserted), lead_ids=lead_ids)


def with_page_path(properties: dict[str, Any]) -> dict[str, Any]:
    """`properties` with the `path` of their `url` when they have a url and no path: the snippet sends the
    full address (location.href), a server often a bare path; rules on `path` read both the same way."""
    url = properties.get("url")
    if "path" in properties or not isinstance(url, str):
        return properties
    try:
        path = urlsplit(url).path
    except ValueError:  # not a URL at all (an unclosed IPv6 bracket): nothing to derive
        return properties
    return {**properties, "path": path or "/"}


def surviving_leads(session: Session, lead_ids: set[int]) -> dict[int, int]:
    """Each lead id mapped to the lead its events belong to: itself, or the lead it was merged into.

    The rows are share-locked (PostgreSQL) so an identity merge running at the same moment either waits for
    these events and moves them too, or has finished and its survivor is read here; nothing lands on a
    tombstone. A merged lead is never merged again (only anonymous leads are), so one hop suffices.
    """
    rows = session.execute(
        select(Lead.id, Lead.merged_into_id)
        .where(Lead.id.in_(lead_ids))
        .order_by(Lead.id)
        .with_for_update(read=True)
    ).all()
    return {lead_id: merged_into or lead_id for lead_id, merged_into in rows}


def _first_of_each_key(events: list[EventIn]) -> list[EventIn]:
    seen: dict[str, EventIn] = {}
    for event in events:
        seen.setdefault(event.id, event)
    return list(seen.values())
