"""The one clock outside workflows (workflows use `workflow.now()`). Tests replace it with `frozen_at`;
`leadflow simulate` with `following`, so activities see the time-skipping server's time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime

_source: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    return _source()


def not_before(moment: datetime | None) -> datetime:
    """Now, or `moment` (a workflow's time handed to an activity) when that is later: on a time-skipping
    server the workflow's time runs ahead of this clock, and records must follow the workflow."""
    current = now()
    return max(current, moment) if moment is not None else current


@contextmanager
def following(source: Callable[[], datetime]) -> Iterator[None]:
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous


def frozen_at(moment: datetime) -> AbstractContextManager[None]:
    return following(lambda: moment)
