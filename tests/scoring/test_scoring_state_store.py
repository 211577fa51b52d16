"""Incremental scoring in the store (SQLite and PostgreSQL): an assessment folds the events since the lead's
scoring state and agrees with the full recompute from all the events (`rescore_many`, what `leadflow rescore`
and `score_at` run), across model edits, identity merges, erasure and an event committed behind the cursor."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import delete, func, insert, select

from leadflow.intake.identity import identify
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform import clock
from leadflow.platform.store import Database
from leadflow.platform.store.models import Event, Lead, ScoringStateRow
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.qualification import rescore, rescore_many
from leadflow.scoring.score import ScoreResult
from leadflow.scoring.state import plan_of
from tests.scoring.test_scoring_state import agree

SCORING = yaml.safe_load(Path("scoring.yaml").read_text())
MODEL = ScoringModel.model_validate(SCORING)
EDITED = ScoringModel.model_validate(
    SCORING
    | {
        "groups": SCORING["groups"] | {"content": {"decay": {"half_life": "10d"}, "max": 25}},
        "behavior": [
            rule | {"points": 3} if rule["rule"] == "Blog post read" else rule for rule in SCORING["behavior"]
        ],
    }
)
PAGES = ["/pricing", "/blog/scoring", "/careers", "/events/summit", "/"]
TYPES = ["page_viewed"] * 4 + [
    "email_opened",
    "email_clicked",
    "form_submitted",
    "ebook_downloaded",
    "demo_requested",
]


def random_events(rng: random.Random, email: str, count: int, start: datetime, prefix: str) -> list[EventIn]:
    events = []
    for n in range(count):
        event_type = rng.choice(TYPES)
        properties: dict[str, Any] = {}
        if event_type == "page_viewed":
            properties["url"] = f"https://acme.test{rng.choice(PAGES)}"
        if event_type == "form_submitted":
            properties["form"] = rng.choice(["contact-sales", "newsletter"])
        # In any order, up to 200 days back, at times dated a little later than now (a client's clock).
        at = start + timedelta(minutes=rng.randint(-60 * 24 * 200, 60 * 20))
        events.append(
            EventIn(id=f"{prefix}-{n}", type=event_type, email=email, timestamp=at, properties=properties)
        )
    return events


def full(db: Database, lead_id: int, model: ScoringModel, now: datetime) -> ScoreResult:
    with db.transaction() as session:
        return rescore_many(session, [lead_id], model, now)[lead_id].result


def incremental(db: Database, lead_id: int, model: ScoringModel, now: datetime) -> ScoreResult:
    with db.transaction() as session:
        rescored = rescore(session, lead_id, model, now)
        assert rescored is not None
        return rescored.result


def state_of(db: Database, lead_id: int) -> tuple[str, dict[str, Any]] | None:
    with db.read() as session:
        row = session.execute(
            select(ScoringStateRow.fingerprint, ScoringStateRow.state).where(
                ScoringStateRow.lead_id == lead_id
            )
        ).first()
        return (row[0], row[1]) if row else None


@pytest.mark.parametrize("seed", range(6))
def test_assessments_agree_with_the_full_recompute_across_a_model_edit(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    email = f"reader{seed}@acme.test"
    lead, _ = upsert_lead(db, LeadIn(email=email, properties={"job_title": "VP Sales", "company_size": 300}))
    now = clock.now()
    for batch in range(8):
        model = MODEL if batch < 5 else EDITED  # content reloaded: the state is rebuilt for the new model
        ingest_events(db, random_events(rng, email, rng.randint(0, 40), clock.now(), f"{seed}-{batch}"))
        now = max(now, clock.now()) + timedelta(hours=rng.randint(0, 24 * 10), seconds=1)
        agree(incremental(db, lead.id, model, now), full(db, lead.id, model, now), model)
        stored = state_of(db, lead.id)
        assert stored is not None and stored[0] == plan_of(model).fingerprint


def test_a_merged_visitors_history_counts_on_the_survivor(db: Database) -> None:
    now = clock.now()
    known, _ = upsert_lead(db, LeadIn(email="ada@acme.test"))
    ingest_events(db, random_events(random.Random(1), "ada@acme.test", 30, now, "known"))
    views = [
        EventIn(
            id=f"anon-{n}",
            type="page_viewed",
            anonymous_id="cookie",
            properties={"url": "https://a.test/pricing"},
        )
        for n in range(3)
    ]
    anonymous = ingest_events(db, views).lead_ids[0]
    later = now + timedelta(minutes=1)
    incremental(db, known.id, MODEL, later)
    incremental(db, anonymous, MODEL, later)
    with db.transaction() as session:
        assert identify(session, "cookie", "ada@acme.test").merged_lead_id == anonymous
    assert state_of(db, known.id) is None  # rebuilt at the next assessment, with the moved events
    result = incremental(db, known.id, MODEL, later)
    agree(result, full(db, known.id, MODEL, later), MODEL)
    assert any(c.rule == "Pricing page viewed" and c.event_type for c in result.contributions)


def test_erasing_a_lead_deletes_its_scoring_state(db: Database) -> None:
    """erase_lead deletes the lead row; its state goes with it (tests/leads/test_attack_erase.py searches the
    store's bytes after a full erase)."""
    lead, _ = upsert_lead(db, LeadIn(email="gone@acme.test"))
    ingest_events(db, random_events(random.Random(2), "gone@acme.test", 10, clock.now(), "gone"))
    incremental(db, lead.id, MODEL, clock.now())
    assert state_of(db, lead.id) is not None
    with db.transaction() as session:
        session.execute(delete(Lead).where(Lead.id == lead.id))
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(ScoringStateRow)) == 0


def test_an_event_committed_behind_the_cursor_is_folded_when_asked_about(db: Database) -> None:
    """On PostgreSQL a transaction can commit an event after one with a higher id was folded."""
    lead, _ = upsert_lead(db, LeadIn(email="late@acme.test"))
    demo = EventIn(id="demo", type="demo_requested", email="late@acme.test")
    views = [EventIn(id=f"v{n}", type="page_viewed", email="late@acme.test") for n in range(3)]
    ingest_events(db, [views[0], demo, *views[1:]])
    with db.transaction() as session:
        row = session.execute(select(Event.__table__).where(Event.key == "demo")).mappings().one()
        session.execute(delete(Event).where(Event.id == row["id"]))  # not committed yet, as it were
    now = clock.now() + timedelta(seconds=1)
    assert incremental(db, lead.id, MODEL, now).behavior == 0
    with db.transaction() as session:
        session.execute(insert(Event.__table__).values(**row))
    assert incremental(db, lead.id, MODEL, now).behavior == 0  # not asked about: not seen yet
    with db.transaction() as session:
        rescored = rescore(session, lead.id, MODEL, now, asked_event_ids=[row["id"]])
        assert rescored is not None and rescored.result.behavior == 50
    agree(incremental(db, lead.id, MODEL, now), full(db, lead.id, MODEL, now), MODEL)


def test_a_model_that_cannot_be_folded_is_scored_from_all_events(db: Database) -> None:
    mixed = ScoringModel.model_validate(
        SCORING
        | {"groups": SCORING["groups"] | {"email": {"max": 10}}}
        | {
            "behavior": [
                *SCORING["behavior"],
                {"rule": "Spam", "event": "email_opened", "points": -1, "group": "email"},
            ]
        }
    )
    assert not plan_of(mixed).foldable
    lead, _ = upsert_lead(db, LeadIn(email="mixed@acme.test"))
    ingest_events(db, random_events(random.Random(3), "mixed@acme.test", 30, clock.now(), "mixed"))
    now = clock.now() + timedelta(seconds=1)
    assert incremental(db, lead.id, mixed, now) == full(db, lead.id, mixed, now)
    assert state_of(db, lead.id) is None
