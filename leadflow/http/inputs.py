"""The base of every request body, and the bounds of values the store can keep faithfully on every backend.

A value SQLite would keep but PostgreSQL cannot (a NUL character, a lone UTF-16 surrogate, NaN or Infinity in
JSON, an id beyond 64 bits) is refused at the door with the field that holds it, the same on both backends,
instead of failing inside a transaction (a 500) or being stored on one backend only. Free-form values
(`properties`) nest at most `MAX_DEPTH` levels: deeper ones are refused with the field where they go too deep,
before anything recurses into them (Temporal's converter cannot carry a few hundred levels).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_DEPTH = 16  # levels of objects and arrays in a free-form value, the value itself being the first
MAX_ID = 2**63 - 1  # a BIGINT; SQLite's INTEGER holds the same
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)

# Strict: JSON `true` or `"7"` is not a lead id (lax mode took `true` for lead 1).
LeadId = Annotated[int, Field(ge=1, le=MAX_ID, strict=True)]


class Input(BaseModel):
    """A request body: unknown fields are refused, and so is any text or number the store cannot keep."""

    model_config = ConfigDict(extra="forbid")
    free_form: ClassVar[tuple[str, ...]] = ()  # fields of free-form JSON, bounded in depth

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        problems = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "too_deep", "is nested deeper than {levels} levels", {"levels": MAX_DEPTH}
                ),
                loc=where,
                input=None,
            )
            for name in cls.free_form
            if isinstance(data, dict) and name in data
            for where in [nested_too_deep(data[name], (name,))]
            if where is not None
        ] or [
            InitErrorDetails(type=PydanticCustomError("unstorable", reason), loc=where, input=value)
            for where, value, reason in unstorable(data)
        ]
        if problems:
            # A ValidationError raised here keeps each problem's own location (`events.3.properties.note`).
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return data


def nested_too_deep(value: Any, where: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """The location of the first object or array in `value` (at `where`) more than MAX_DEPTH levels deep,
    counting `value` itself as the first; None when there is none. Walked without recursion."""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(
        MAX_DEPTH
    ):  # level by level, without locations: cheap for the shallow values of nearly all
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, dict | list)
        ]
        if not level:
            return None
    waiting: list[tuple[Any, tuple[str | int, ...], int]] = [(value, where, 1)]
    while waiting:  # too deep somewhere: find where, depth first
        container, location, depth = waiting.pop()
        if depth > MAX_DEPTH:
            return location
        children = container.items() if isinstance(container, dict) else enumerate(container)
        waiting.extend(
            (child, (*location, key), depth + 1)
            for key, child in reversed(list(children))
            if isinstance(child, dict | list)
        )
    return None


def cut_to_depth(value: Any, levels: int = MAX_DEPTH) -> Any:
    """`value` with every object or array deeper than `levels` levels replaced by a note: what an older version
    stored deeper than the bound is shown that far (an answer hundreds of levels deep cannot be written)."""
    if not isinstance(value, dict | list):
        return value
    if levels <= 0:
        return f"(nested deeper than {MAX_DEPTH} levels)"
    if isinstance(value, dict):
        return {key: cut_to_depth(item, levels - 1) for key, item in value.items()}
    return [cut_to_depth(item, levels - 1) for item in value]


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
