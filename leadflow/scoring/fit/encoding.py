"""From history columns to levels a marketer can read: category values (rare ones grouped), numeric bands,
and "missing" as a level of its own. Each level is also a fit-rule test, so a learned weight per level
becomes a rule in scoring.yaml that matches exactly the rows the level was learned from."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from leadflow.scoring.fit.history import History, HistoryError

MAX_LEVELS = 100  # beyond this a column's least frequent values join "another value"
MIN_LEVEL_ROWS = 20  # a value seen in fewer rows joins "another value": too few to learn its own points
IDENTIFIER_SHARE = (
    0.9  # a text column with this share of distinct values names rows, it does not describe them
)

LevelKind = Literal["values", "band", "missing", "other"]


@dataclass(frozen=True)
class Level:
    kind: LevelKind
    label: str
    count: int  # rows of the training history in this level
    values: tuple[Any, ...] = ()  # kind "values": the property values; kind "other": the values it is NOT
    low: float | None = None  # kind "band": gte
    high: float | None = None  # kind "band": lt


@dataclass(frozen=True)
class ColumnEncoding:
    column: str
    numeric: bool
    levels: tuple[Level, ...]
    edges: tuple[float, ...] = ()  # numeric: band boundaries, ascending
    integers: bool = False  # numeric and whole numbers only: bands read "3 to 8"

    def assign(self, values: list[Any]) -> np.ndarray:
        """The level index of each value (-1: no level, e.g. a category never seen in training)."""
        index = {level.kind: i for i, level in enumerate(self.levels)}  # one "missing", one "other" at most
        missing, other = index.get("missing", -1), index.get("other", -1)
        if self.numeric:
            bands = [i for i, level in enumerate(self.levels) if level.kind == "band"]
            out = np.full(len(values), missing, dtype=np.int32)
            present = np.array([value is not None for value in values], dtype=bool)
            numbers = np.array([float(value) for value in values if value is not None], dtype=float)
            out[present] = np.array(bands, dtype=np.int32)[np.searchsorted(self.edges, numbers, side="right")]
            return out
        known = {
            _key(value): i
            for i, level in enumerate(self.levels)
            if level.kind == "values"
            for value in level.values
        }
        return np.array(
            [missing if value is None else known.get(_key(value), other) for value in values], dtype=np.int32
        )


def _key(value: Any) -> Any:
    # Fit rules compare text case-insensitively (leadflow.content.conditions), so levels do too.
    return value.casefold() if isinstance(value, str) else value


@dataclass(frozen=True)
class ColumnChoice:
    """Which columns are learned from, and why each other one is not."""

    used: list[str]
    excluded: dict[str, str]


def choose_columns(history: History, id_column: str | None, exclude: list[str]) -> ColumnChoice:
    unknown = [
        name for name in [*exclude, *([id_column] if id_column else [])] if name not in history.columns
    ]
    if unknown:
        raise HistoryError(
            f"{history.path}: no column {unknown[0]!r} (columns: {', '.join(history.columns)})"
        )
    used: list[str] = []
    excluded: dict[str, str] = {}
    for name, values in history.columns.items():
        present = [value for value in values if value is not None]
        distinct = len({_key(value) for value in present})
        if name == id_column:
            excluded[name] = "identifier (--id)"
        elif name in exclude:
            excluded[name] = "excluded (--exclude)"
        elif not present:
            excluded[name] = "always empty"
        elif distinct == 1 and len(present) == len(values):
            excluded[name] = f"one value only ({present[0]!r})"
        elif _looks_like_identifier(present, distinct):
            excluded[name] = f"identifier ({distinct / len(present):.0%} of its values are distinct)"
        else:
            used.append(name)
    return ColumnChoice(used, excluded)


def _looks_like_identifier(present: list[Any], distinct: int) -> bool:
    if len(present) < 20 or distinct < IDENTIFIER_SHARE * len(present):
        return False
    if all(isinstance(value, int) for value in present):
        # Row numbers, not amounts: distinct integers filling (almost) a consecutive run.
        return max(present) - min(present) < 1.2 * len(present)
    return not all(isinstance(value, int | float) for value in present)


def encode_column(name: str, values: list[Any], bins: int) -> ColumnEncoding:
    present = [value for value in values if value is not None]
    numeric = all(isinstance(value, int | float) for value in present)
    missing = len(values) - len(present)
    missing_level = [Level("missing", "missing", missing)] if missing else []
    if numeric:
        return _numeric_encoding(name, present, bins, missing_level)
    return _categorical_encoding(name, present, len(values), missing_level)


def _categorical_encoding(name: str, present: list[Any], rows: int, missing: list[Level]) -> ColumnEncoding:
    counts = Counter(_key(value) for value in present)
    spelling = {_key(value): value for value in reversed(present)}  # the first spelling seen wins
    min_count = max(MIN_LEVEL_ROWS, math.ceil(0.001 * rows))
    frequent = [key for key, count in counts.most_common(MAX_LEVELS) if count >= min_count]
    if not frequent:  # every value is rare: keep the most frequent ones rather than learn nothing
        frequent = [key for key, _ in counts.most_common(min(MAX_LEVELS, 20))]
    levels = [Level("values", str(spelling[key]), counts[key], (spelling[key],)) for key in frequent]
    rare = sum(counts.values()) - sum(counts[key] for key in frequent)
    if rare:
        others = len(counts) - len(frequent)
        label = f"another value ({others} rare values)"
        levels.append(Level("other", label, rare, tuple(spelling[key] for key in frequent)))
    return ColumnEncoding(name, False, tuple(levels + missing))


def _numeric_encoding(name: str, present: list[Any], bins: int, missing: list[Level]) -> ColumnEncoding:
    numbers = np.array(present, dtype=float)
    integers = all(isinstance(value, int) for value in present)
    quantiles = np.quantile(numbers, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else []
    edges = sorted({_round_edge(float(q), integers) for q in quantiles})
    counts = _band_counts(numbers, edges)
    while len(edges) and (empty := np.flatnonzero(counts == 0)).size:
        del edges[max(int(empty[0]) - 1, 0)]  # rounding left a band without rows: join it to its neighbour
        counts = _band_counts(numbers, edges)
    bounds = [None, *edges, None]
    levels = [
        Level("band", band_label(low, high, integers), int(count), low=low, high=high)
        for low, high, count in zip(bounds[:-1], bounds[1:], counts, strict=True)
    ]
    return ColumnEncoding(name, True, tuple(levels + missing), tuple(edges), integers)


def _band_counts(numbers: np.ndarray, edges: list[float]) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, numbers, side="right"), minlength=len(edges) + 1)


def _round_edge(value: float, integers: bool) -> float:
    """Two significant digits: a marketer reads "50 to 199 employees", not "47.3 to 201.8"."""
    rounded = float(f"{value:.2g}")
    return float(math.ceil(rounded)) if integers else rounded


def _number(value: float) -> str:
    return f"{int(value)}" if value == int(value) else f"{value:g}"


def band_label(low: float | None, high: float | None, integers: bool) -> str:
    if integers:  # [3, 9) of whole numbers reads "3 to 8"
        if low is None:
            return f"{_number(high - 1)} or less" if high is not None else "any"
        if high is None:
            return f"{_number(low)} or more"
        return _number(low) if high - 1 == low else f"{_number(low)} to {_number(high - 1)}"
    if low is None:
        return f"under {_number(high)}" if high is not None else "any"
    if high is None:
        return f"{_number(low)} or more"
    return f"{_number(low)} to under {_number(high)}"


def merge_test(levels: list[Level]) -> dict[str, Any]:
    """The fit-rule test matching exactly the rows of `levels` (one kind; bands adjacent)."""
    kind = levels[0].kind
    if kind == "values":
        return {"in": [value for level in levels for value in level.values]}
    if kind == "band":
        test: dict[str, Any] = {}
        if levels[0].low is not None:
            test["gte"] = _plain(levels[0].low)
        if levels[-1].high is not None:
            test["lt"] = _plain(levels[-1].high)
        return test
    if kind == "missing":
        return {"exists": False}
    return {"exists": True, "not_in": list(levels[0].values)}


def merge_label(levels: list[Level], integers: bool) -> str:
    if levels[0].kind == "band":
        return band_label(levels[0].low, levels[-1].high, integers)
    if len(levels) > 3:
        return f"{', '.join(level.label for level in levels[:2])} or {len(levels) - 2} more"
    return " or ".join(level.label for level in levels)


def _plain(value: float) -> int | float:
    return int(value) if value == int(value) else value
