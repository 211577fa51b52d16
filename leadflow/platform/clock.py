"""The one clock outside workflows (workflows use `workflow.now()`). Tests replace it with `frozen_at`;
`leadflow simulate` with `following`, so activities see the time-skipping server's time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta

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


def on_the_minute(moment: datetime) -> datetime:
    """`moment`, or the next whole minute after it: timers due within one minute fire together (a
    time-skipping server runs them as one batch instead of one by one; a minute late is nothing here)."""
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)
