"""The one clock outside workflows (workflows use `workflow.now()`). Tests replace it with `frozen_at`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_source: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    return _source()


@contextmanager
def frozen_at(moment: datetime) -> Iterator[None]:
    global _source
    previous, _source = _source, (lambda: moment)
    try:
        yield
    finally:
        _source = previous
