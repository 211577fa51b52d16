"""Erase on request (GDPR): `DELETE /v1/leads/{id}` removes the person and stops their workflows; only a hash
of each address stays (keyed), so they are never messaged again."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from temporalio.client import WorkflowExecutionStatus

from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.messaging.consent import address_hash, lift_opt_out, suppress, suppression_of
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Base, Enrollment, Suppression
from tests.support.helpers import Stack, eventually

EMAIL, PHONE = "eve@initech.test", "+14155550177"
PERSONAL_TABLES = [
    "leads",
    "events",
    "messages",
    "score_snapshots",
    "stage_changes",
    "enrollments",
    "segment_memberships",
    "identities",
    "consents",
    "consent_changes",
    "push_subscriptions",
    "outbox",
    "handoffs",
]


async def test_an_erased_lead_leaves_only_hashed_suppressions_and_no_running_workflow(stack: Stack) -> None:
    runtime, settings = stack.runtime, stack.runtime.settings
    upsert_lead(runtime.db, LeadIn(email=EMAIL, phone=PHONE, properties={"first_name": "Evangeline"}))
    ingest_events(
        runtime.db,
        [
            EventIn(id="eve-1", type="ebook_downloaded", email=EMAIL),
            EventIn(
                id="eve-2", type="page_viewed", anonymous_id="cookie-eve", properties={"url": "/pricing"}
            ),
        ],
    )
    stack.router.wake()
    await eventually(lambda: stack.inbox.to(EMAIL), message="the ebook email never arrived")
    workflow_id = await eventually(lambda: _enrollment(stack))
    assert all(_count(stack, table) for table in ("events", "messages", "score_snapshots", "enrollments"))

    response = await stack.api.delete(f"/v1/leads/{EMAIL}")
    assert response.status_code == 200, response.text
    assert response.json() == {"erased": 1, "addresses_suppressed": 2, "workflows_cancelled": 2}

    for table in PERSONAL_TABLES:
        assert _count(stack, table, lead_id=1) == 0, table
    with runtime.db.read() as session:
        suppressions = session.scalars(select(Suppression)).all()
    assert {(s.channel, s.address_hash, s.reason) for s in suppressions} == {
        ("email", address_hash(settings.resolved_secret_key, "email", EMAIL), "erased"),
        ("sms", address_hash(settings.resolved_secret_key, "sms", PHONE), "erased"),
    }
    assert _anywhere(stack, EMAIL) == _anywhere(stack, "Evangeline") == _anywhere(stack, PHONE) == []
    for erased in (settings.lead_workflow_id(1), workflow_id):
        handle = stack.client.get_workflow_handle(erased)

        async def cancelled() -> bool:
            return (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED  # noqa: B023

        await eventually(cancelled, message=f"{erased} still runs")
    assert (await stack.api.get(f"/v1/leads/{EMAIL}")).status_code == 404
    assert (await stack.api.delete(f"/v1/leads/{EMAIL}")).status_code == 404

    # The same person comes back through a form: a new lead, enrolled again, but never emailed.
    upsert_lead(runtime.db, LeadIn(email=EMAIL, properties={"first_name": "Evangeline"}))
    ingest_events(runtime.db, [EventIn(id="e3", type="ebook_downloaded", email=EMAIL)])
    stack.router.wake()
    second = await eventually(lambda: _finished(stack), message="the new enrollment did not end")
    assert (second.status, second.exit_reason) == ("exited", "opted out")
    assert stack.inbox.to(EMAIL)[1:] == []


def test_suppression_hashes_are_keyed_and_the_plain_hashes_of_before_still_hold(runtime: Runtime) -> None:
    """Whoever has the store but not LEADFLOW_SECRET_KEY cannot test an address against the list; a refusal's
    text is kept without the address; rows hashed plainly before the change still suppress, and are re-keyed
    when their address is suppressed again (the addresses themselves are gone: no migration can)."""
    now, key = datetime(2025, 3, 1, tzinfo=UTC), runtime.settings.resolved_secret_key
    plain_phone = hashlib.sha256(PHONE.encode()).hexdigest()
    with runtime.db.transaction() as session:
        suppress(session, "email", EMAIL.upper(), "bounce", f"550 5.1.1 <{EMAIL}>: no such user", now)
        session.add(Suppression(channel="sms", address_hash=plain_phone, reason="opt_out", created_at=now))
    with runtime.db.read() as session:
        email, phone = session.scalars(select(Suppression).order_by(Suppression.channel)).all()
        assert email.address_hash == address_hash(key, "email", EMAIL)
        assert email.address_hash != hashlib.sha256(EMAIL.encode()).hexdigest()
        assert EMAIL not in (email.detail or "") and "no such user" in (email.detail or "")
        assert suppression_of(session, "sms", PHONE) == phone
    with runtime.db.transaction() as session:
        suppress(session, "sms", PHONE, "invalid_number", None, now)
    with runtime.db.read() as session:
        assert session.scalars(
            select(Suppression.address_hash).where(Suppression.channel == "sms")
        ).all() == [address_hash(key, "sms", PHONE)]
    with runtime.db.transaction() as session:
        session.add(Suppression(channel="sms", address_hash=plain_phone, reason="opt_out", created_at=now))
        session.execute(Suppression.__table__.delete().where(Suppression.reason == "invalid_number"))
        lift_opt_out(session, "sms", PHONE)
    with runtime.db.read() as session:
        assert suppression_of(session, "sms", PHONE) is None


def _enrollment(stack: Stack) -> str | None:
    with stack.runtime.db.read() as session:
        return session.scalars(select(Enrollment.workflow_id)).first()


def _finished(stack: Stack) -> Enrollment | None:
    with stack.runtime.db.read() as session:
        return session.scalars(select(Enrollment).where(Enrollment.finished_at.is_not(None))).first()


def _count(stack: Stack, table: str, lead_id: int | None = None) -> int:
    model = Base.metadata.tables[table]
    query = select(func.count()).select_from(model)
    if lead_id is not None:
        column = model.c.get("lead_id") if table != "leads" else model.c.id
        assert column is not None, table
        query = query.where(column == lead_id)
    with stack.runtime.db.read() as session:
        return int(session.scalar(query) or 0)


def _anywhere(stack: Stack, needle: str) -> list[str]:
    """Tables where `needle` still appears in any text or JSON column."""
    found = []
    with stack.runtime.db.read() as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(text(f"SELECT * FROM {table.name}")).all()
            if any(needle.lower() in str(value).lower() for row in rows for value in row):
                found.append(table.name)
    return found
