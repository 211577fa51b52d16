"""Dead letters: outbox rows that can never be delivered to their lead's workflow (the event cannot be encoded
for Temporal: a payload an older version accepted), set aside so that every other event keeps flowing.

Only what can never succeed is set aside; while Temporal is unreachable every row waits in the outbox. A dead
letter keeps the outbox's columns (lead, event, when) and the error, nothing of the event itself (that stays
in the events table). `leadflow outbox dead-letters` lists them, retries them (back into the outbox, behind
what waits there now) or drops them (the event stays stored but never reaches the workflow).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select

from leadflow.platform import clock
from leadflow.platform.store import Database
from leadflow.platform.store.models import DeadLetter, Event, Outbox

MAX_ERROR = 1000  # characters of the error kept


@dataclass(frozen=True)
class SetAside:
    outbox_id: int
    error: str


@dataclass(frozen=True)
class DeadLetterRow:
    id: int
    lead_id: int
    event_id: int
    event_type: str | None  # None once the lead (and so the event) was erased
    created_at: datetime
    set_aside_at: datetime
    error: str


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR]


def set_aside(db: Database, rows: Iterable[SetAside]) -> None:
    """Move these outbox rows to the dead letters, with their errors, in one transaction."""
    errors = {row.outbox_id: row.error for row in rows}
    if not errors:
        return
    now = clock.now()
    with db.transaction() as session:
        waiting = session.execute(select(Outbox).where(Outbox.id.in_(errors))).scalars().all()
        if waiting:
            session.execute(
                insert(DeadLetter),
                [
                    {
                        "lead_id": row.lead_id,
                        "event_id": row.event_id,
                        "created_at": row.created_at,
                        "set_aside_at": now,
                        "error": errors[row.id],
                    }
                    for row in waiting
                ],
            )
            session.execute(delete(Outbox).where(Outbox.id.in_([row.id for row in waiting])))


def dead_letter_count(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count(DeadLetter.id))) or 0


def dead_letters(db: Database) -> list[DeadLetterRow]:
    with db.read() as session:
        rows = session.execute(
            select(DeadLetter, Event.type)
            .outerjoin(Event, Event.id == DeadLetter.event_id)
            .order_by(DeadLetter.id)
        ).all()
    return [
        DeadLetterRow(
            letter.id,
            letter.lead_id,
            letter.event_id,
            event_type,
            letter.created_at,
            letter.set_aside_at,
            letter.error,
        )
        for letter, event_type in rows
    ]


def retry(db: Database, ids: list[int] | None) -> int:
    """Put these dead letters (all when `ids` is None) back into the outbox; returns how many went back.
    One whose event is gone (its lead was erased) is dropped instead."""
    with db.transaction() as session:
        chosen = select(DeadLetter).order_by(DeadLetter.id)
        letters = session.scalars(chosen if ids is None else chosen.where(DeadLetter.id.in_(ids))).all()
        existing = set(
            session.scalars(select(Event.id).where(Event.id.in_([letter.event_id for letter in letters])))
        )
        back = [letter for letter in letters if letter.event_id in existing]
        if back:
            now = clock.now()
            session.execute(
                insert(Outbox),
                [
                    {"lead_id": letter.lead_id, "event_id": letter.event_id, "created_at": now}
                    for letter in back
                ],
            )
        if letters:
            session.execute(delete(DeadLetter).where(DeadLetter.id.in_([letter.id for letter in letters])))
    return len(back)


def drop(db: Database, ids: list[int] | None) -> int:
    """Forget these dead letters (all when `ids` is None): their events stay stored, never routed."""
    with db.transaction() as session:
        dropping = delete(DeadLetter)
        result = session.execute(dropping if ids is None else dropping.where(DeadLetter.id.in_(ids)))
    return int(result.rowcount)  # type: ignore[attr-defined]
