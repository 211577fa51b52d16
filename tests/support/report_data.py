"""A small store with known answers for the report and dashboard tests: ten leads created in March 2025, with
stage stamps, UTM sources, a segment, one sequence's enrollments and messages, opens and clicks, hand-offs
and scores. Every number a test expects is derived from the `Seed` description below, not from a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from leadflow.content.loader import Content
from leadflow.platform.store import Database
from leadflow.platform.store.models import (
    Enrollment,
    Event,
    Handoff,
    Lead,
    Message,
    ScoreSnapshot,
    SegmentMembership,
    StageChange,
)

NOW = datetime(2025, 3, 31, 12, 0, tzinfo=UTC)
CREATED = datetime(2025, 3, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SEQUENCE = "ebook_follow_up"


@dataclass
class Seed:
    """The dataset: lead number → facts. Lead 11 was created before the period (not in the funnel cohort)."""

    # days after creation each lead reached a stage (a lead may skip one: lead 7 goes straight to SQL)
    stages: dict[int, dict[str, float]] = field(
        default_factory=lambda: {
            1: {"mql": 1, "sql": 2, "opportunity": 3},
            2: {"mql": 2, "sql": 4},
            3: {"mql": 3, "sql": 7, "recycled": 9},
            4: {"mql": 4},
            5: {"mql": 5},
            6: {"mql": 6},
            7: {"sql": 10},
            11: {"mql": 40},
        }
    )
    utm_source: dict[int, str] = field(
        default_factory=lambda: {n: ("google" if n <= 5 else "newsletter") for n in range(1, 11)}
    )
    segment: tuple[int, ...] = (1, 2, 3, 4)
    # lead → (current step, status, exit reason)
    enrollments: dict[int, tuple[int, str, str | None]] = field(
        default_factory=lambda: {
            1: (2, "converted", "goal webinar_registered reached"),
            2: (2, "exited", "handed to sales"),
            3: (2, "running", None),
            4: (0, "exited", "opted out"),
        }
    )
    # (lead, step) → message status
    messages: dict[tuple[int, int], str] = field(
        default_factory=lambda: {
            (1, 0): "sent",
            (2, 0): "sent",
            (3, 0): "sent",
            (4, 0): "sent",
            (1, 2): "sent",
            (2, 2): "sent",
            (3, 2): "failed",
        }
    )
    opened: tuple[tuple[int, int], ...] = ((1, 0), (1, 0), (2, 0))  # lead 1 opened twice: counted once
    clicked: tuple[tuple[int, int], ...] = ((1, 0),)
    # lead → (salesperson, seconds from SQL to the notification, or None)
    handoffs: dict[int, tuple[str, float | None]] = field(
        default_factory=lambda: {
            1: ("alice@sales.test", 30),
            2: ("bob@sales.test", 90),
            3: ("alice@sales.test", 60),
            7: ("bob@sales.test", None),
        }
    )
    # lead → (score, grade, temperature)
    scores: dict[int, tuple[int, str, str]] = field(
        default_factory=lambda: {
            1: (95, "A", "hot"),
            2: (85, "B", "hot"),
            3: (72, "B", "warm"),
            4: (45, "C", "warm"),
            5: (41, "C", "cold"),
            6: (40, "D", "cold"),
            7: (88, "A", "hot"),
            8: (5, "D", "cold"),
            9: (-3, "D", "cold"),
            10: (0, "D", "cold"),
            11: (44, "C", "cold"),
        }
    )

    def created(self, number: int) -> datetime:
        return CREATED - timedelta(days=30) if number == 11 else CREATED

    def reached(self, number: int, stage: str) -> datetime | None:
        days = self.stages.get(number, {}).get(stage)
        return None if days is None else self.created(number) + days * DAY


def workflow_id(lead_id: int) -> str:
    return f"sequence-{SEQUENCE}-lead-{lead_id}"


def seed(db: Database, content: Content, data: Seed | None = None) -> Seed:
    data = data or Seed()
    definition = content.sequences[SEQUENCE].model_dump(mode="json")
    with db.transaction() as session:
        leads = {}
        for number in range(1, 12):
            score, grade, temperature = data.scores[number]
            lead = Lead(
                email=f"lead{number}@example.test",
                properties={
                    "first_name": f"Lead{number}",
                    "utm_source": data.utm_source.get(number, "direct"),
                },
                stage="lead",
                score=score,
                grade=grade,
                temperature=temperature,
                owner=data.handoffs[number][0] if number in data.handoffs else None,
                created_at=data.created(number),
                updated_at=data.created(number),
                last_activity_at=NOW - timedelta(hours=number),
            )
            session.add(lead)
            session.flush()
            leads[number] = lead
            stage = "lead"
            for to_stage, days in sorted(data.stages.get(number, {}).items(), key=lambda item: item[1]):
                session.add(
                    StageChange(
                        lead_id=lead.id,
                        from_stage=stage,
                        to_stage=to_stage,
                        changed_at=data.created(number) + days * DAY,
                        reason="seeded",
                        score=score,
                    )
                )
                stage = to_stage
            lead.stage = stage
            for hours, points in ((48, score // 2), (24, score - 10), (1, score)):
                session.add(
                    ScoreSnapshot(
                        lead_id=lead.id,
                        computed_at=NOW - timedelta(hours=hours),
                        score=points,
                        fit=points // 2,
                        behavior=points - points // 2,
                        breakdown=[{"rule": "Seeded fit", "points": points // 2}],
                        model_version="seed",
                        grade=grade,
                        temperature=temperature,
                    )
                )
        session.flush()
        for number in data.segment:
            session.add(
                SegmentMembership(
                    lead_id=leads[number].id, segment_id="ebook_downloaders", entered_at=CREATED
                )
            )
        for number, (step, status, reason) in data.enrollments.items():
            session.add(
                Enrollment(
                    workflow_id=workflow_id(leads[number].id),
                    lead_id=leads[number].id,
                    sequence_id=SEQUENCE,
                    sequence_version="seed",
                    definition=definition,
                    status=status,
                    exit_reason=reason,
                    current_step=step,
                    started_at=CREATED + timedelta(hours=1),
                    finished_at=None if status == "running" else CREATED + 5 * DAY,
                )
            )
        messages = {}
        for (number, step), status in data.messages.items():
            message = Message(
                idempotency_key=f"{workflow_id(leads[number].id)}:step-{step}",
                lead_id=leads[number].id,
                channel="email",
                template="ebook_delivery",
                recipient=leads[number].email,
                subject="Your ebook",
                status=status,
                created_at=CREATED + timedelta(hours=2),
                sent_at=CREATED + timedelta(hours=2) if status == "sent" else None,
            )
            session.add(message)
            session.flush()
            messages[number, step] = message
        for kind, pairs in (("email_opened", data.opened), ("email_clicked", data.clicked)):
            for index, pair in enumerate(pairs):
                message = messages[pair]
                session.add(
                    Event(
                        key=f"{kind}-{index}",
                        lead_id=message.lead_id,
                        type=kind,
                        occurred_at=CREATED + timedelta(hours=3),
                        received_at=CREATED + timedelta(hours=3),
                        properties={"message_id": message.id, "template": message.template},
                    )
                )
        for number, (person, notified_after) in data.handoffs.items():
            promoted = session.scalars(
                text("SELECT id FROM stage_changes WHERE lead_id = :lead AND to_stage = 'sql'").bindparams(
                    lead=leads[number].id
                )
            ).one()
            assigned = data.reached(number, "sql")
            assert assigned is not None
            session.add(
                Handoff(
                    stage_change_id=promoted,
                    lead_id=leads[number].id,
                    salesperson=person,
                    rule="seeded",
                    status="assigned",
                    assigned_at=assigned,
                    notified_at=None
                    if notified_after is None
                    else assigned + timedelta(seconds=notified_after),
                )
            )
    return data


def lead_ids(db: Database) -> dict[str, int]:
    with db.read() as session:
        return {email: lead_id for lead_id, email in session.execute(text("SELECT id, email FROM leads"))}
