"""Property tests shared by scoring rules, segment filters, sequence conditions and sales assignment.

A `matches` pattern runs on values strangers send (a page's URL, a form field), so it is an RE2 expression
(google-re2): searched in time linear in the value, never backtracking, and without the Python-only features
that need backtracking (backreferences like `\1`, lookaround like `(?=…)` or `(?<!…)`), which `leadflow
check` refuses by file and line. Text tests (`matches`, `glob`, `contains`) read at most the first
MAX_TESTED_CHARS characters of a value.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from functools import cached_property
from typing import Any

import re2
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Scalar = str | int | float | bool

MAX_TESTED_CHARS = 16_384  # all of any value an event can carry (its properties are at most 16 KiB)


def _regex_options() -> Any:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # a refused pattern is reported by `leadflow check`, not on stderr
    return options


_REGEX_OPTIONS = _regex_options()


OPERATORS = (
    "equals",
    "not_equals",
    "in",
    "not_in",
    "matches",
    "glob",
    "contains",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
)


class PropertyTest(BaseModel):
    """One or more checks on a single value; all given checks must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    equals: Scalar | None = None
    not_equals: Scalar | None = None
    in_: list[Scalar] | None = None
    not_in: list[Scalar] | None = None
    matches: str | None = None  # RE2 regular expression, searched case-insensitively
    glob: str | None = None  # shell-style pattern over the whole value, e.g. /events/*
    contains: str | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    exists: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_in(cls, data: Any) -> Any:
        if isinstance(data, dict) and "in" in data:
            data = {**data, "in_": data["in"]}
            del data["in"]
        if isinstance(data, dict) and (unknown := [key for key in data if key not in cls.model_fields]):
            # Said in the marketer's words: a misspelt `greater_than` is an operator, not "an extra field".
            raise ValueError(f"unknown operator {unknown[0]!r} (operators: {', '.join(OPERATORS)})")
        return data

    @property
    def tests_given(self) -> set[str]:
        """The checks this test makes (a subclass's own fields, such as a rule's name, are not checks)."""
        # A snapshot read back from JSON sets every field, most to None: only the given ones are checks.
        return {
            name
            for name in self.model_fields_set & set(PropertyTest.model_fields)
            if getattr(self, name) is not None
        }

    @model_validator(mode="after")
    def _at_least_one(self) -> PropertyTest:
        if not self.tests_given:
            raise ValueError(f"a property test needs one of: {', '.join(OPERATORS)}")
        return self

    @field_validator("matches")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            _compiled(pattern)
        return pattern

    @cached_property
    def _regex(self) -> Any:
        return _compiled(self.matches) if self.matches is not None else None

    # Sets of the `in` / `not_in` options, so a long list (a fitted model lists many values) costs one lookup.
    @cached_property
    def _in_keys(self) -> frozenset[Any]:
        return frozenset(_key(option) for option in self.in_ or ())

    @cached_property
    def _not_in_keys(self) -> frozenset[Any]:
        return frozenset(_key(option) for option in self.not_in or ())

    def holds(self, value: Any) -> bool:
        if self.exists is not None and (value is not None) != self.exists:
            return False
        if value is None:
            return self.exists is False or (self.tests_given <= {"exists", "not_equals", "not_in"})
        text = str(value)[:MAX_TESTED_CHARS]
        checks = (
            self.equals is None or _same(value, self.equals),
            self.not_equals is None or not _same(value, self.not_equals),
            self.in_ is None or _member(value, self._in_keys),
            self.not_in is None or not _member(value, self._not_in_keys),
            self._regex is None or self._regex.search(text) is not None,
            self.glob is None or fnmatchcase(text.casefold(), self.glob.casefold()),
            self.contains is None or self.contains.lower() in text.lower(),
            self.gt is None or _number(value) > self.gt,
            self.gte is None or _number(value) >= self.gte,
            self.lt is None or _number(value) < self.lt,
            self.lte is None or _number(value) <= self.lte,
        )
        return all(checks)


def _compiled(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _REGEX_OPTIONS)
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args else "invalid"
        raise ValueError(
            f"regular expression {pattern!r} does not compile: {reason} (patterns are RE2: no "
            "backreferences, no lookahead or lookbehind)"
        ) from None


def _same(value: Any, expected: Scalar) -> bool:
    if isinstance(expected, str) and isinstance(value, str):
        return value.casefold() == expected.casefold()
    return bool(value == expected)


def _key(value: Any) -> Any:
    """What `_same` compares: text case-insensitively, anything else as it is."""
    return value.casefold() if isinstance(value, str) else value


def _member(value: Any, keys: frozenset[Any]) -> bool:
    try:
        return _key(value) in keys
    except TypeError:  # a list or mapping property equals no scalar option
        return False


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")  # every comparison with NaN is False: a non-number never passes


def as_test(spec: PropertyTest | Scalar) -> PropertyTest:
    return spec if isinstance(spec, PropertyTest) else PropertyTest(equals=spec)


PropertyFilter = dict[str, PropertyTest | Scalar]


def filter_holds(where: PropertyFilter, properties: dict[str, Any]) -> bool:
    return all(as_test(test).holds(properties.get(name)) for name, test in where.items())
