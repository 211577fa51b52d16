"""A table of past leads read from CSV: one row per lead, its properties, and whether it converted."""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Outcome spellings a CRM export uses; compared case-insensitively.
POSITIVE = {"1", "1.0", "yes", "y", "true", "t", "won", "converted"}
NEGATIVE = {"0", "0.0", "no", "n", "false", "f", "lost", "not converted"}
_INTEGER = re.compile(r"^[+-]?\d+$")


class HistoryError(Exception):
    """A history table that cannot be learned from, with what to change (file, column, row)."""


def property_value(text: str) -> Any:
    """A CSV cell as a lead property: None when empty, a number when it reads as one, else the text.

    Fit and evaluate both go through here, so a rule learned from a cell matches the same cell when scored.
    """
    text = text.strip()
    if not text:
        return None
    if _INTEGER.match(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if np.isfinite(number) else text


def parse_outcome(text: str) -> bool | None:
    folded = text.strip().casefold()
    if folded in POSITIVE:
        return True
    if folded in NEGATIVE:
        return False
    return None


@dataclass
class History:
    """Columns of property values (None = missing) and the 0/1 outcome, row for row."""

    path: Path
    target: str
    columns: dict[str, list[Any]]
    outcome: np.ndarray
    skipped_rows: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.outcome)

    @property
    def conversion_rate(self) -> float:
        return float(self.outcome.mean()) if len(self) else 0.0

    def properties(self, row: int) -> dict[str, Any]:
        """Row `row` as the properties of a lead (the outcome is never one of them)."""
        return {name: values[row] for name, values in self.columns.items() if values[row] is not None}

    def subset(self, rows: np.ndarray) -> History:
        columns = {name: [values[i] for i in rows] for name, values in self.columns.items()}
        return History(self.path, self.target, columns, self.outcome[rows])


def read_history(path: Path, target: str) -> History:
    """The table at `path` with `target` as the outcome column (0/1, Yes/No, true/false, won/lost)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            rows = list(reader)
    except OSError as error:
        raise HistoryError(f"{path}: cannot read it: {error.strerror or error}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise HistoryError(f"{path}: not a UTF-8 CSV file: {error}") from None
    if target not in header:
        raise HistoryError(f"{path}: no column {target!r} for the outcome (columns: {', '.join(header)})")
    if duplicated := [name for name, count in Counter(header).items() if count > 1]:
        raise HistoryError(f"{path}: column {duplicated[0]!r} appears twice in the header")

    names = [name for name in header if name != target]
    columns: dict[str, list[Any]] = {name: [] for name in names}
    outcome: list[bool] = []
    missing, unreadable = 0, Counter[str]()
    for row in rows:
        cells = {(key or "").strip(): value for key, value in row.items()}
        text = cells.get(target) or ""
        converted = parse_outcome(text)
        if converted is None:
            if text.strip():
                unreadable[text.strip()] += 1
            else:
                missing += 1
            continue
        outcome.append(converted)
        for name in names:
            cell = cells.get(name)
            columns[name].append(property_value(cell) if isinstance(cell, str) else None)

    if unreadable:
        shown = ", ".join(f"{value!r} ({count} rows)" for value, count in unreadable.most_common(5))
        raise HistoryError(
            f"{path}: column {target!r} must say whether the lead converted (1/0, yes/no, true/false, "
            f"won/lost); it also holds {shown}"
        )
    history = History(path, target, columns, np.array(outcome, dtype=np.int8), skipped_rows=missing)
    if missing:
        history.notes.append(f"{missing} row(s) without an outcome in {target!r} were left out")
    converted_count = int(history.outcome.sum())
    if converted_count < 2 or converted_count > len(history) - 2:
        raise HistoryError(
            f"{path}: {target!r} needs both outcomes to learn from: {converted_count} of {len(history)} "
            "rows converted"
        )
    return history
