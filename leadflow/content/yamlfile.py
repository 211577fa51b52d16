"""YAML content files read with their line numbers, so every mistake is reported as file:line: reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
Location = tuple[str | int, ...]


class ContentError(Exception):
    """A mistake in a marketer-authored file, with where it is and how to fix it."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = Path(path), line, reason
        super().__init__(f"{self.path}{f':{line}' if line else ''}: {reason}")


class ContentErrors(Exception):
    def __init__(self, errors: list[ContentError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(error) for error in errors))


def _line_index(node: yaml.Node, location: Location, index: dict[Location, int]) -> None:
    index.setdefault(location, node.start_mark.line + 1)  # a key's own line wins over its value's
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            index[(*location, key.value)] = key.start_mark.line + 1
            _line_index(value, (*location, key.value), index)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            _line_index(item, (*location, position), index)


class YamlFile:
    """One parsed file: its data, and the line of every key and item in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = path.read_text(encoding="utf-8")
        try:
            self.data: Any = yaml.safe_load(text)
            root = yaml.compose(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            problem = getattr(error, "problem", None) or str(error)
            context, started = getattr(error, "context", None), getattr(error, "context_mark", None)
            if context and started:
                problem = f"{problem} ({context} that starts on line {started.line + 1})"
            raise ContentError(path, mark.line + 1 if mark else None, f"not valid YAML: {problem}") from None
        self.lines: dict[Location, int] = {}
        if root is not None:
            _line_index(root, (), self.lines)

    def line_of(self, location: Location) -> int | None:
        """The line of the deepest part of `location` that exists in the file. A mapping's number key
        (`2:` in `lead_overrides`) is text in the file and a number once validated: either is found."""
        as_text = tuple(str(part) for part in location)
        for end in range(len(location), -1, -1):
            for candidate in (location[:end], as_text[:end]):
                if candidate in self.lines:
                    return self.lines[candidate]
        return None

    def error(self, location: Location, reason: str) -> ContentError:
        return ContentError(self.path, self.line_of(location), reason)

    def parse(self, model: type[Model]) -> Model:
        try:
            return model.model_validate(self.data)
        except ValidationError as invalid:
            errors = _furthest_union_branches(invalid.errors())
            raise ContentErrors([self._explain(error) for error in errors]) from None

    def _explain(self, error: Any) -> ContentError:
        location = tuple(part for part in error["loc"] if not _is_union_tag(part))
        field = ".".join(str(part) for part in location) or "the file"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check its spelling)"
        elif error["type"] == "missing":
            message = "required field is missing"
        return self.error(location, f"{field}: {message}")


_SCALAR_TAGS = {"str", "int", "float", "bool"}


def _is_union_tag(part: str | int) -> bool:
    # pydantic names the union member it tried ("str", "function-after[...]", "SendStep"); not a key in the file.
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in _SCALAR_TAGS)


def _furthest_union_branches(errors: list[Any]) -> list[Any]:
    """For a value that matched no member of a union, keep only the errors of the member that got furthest
    (a mapping given where a test or a scalar is allowed is reported as a test, not as "not a string");
    on a tie, the model member's errors, which name what is wrong inside the mapping."""
    best: dict[Location, tuple[int, bool]] = {}
    tagged: list[tuple[Any, Location | None, tuple[int, bool]]] = []
    for error in errors:
        location = error["loc"]
        tag = next((i for i, part in enumerate(location) if _is_union_tag(part)), None)
        if tag is None:
            tagged.append((error, None, (0, False)))
            continue
        rank = (len(location) - tag, location[tag] not in _SCALAR_TAGS)
        best[location[:tag]] = max(best.get(location[:tag], rank), rank)
        tagged.append((error, location[:tag], rank))
    return [error for error, prefix, rank in tagged if prefix is None or rank == best[prefix]]
