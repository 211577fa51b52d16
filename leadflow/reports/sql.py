"""SQL that differs between SQLite and PostgreSQL, and percentiles picked in SQL (interpolated here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Integer, Select, String, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

# --- SQL that differs between SQLite and PostgreSQL ---------------------------------------------------


class seconds_between(FunctionElement[float]):
    """`end - start` in seconds."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    # julianday's doubles carry ~50 µs of noise at today's dates: milliseconds are what it can promise.
    return f"round((julianday({end}) - julianday({start})) * 86400.0, 3)"


@compiles(seconds_between, "postgresql")
def _seconds_postgresql(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


class week_of(FunctionElement[str]):
    """The Monday starting the week of a time, as text YYYY-MM-DD."""

    type = String()
    inherit_cache = True


@compiles(week_of, "sqlite")
def _week_sqlite(element: week_of, compiler: Any, **kw: Any) -> str:
    (moment,) = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"date({moment}, 'weekday 0', '-6 days')"


@compiles(week_of, "postgresql")
def _week_postgresql(element: week_of, compiler: Any, **kw: Any) -> str:
    (moment,) = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"to_char(date_trunc('week', {moment}), 'YYYY-MM-DD')"


class position_in(FunctionElement[int]):
    """1-based position of `needle` in `text`, 0 when absent."""

    type = Integer()
    inherit_cache = True


@compiles(position_in, "sqlite")
def _position_sqlite(element: position_in, compiler: Any, **kw: Any) -> str:
    text, needle = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"instr({text}, {needle})"


@compiles(position_in, "postgresql")
def _position_postgresql(element: position_in, compiler: Any, **kw: Any) -> str:
    text, needle = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"strpos({text}, {needle})"


# --- percentiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    count: int
    median: float | None
    p90: float | None


def spreads(session: Session, values: Select[Any]) -> dict[str, Spread]:
    """Median and 90th percentile (linear interpolation) of `values` (columns: grp, v) per group, picked in
    SQL: only the rows around the two ranks come back."""
    inner = values.subquery()
    ranked = select(
        inner.c.grp,
        inner.c.v,
        func.row_number().over(partition_by=inner.c.grp, order_by=inner.c.v).label("rn"),
        func.count().over(partition_by=inner.c.grp).label("n"),
    ).subquery()
    lows = [((ranked.c.n - 1) * numerator) // 10 + 1 for numerator in (5, 9)]
    rows = session.execute(
        select(ranked.c.grp, ranked.c.v, ranked.c.rn, ranked.c.n).where(
            or_(*(ranked.c.rn.between(low, low + 1) for low in lows))
        )
    ).all()
    by_group: dict[str, dict[int, float]] = {}
    counts: dict[str, int] = {}
    for group, value, rank, count in rows:
        by_group.setdefault(group, {})[int(rank)] = float(value)
        counts[group] = int(count)
    return {
        group: Spread(
            counts[group], _percentile(ranks, counts[group], 0.5), _percentile(ranks, counts[group], 0.9)
        )
        for group, ranks in by_group.items()
    }


def _percentile(ranks: dict[int, float], count: int, share: float) -> float | None:
    if count == 0:
        return None
    position = (count - 1) * share
    low = int(position)
    lower = ranks[low + 1]
    upper = ranks.get(low + 2, lower)
    return lower + (upper - lower) * (position - low)
