"""Consent and suppression records: opt-ins, opt-outs, the suppression list and the consent document. What a
send makes of them is the send-time policy's (leadflow.messaging.send_policy).

Every send reads them inside the transaction that claims the message, so an opt-out recorded a moment ago is
never missed. Consent changes arrive as events (`unsubscribed` / `subscribed` with a
`channel` property) through ingestion, so the lead's workflow sees them like any other event.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from leadflow.platform.logs import redact
from leadflow.platform.settings import CHANNELS
from leadflow.platform.store.models import Consent, ConsentChange, Lead, PushSubscription, Suppression
from leadflow.platform.store.upsert import insert_ignoring_conflicts


class ConsentStatus(StrEnum):
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"


OPT_OUT_EVENT, OPT_IN_EVENT = "unsubscribed", "subscribed"
CONSENT_EVENTS = {OPT_OUT_EVENT: ConsentStatus.WITHDRAWN, OPT_IN_EVENT: ConsentStatus.GRANTED}
# Suppressions a fresh opt-in lifts; a bounce, a complaint or an erasure stays.
LIFTED_BY_OPT_IN = ("opt_out",)
DETAIL_LENGTH = 500  # a provider's refusal is kept for the record, bounded


def address_hash(key: str, channel: str, address: str) -> str:
    """HMAC-SHA256 of the address under LEADFLOW_SECRET_KEY: whoever holds the store but not the key cannot
    test addresses against the suppression list (a plain hash of an email is guessed from a list of names)."""
    return hmac.new(key.encode(), _normalised(channel, address).encode(), hashlib.sha256).hexdigest()


def _plain_hash(channel: str, address: str) -> str:
    """The hash stored before the list was keyed (migration erase_0012_lead_keys): never written any more,
    still matched, and re-keyed when the address is suppressed again (the address itself is gone)."""
    return hashlib.sha256(_normalised(channel, address).encode()).hexdigest()


def _normalised(channel: str, address: str) -> str:
    return address.strip().lower() if channel == "email" else address.strip()


def _hashes(session: Session, channel: str, address: str) -> tuple[str, str]:
    """The address's keyed hash and its plain one; the key comes with the session (Database.address_key)."""
    key = session.info.get("address_key")
    if not key:
        raise RuntimeError("the store was opened without the suppression list's key (LEADFLOW_SECRET_KEY)")
    return address_hash(key, channel, address), _plain_hash(channel, address)


def channel_of(properties: dict[str, Any]) -> str:
    return str(properties.get("channel") or "email")


# --- records -----------------------------------------------------------------------------------------


def suppress(
    session: Session, channel: str, address: str, reason: str, detail: str | None, now: datetime
) -> None:
    """Put the address on the list (a row already there keeps its reason). `detail` (a provider's refusal,
    an opt-out's source) is kept with every email and phone number in it masked: it outlives the lead."""
    keyed, plain = _hashes(session, channel, address)
    session.execute(
        update(Suppression)
        .where(Suppression.channel == channel, Suppression.address_hash == plain)
        .values(address_hash=keyed)
    )
    insert_ignoring_conflicts(
        session,
        Suppression,
        [
            {
                "channel": channel,
                "address_hash": keyed,
                "reason": reason,
                "detail": redact(detail)[:DETAIL_LENGTH] if detail else None,
                "created_at": now,
            }
        ],
        ["channel", "address_hash"],
    )


def suppress_erased(session: Session, channel: str, address: str, now: datetime) -> None:
    """An erased person's address stays on the list, with nothing but its hash and reason: the detail of an
    earlier row (a bounce's text, an opt-out's source) goes too."""
    suppress(session, channel, address, "erased", None, now)
    keyed, _ = _hashes(session, channel, address)
    session.execute(
        update(Suppression)
        .where(Suppression.channel == channel, Suppression.address_hash == keyed)
        .values(detail=None)
    )


# Every send asks these: statements built once.
_SUPPRESSION = select(Suppression).where(
    Suppression.channel == bindparam("channel"),
    Suppression.address_hash.in_(bindparam("hashes", expanding=True)),
)
_CONSENT_STATUS = select(Consent.status).where(
    Consent.lead_id == bindparam("lead"), Consent.channel == bindparam("channel")
)


def suppression_of(session: Session, channel: str, address: str) -> Suppression | None:
    hashes = list(_hashes(session, channel, address))
    return session.scalars(_SUPPRESSION, {"channel": channel, "hashes": hashes}).first()


def lift_opt_out(session: Session, channel: str, address: str) -> None:
    session.execute(
        delete(Suppression).where(
            Suppression.channel == channel,
            Suppression.address_hash.in_(_hashes(session, channel, address)),
            Suppression.reason.in_(LIFTED_BY_OPT_IN),
        )
    )


def record_consent(
    session: Session, lead: Lead, channel: str, status: str, source: str, at: datetime
) -> None:
    """Set the lead's consent for `channel` and append it to the history; an opt-out also suppresses the
    address (so it holds even if the lead is later erased or recreated), an opt-in lifts that."""
    current = session.scalars(
        select(Consent).where(Consent.lead_id == lead.id, Consent.channel == channel)
    ).first()
    session.add(ConsentChange(lead_id=lead.id, channel=channel, status=status, source=source, changed_at=at))
    if current is None:
        session.add(Consent(lead_id=lead.id, channel=channel, status=status, source=source, changed_at=at))
    elif current.changed_at <= at:
        current.status, current.source, current.changed_at = status, source, at
    else:
        return  # an older change arriving late is history, not the current state
    for address in addresses(session, lead, channel):
        if status == ConsentStatus.WITHDRAWN:
            suppress(session, channel, address, "opt_out", source, at)
        else:
            lift_opt_out(session, channel, address)


def apply_consent_event(
    session: Session, lead_id: int, event_type: str, properties: dict[str, Any], at: datetime, key: str
) -> None:
    """What an accepted `unsubscribed` / `subscribed` event does to the lead's consent."""
    lead = session.get(Lead, lead_id)
    if lead is None:
        return
    source = str(properties.get("source") or f"event {key}")
    record_consent(session, lead, channel_of(properties), CONSENT_EVENTS[event_type], source, at)


def addresses(session: Session, lead: Lead, channel: str) -> list[str]:
    """Where `channel` reaches the lead: its email, its phone, or its browsers' push endpoints."""
    if channel == "email":
        return [lead.email] if lead.email else []
    if channel == "sms":
        return [lead.phone] if lead.phone else []
    return list(session.scalars(select(PushSubscription.endpoint).where(PushSubscription.lead_id == lead.id)))


def consent_document(session: Session, lead_id: int) -> dict[str, Any]:
    current = {c.channel: c for c in session.scalars(select(Consent).where(Consent.lead_id == lead_id))}
    history = session.scalars(
        select(ConsentChange).where(ConsentChange.lead_id == lead_id).order_by(ConsentChange.id)
    ).all()
    return {
        channel: {
            "status": current[channel].status if channel in current else None,
            "source": current[channel].source if channel in current else None,
            "changed_at": current[channel].changed_at if channel in current else None,
            "history": [
                {"status": h.status, "source": h.source, "at": h.changed_at}
                for h in history
                if h.channel == channel
            ],
        }
        for channel in CHANNELS
    }
