"""What a first `leadflow dev` start stores: the well-known development API key and two demo leads."""

from __future__ import annotations

from sqlalchemy import func, select

from leadflow.http.apikeys import KeyRefused, create_key
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Lead

DEV_KEY_NAME, DEV_KEY = "dev", "dev-key"  # what the README's curl examples and the dashboard link use


def seed_dev_key(runtime: Runtime) -> None:
    """On a first start, store the well-known development key (hashed, like any other). Revoked or not, it
    is never made again: `leadflow keys revoke dev` holds."""
    try:
        create_key(runtime.db, runtime.settings.resolved_secret_key, DEV_KEY_NAME, DEV_KEY)
    except KeyRefused:
        pass  # made on an earlier start


def seed_demo(runtime: Runtime) -> bool:
    """On a first start, two demo leads: one downloads the ebook, one becomes sales-qualified."""
    with runtime.db.read() as session:
        if session.scalar(select(func.count(Lead.id))):
            return False
    upsert_lead(
        runtime.db,
        LeadIn(
            email="ada@acme-robotics.test",
            properties={
                "first_name": "Ada",
                "last_name": "Lovelace",
                "company": "Acme Robotics",
                "job_title": "Head of Growth",
            },
        ),
    )
    upsert_lead(
        runtime.db,
        LeadIn(
            email="grace@globex.test",
            properties={
                "first_name": "Grace",
                "last_name": "Hopper",
                "company": "Globex",
                "job_title": "VP Engineering",
                "company_size": 400,
                "industry": "software",
            },
        ),
    )
    ingest_events(
        runtime.db,
        [
            EventIn(
                id="demo-1",
                type="ebook_downloaded",
                email="ada@acme-robotics.test",
                properties={"title": "The Nurture Playbook"},
            ),
            EventIn(
                id="demo-2", type="page_viewed", email="grace@globex.test", properties={"url": "/pricing"}
            ),
            EventIn(
                id="demo-3",
                type="demo_requested",
                email="grace@globex.test",
                properties={"form": "contact-sales"},
            ),
        ],
    )
    return True
