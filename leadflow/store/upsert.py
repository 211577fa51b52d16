"""INSERT … ON CONFLICT DO NOTHING for the two dialects we run on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignoring_conflicts(
    session: Session,
    model: Any,
    rows: list[dict[str, Any]],
    conflict_columns: list[str],
    returning: Sequence[Any] = (),
) -> list[tuple[Any, ...]]:
    """Insert the rows that do not collide on `conflict_columns`; return `returning` of the inserted ones."""
    if not rows:
        return []
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model).on_conflict_do_nothing(index_elements=conflict_columns)
    if returning:
        return [tuple(row) for row in session.execute(statement.returning(*returning), rows)]
    session.execute(statement, rows)
    return []
