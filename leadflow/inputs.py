"""The base of every request body, and the bounds of values the store can keep faithfully on every backend.

A value SQLite would keep but PostgreSQL cannot (a NUL character, a lone UTF-16 surrogate, NaN or Infinity in
JSON, an id beyond 64 bits) is refused at the door with the field that holds it, the same on both backends,
instead of failing inside a transaction (a 500) or being stored on one backend only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_ID = 2**63 - 1  # a BIGINT; SQLite's INTEGER holds the same
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)

LeadId = Annotated[int, Field(ge=1, le=MAX_ID)]


class Input(BaseModel):
    """A request body: unknown fields are refused, and so is any text or number the store cannot keep."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        problems = [
            InitErrorDetails(type=PydanticCustomError("unstorable", reason), loc=where, input=value)
            for where, value, reason in unstorable(data)
        ]
        if problems:
            # A ValidationError raised here keeps each problem's own location (`events.3.properties.note`).
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return data


def unstorable(
    value: Any, where: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any, str]]:
    """(location, value, reason) for every string or number in `value` that a store cannot keep."""
    if isinstance(value, str):
        if "\x00" in value:
            yield where, value, "contains a NUL character (\\u0000), which cannot be stored"
        elif not _encodable(value):
            yield where, value, "is not valid Unicode (it holds a lone surrogate)"
    elif isinstance(value, float) and not math.isfinite(value):
        yield where, value, "must be a finite number"
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and ("\x00" in key or not _encodable(key)):
                yield (*where, key), key, "the name contains a NUL character or invalid Unicode"
            yield from unstorable(item, (*where, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from unstorable(item, (*where, index))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC (naive means UTC), or ValueError when it lies outside what the store can hold."""
    try:
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if moment < EARLIEST:
        raise ValueError(f"is before {EARLIEST:%Y-%m-%d}")
    return moment
