"""Identity merge rules: an anonymous visitor's history joins the lead they turn out to be, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from leadflow.intake.identity import fill_blank_properties, identify, identify_visitor
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.intake.tracking.attribution import first_and_last_touch
from leadflow.leads.views import find_lead
from leadflow.platform.store import Database
from leadflow.platform.store.models import Event, Identity, Lead, LeadMerge, Outbox
from leadflow.scoring.score import EventFact

ADA = "ada@acme-robotics.test"


def browse(db: Database, anonymous_id: str, *paths: str) -> int:
    """Page views by an anonymous visitor; returns the (anonymous) lead they were stored on."""
    events = [
        EventIn(
            id=f"{anonymous_id}-{path}",
            type="page_viewed",
            anonymous_id=anonymous_id,
            properties={"url": path},
        )
        for path in paths
    ]
    return ingest_events(db, events).lead_ids[0]


def events_of(db: Database, lead_id: int) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(Event.key).where(Event.lead_id == lead_id).order_by(Event.id)))


def outbox_of(db: Database, lead_id: int) -> list[str]:
    with db.read() as session:
        return list(
            session.scalars(
                select(Event.key).join(Outbox, Outbox.event_id == Event.id).where(Outbox.lead_id == lead_id)
            )
        )


def counts(db: Database) -> tuple[int, int, int, int]:
    with db.read() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model))
            for model in (Lead, Event, Outbox, LeadMerge)
        )


def test_two_browsers_of_one_person_end_on_one_lead(db: Database) -> None:
    laptop = browse(db, "laptop-cookie", "/blog/scoring", "/pricing")
    with db.transaction() as session:
        first = identify(session, "laptop-cookie", ADA)
    # The laptop's anonymous lead simply becomes Ada: nothing moves.
    assert (first.lead_id, first.outcome) == (laptop, "identified")

    phone = browse(db, "phone-cookie", "/events/webinar")
    assert phone != laptop
    with db.transaction() as session:
        second = identify(session, "phone-cookie", ADA)
    assert (second.lead_id, second.outcome, second.merged_lead_id, second.events_moved) == (
        laptop,
        "merged",
        phone,
        1,
    )
    assert events_of(db, laptop) == [
        "laptop-cookie-/blog/scoring",
        "laptop-cookie-/pricing",
        f"identified:laptop-cookie:{laptop}",
        "phone-cookie-/events/webinar",
        f"identified:phone-cookie:{laptop}",
    ]
    # The moved event is routed to the survivor (it rescores); the tombstone's workflow is told to stop.
    assert "phone-cookie-/events/webinar" in outbox_of(db, laptop)
    assert outbox_of(db, phone) == [f"merged:{phone}"]
    with db.read() as session:
        tombstone = session.get_one(Lead, phone)
        assert tombstone.merged_into_id == laptop and tombstone.email is None
        assert set(session.scalars(select(Identity.anonymous_id).where(Identity.lead_id == laptop))) == {
            "laptop-cookie",
            "phone-cookie",
        }
        assert find_lead(session, "phone-cookie").id == laptop  # type: ignore[union-attr]
        assert find_lead(session, str(phone)).id == laptop  # type: ignore[union-attr]

    # Identify again (a resent beacon, a second form): nothing changes, nothing is routed twice.
    before = counts(db)
    with db.transaction() as session:
        again = identify(session, "phone-cookie", ADA)
    assert (again.lead_id, again.outcome) == (laptop, "unchanged")
    assert counts(db) == before

    # Later events of the phone go straight to Ada.
    browse(db, "phone-cookie", "/pricing")
    assert events_of(db, laptop)[-1] == "phone-cookie-/pricing"


def test_an_email_seen_before_any_anonymous_id_absorbs_the_visitor(db: Database) -> None:
    ingest_events(db, [EventIn(id="import-1", type="ebook_downloaded", email=ADA)])
    ada = find_ada(db)
    visitor = browse(db, "cookie-1", "/", "/pricing")
    identified = identify_visitor(db, "cookie-1", ADA, {"first_name": "Ada"})
    assert (identified.lead_id, identified.outcome, identified.events_moved) == (ada, "merged", 2)
    assert events_of(db, ada)[:3] == ["import-1", "cookie-1-/", "cookie-1-/pricing"]
    assert events_of(db, visitor) == [f"merged:{visitor}"]
    with db.read() as session:
        assert session.get_one(Lead, ada).properties == {"first_name": "Ada"}
        [merge] = session.scalars(select(LeadMerge)).all()
        assert (merge.merged_lead_id, merge.into_lead_id, merge.anonymous_id, merge.events_moved) == (
            visitor,
            ada,
            "cookie-1",
            2,
        )


def test_an_anonymous_id_identified_before_it_sent_anything_links_to_the_lead(db: Database) -> None:
    upsert_lead(db, LeadIn(email=ADA))
    identified = identify_visitor(db, "fresh-cookie", ADA, {})
    assert identified.outcome == "linked"
    browse(db, "fresh-cookie", "/pricing")
    assert events_of(db, identified.lead_id)[-1] == "fresh-cookie-/pricing"
    assert counts(db)[0] == 1  # no anonymous lead was ever created


def test_a_shared_computer_never_merges_two_known_people(db: Database) -> None:
    browse(db, "shared", "/blog/one")
    alice = identify_visitor(db, "shared", "alice@initech.test", {}).lead_id
    bob = identify_visitor(db, "shared", "bob@initech.test", {})
    assert bob.outcome == "relinked" and bob.lead_id != alice
    browse(db, "shared", "/pricing")
    assert "shared-/blog/one" in events_of(db, alice)
    assert "shared-/pricing" in events_of(db, bob.lead_id)
    assert "shared-/pricing" not in events_of(db, alice)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(LeadMerge)) == 0


def test_events_sent_for_a_merged_lead_id_land_on_the_survivor(db: Database) -> None:
    upsert_lead(db, LeadIn(email=ADA))
    visitor = browse(db, "cookie-2", "/")
    ada = identify_visitor(db, "cookie-2", ADA, {}).lead_id
    result = ingest_events(db, [EventIn(id="late", type="page_viewed", lead_id=visitor)])
    assert result.lead_ids == [ada]
    assert "late" in events_of(db, ada)


def test_a_public_identify_fills_blanks_and_never_overwrites(db: Database) -> None:
    lead = upsert_lead(db, LeadIn(email=ADA, properties={"first_name": "Ada", "company": ""}))[0]
    with db.transaction() as session:
        fill_blank_properties(
            session, lead.id, {"first_name": "Mallory", "company": "Acme", "job_title": "CTO"}
        )
    with db.read() as session:
        assert session.get_one(Lead, lead.id).properties == {
            "first_name": "Ada",
            "company": "Acme",
            "job_title": "CTO",
        }


def find_ada(db: Database) -> int:
    with db.read() as session:
        lead = find_lead(session, ADA)
        assert lead is not None
        return lead.id


def test_first_and_last_touch_come_from_utm_or_an_outside_referrer() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)

    def view(minute: int, **properties: str) -> EventFact:
        return EventFact(minute, "page_viewed", start + timedelta(minutes=minute), properties)

    events = [
        view(3, url="https://acme.test/pricing", referrer="https://acme.test/"),  # internal: not a touch
        view(1, url="https://acme.test/?utm_source=newsletter", utm_source="newsletter", utm_medium="email"),
        view(2, url="https://acme.test/"),  # direct: not a touch
        view(9, url="https://acme.test/blog", referrer="https://www.google.com/search?q=lead+scoring"),
    ]
    first, last = first_and_last_touch(events)
    assert first is not None and last is not None
    assert (first["source"], first["medium"], first["landing_page"]) == (
        "newsletter",
        "email",
        "https://acme.test/?utm_source=newsletter",
    )
    assert (last["source"], last["referrer"]) == (
        "www.google.com",
        "https://www.google.com/search?q=lead+scoring",
    )
    assert first_and_last_touch([view(2, url="https://acme.test/")]) == (None, None)
