"""INSERT … ON CONFLICT DO NOTHING for the two dialects we run on."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from leadflow.platform.store.models import table_of


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
    session.flush()  # what the ORM's own insert did first: rows added before may be referenced
    names = tuple(column.key for column in returning)  # names: SQL expressions make poor cache keys
    statement = _statement(session.get_bind().dialect.name, model, tuple(conflict_columns), names)
    if returning:
        return [tuple(row) for row in session.execute(statement, rows)]
    session.execute(statement, rows)
    return []


@functools.cache
def _statement(
    dialect: str, model: Any, conflict_columns: tuple[str, ...], returning: tuple[str, ...]
) -> Any:
    """Built once per shape, on the model's Core table: hot paths (a send's claim, an enrollment) insert one
    row each, and the ORM's bulk insert cost more than the insert itself."""
    table = table_of(model)
    insert = (postgresql if dialect == "postgresql" else sqlite).insert
    statement = insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
    return statement.returning(*(table.c[name] for name in returning)) if returning else statement
