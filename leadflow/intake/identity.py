"""Identity merge: an anonymous visitor (a browser's cookie id) becomes a known lead.

The rules, applied in one transaction when a visitor identifies with an email (`identify`):

1. The anonymous id is new: it is linked to the email's lead (created if the email is new too).
2. The anonymous id belongs to an anonymous lead and the email is new: that lead simply gets the email.
   Nothing moves; its workflow carries on.
3. The anonymous id belongs to an anonymous lead and the email already has a lead (seen before any anonymous
   id, or identified in another browser): the anonymous lead is **merged into** the email's lead, the
   survivor. Its events and anonymous ids move to the survivor; its outbox rows are replaced by outbox rows
   for the survivor (the survivor's workflow receives every moved event as new, rescores, enters segments
   and lets running sequences see goals); its properties fill the survivor's blanks; it becomes a tombstone
   (`merged_into_id`) with a `lead_merges` record; and a `lead_merged` event is routed to its own workflow,
   which then exits its sequences and ends. Events that arrive later for the tombstone (an old lead id, a
   race with the merge) are stored on the survivor (see `ingest.surviving_leads`).
4. The anonymous id belongs to a lead with another email (a shared computer): two known people are never
   merged automatically. The anonymous id is re-linked to the email's lead; earlier events stay where they
   are, later ones go to the new lead.
5. The anonymous id already belongs to the email's lead: nothing changes (identify is idempotent).

Every identify that links or merges records an `identified` event on the surviving lead, keyed by
(anonymous id, lead) so a repeat is ignored; it is routed like any event, so the lead is rescored with the
properties the identify brought.

Those rules apply to identifies that are proof: a server-side `POST /v1/identify` (a secret API key), and a
browser that opened a signed link from an email to the lead (`prove`). The snippet's identify, sent with the
public site key, is only a **claim** (`claim`): anybody can type anybody's address into a form.

- A claim of a **new address** creates its lead from the form (how leads arrive) by the rules above, unless
  the site requires double opt-in: then nothing is linked until the site's backend confirms the address
  and calls `POST /v1/identify`.
- A claim of an address **a lead already has** links nothing, merges nothing and writes nothing on that
  lead (no blank filled). The browser keeps (or, if it belonged to another known lead, gets a fresh)
  anonymous lead of its own, which records an `identify_claimed` event; its events count for the claimed
  lead only once it proves itself, and then they all move there by rule 3.
- A browser already linked to the address's lead is that lead's: its claims fill blanks (never overwrite).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadflow.intake.ingest import (
    account_domain,
    account_ids_by_email,
    lead_ids_by_email,
    leads_by_anonymous_id,
    new_anonymous_lead,
)
from leadflow.messaging.consent import record_consent
from leadflow.platform import clock
from leadflow.platform.store import Database
from leadflow.platform.store.models import (
    Consent,
    Event,
    Identity,
    Lead,
    LeadMerge,
    Outbox,
    PushSubscription,
    ScoringStateRow,
)
from leadflow.platform.store.upsert import insert_ignoring_conflicts

Outcome = Literal["linked", "identified", "merged", "relinked", "unchanged", "claimed"]


@dataclass(frozen=True)
class Identified:
    lead_id: int  # the lead the anonymous id belongs to from now on
    outcome: Outcome
    merged_lead_id: int | None = None
    events_moved: int = 0


def identify(session: Session, anonymous_id: str, email: str) -> Identified:
    """Attach `anonymous_id` to the lead of `email` following the rules above (inside the caller's
    transaction). Properties are the caller's business: see `fill_blank_properties`."""
    linked = session.scalars(
        select(Lead).join(Identity, Identity.lead_id == Lead.id).where(Identity.anonymous_id == anonymous_id)
    ).first()
    if linked is not None and linked.email == email:
        return Identified(linked.id, "unchanged")
    if linked is None:
        result = Identified(_lead_id_of(session, email), "linked")
        insert_ignoring_conflicts(
            session,
            Identity,
            [{"anonymous_id": anonymous_id, "lead_id": result.lead_id, "created_at": clock.now()}],
            ["anonymous_id"],
        )
    elif linked.email is not None:
        result = Identified(_lead_id_of(session, email), "relinked")
        session.execute(
            update(Identity).where(Identity.anonymous_id == anonymous_id).values(lead_id=result.lead_id)
        )
    else:
        result = _give_email(session, linked.id, email) or _merge(
            session, linked.id, _lead_id_of(session, email), anonymous_id
        )
    _record_identified(session, anonymous_id, result)
    return result


def identify_visitor(db: Database, anonymous_id: str, email: str, properties: dict[str, Any]) -> Identified:
    """A server-side identify (a trusted caller): the given properties overwrite the lead's."""
    with db.transaction() as session:
        identified = identify(session, anonymous_id, email)
        if properties:
            lead = session.get_one(Lead, identified.lead_id)
            lead.properties = {**lead.properties, **properties}
            lead.updated_at = clock.now()
        return identified


def claim(
    session: Session, anonymous_id: str, email: str, properties: dict[str, Any], *, new_addresses: bool = True
) -> Identified:
    """A public identify (the snippet's): believed for a new address (unless `new_addresses` is False, a site
    with double opt-in), only recorded for an address a lead already has. See the rules above."""
    linked = session.scalars(
        select(Lead).join(Identity, Identity.lead_id == Lead.id).where(Identity.anonymous_id == anonymous_id)
    ).first()
    if linked is not None and linked.email == email:
        fill_blank_properties(session, linked.id, properties)
        return Identified(linked.id, "unchanged")
    claimed = session.scalars(select(Lead.id).where(Lead.email == email)).first()
    if claimed is None and new_addresses:
        identified = identify(session, anonymous_id, email)
        fill_blank_properties(session, identified.lead_id, properties)
        return identified
    if linked is None:
        own = leads_by_anonymous_id(session, {anonymous_id})[anonymous_id]
    elif linked.email is None:
        own = linked.id
    else:  # the browser of another known person: it is not theirs either, as far as we know
        own = new_anonymous_lead(session)
        session.execute(update(Identity).where(Identity.anonymous_id == anonymous_id).values(lead_id=own))
    # Keyed without the address (event keys reach workflow histories): one record per claimed lead.
    _record_event(
        session,
        own,
        f"identified:{anonymous_id}:claimed:{claimed or 'new'}",
        "identify_claimed",
        {"anonymous_id": anonymous_id, "lead_id": claimed, "proven": False},
    )
    return Identified(own, "claimed")


def prove(session: Session, anonymous_id: str, lead_id: int) -> Identified | None:
    """The browser opened a signed link from an email to `lead_id`: it is that lead's (as a trusted identify).
    None when the lead has no address any more (erased)."""
    email = session.scalars(select(Lead.email).where(Lead.id == lead_id)).first()
    return identify(session, anonymous_id, email) if email else None


def fill_blank_properties(session: Session, lead_id: int, properties: dict[str, Any]) -> None:
    """Set the properties the lead does not have yet; never overwrite (a public form is not the lead's word)."""
    lead = session.get_one(Lead, lead_id)
    blanks = {name: value for name, value in properties.items() if lead.properties.get(name) in (None, "")}
    if blanks:
        lead.properties = {**lead.properties, **blanks}
        lead.updated_at = clock.now()


def _lead_id_of(session: Session, email: str) -> int:
    return lead_ids_by_email(session, {email: {}})[email][0]


def _give_email(session: Session, lead_id: int, email: str) -> Identified | None:
    """Rule 2: the anonymous lead becomes the email's lead, unless the email has a lead (then None)."""
    if session.scalars(select(Lead.id).where(Lead.email == email)).first() is not None:
        return None
    lead = session.scalars(select(Lead).where(Lead.id == lead_id).with_for_update()).one()
    try:
        with session.begin_nested():  # another request may create the email's lead this very moment
            lead.email = email
            lead.account_id = account_ids_by_email(
                session, {email: account_domain(email, lead.properties)}
            ).get(email, lead.account_id)
            lead.updated_at = clock.now()
            session.flush()
    except IntegrityError:
        session.refresh(lead)
        return None
    return Identified(lead.id, "identified")


def _merge(session: Session, merged_id: int, survivor_id: int, anonymous_id: str) -> Identified:
    """Rule 3: move everything of the anonymous lead `merged_id` to `survivor_id` and tombstone it."""
    now = clock.now()
    # Lock both rows in id order (as ingest does) so concurrent merges and ingests cannot deadlock.
    leads = {
        lead.id: lead
        for lead in session.scalars(
            select(Lead).where(Lead.id.in_([merged_id, survivor_id])).order_by(Lead.id).with_for_update()
        )
    }
    merged, survivor = leads[merged_id], leads[survivor_id]
    moved = list(
        session.scalars(
            select(Event.id).where(Event.lead_id == merged_id).order_by(Event.occurred_at, Event.id)
        )
    )
    session.execute(update(Event).where(Event.lead_id == merged_id).values(lead_id=survivor_id))
    # The survivor's scoring state has not seen the moved events (their ids are behind its cursor): its
    # next assessment rebuilds it from all of its events, once.
    session.execute(delete(ScoringStateRow).where(ScoringStateRow.lead_id.in_([merged_id, survivor_id])))
    session.execute(update(Identity).where(Identity.lead_id == merged_id).values(lead_id=survivor_id))
    session.execute(delete(Outbox).where(Outbox.lead_id == merged_id))
    _carry_consent(session, merged_id, survivor)
    _route(session, survivor_id, moved)
    survivor.properties = {**merged.properties, **survivor.properties}
    survivor.updated_at = merged.updated_at = now
    merged.merged_into_id = survivor_id
    session.add(
        LeadMerge(
            merged_lead_id=merged_id,
            into_lead_id=survivor_id,
            anonymous_id=anonymous_id,
            events_moved=len(moved),
            merged_at=now,
        )
    )
    _record_event(
        session, merged_id, f"merged:{merged_id}", "lead_merged", {"into_lead_id": survivor_id}
    )  # tells the tombstone's workflow to stop
    return Identified(survivor_id, "merged", merged_lead_id=merged_id, events_moved=len(moved))


def _carry_consent(session: Session, merged_id: int, survivor: Lead) -> None:
    """The anonymous lead's browser push subscriptions and its consent (given on the site before the
    visitor was known) become the survivor's; a later decision of the survivor's own stays current."""
    session.execute(
        update(PushSubscription).where(PushSubscription.lead_id == merged_id).values(lead_id=survivor.id)
    )
    for consent in session.scalars(select(Consent).where(Consent.lead_id == merged_id)).all():
        record_consent(session, survivor, consent.channel, consent.status, consent.source, consent.changed_at)


def _record_identified(session: Session, anonymous_id: str, result: Identified) -> None:
    properties: dict[str, Any] = {"anonymous_id": anonymous_id, "outcome": result.outcome}
    if result.merged_lead_id is not None:
        properties |= {"merged_lead_id": result.merged_lead_id, "events_moved": result.events_moved}
    _record_event(
        session, result.lead_id, f"identified:{anonymous_id}:{result.lead_id}", "identified", properties
    )


def _record_event(
    session: Session, lead_id: int, key: str, event_type: str, properties: dict[str, Any]
) -> None:
    now = clock.now()
    inserted = insert_ignoring_conflicts(
        session,
        Event,
        [
            {
                "key": key,
                "lead_id": lead_id,
                "type": event_type,
                "occurred_at": now,
                "received_at": now,
                "properties": properties,
            }
        ],
        ["key"],
        returning=(Event.id,),
    )
    _route(session, lead_id, [event_id for (event_id,) in inserted])


def _route(session: Session, lead_id: int, event_ids: list[int]) -> None:
    if event_ids:
        now = clock.now()
        session.execute(
            insert(Outbox),
            [{"lead_id": lead_id, "event_id": event_id, "created_at": now} for event_id in event_ids],
        )
