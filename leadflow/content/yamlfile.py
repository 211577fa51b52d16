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


NO_ALIASES = "content files allow no anchors or aliases"
MAX_DEPTH = 100  # nesting of lists and mappings: content is a few levels deep; more is a mistake


def decoded_text(path: Path) -> str:
    """The file as text, or a ContentError at the line where it stops being UTF-8 text."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise ContentError(path, None, "is a folder, not a file: move it out, or rename it") from None
    except OSError as error:
        raise ContentError(path, None, f"cannot read it: {error.strerror or error}") from None
    if problem := not_text(raw):
        raise ContentError(path, *problem)
    return raw.decode("utf-8")


def not_text(raw: bytes) -> tuple[int, str] | None:
    """(line, reason) when `raw` is not UTF-8 text: binary, or in another encoding."""
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        return line, "is a binary file, not text: replace it with the text file it should be"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return line, (
            f"is not UTF-8 text (byte 0x{raw[error.start]:02x} cannot be read): save the file as UTF-8 "
            "in your editor"
        )
    return None


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's is ~10x faster


class _ContentLoader(_Loader):
    """PyYAML's safe loader, stricter: a key given twice is a mistake (YAML would keep the last value
    silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict | set):
                raise yaml.MarkedYAMLError(
                    problem="a key is a list or a mapping: a key is a name, like `id:`",
                    problem_mark=key_node.start_mark,
                )
            if key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"`{key}` is given twice (first on line {seen[key]}): keep one",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _check_structure(text: str) -> None:
    """No anchors or aliases (an alias can repeat or loop a value without bound, and content is short
    enough to write out), nesting bounded: YAMLError at the first place that breaks either."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            problem = (
                f"`*{event.anchor}` repeats a value by alias: write the value out in full ({NO_ALIASES})"
            )
        elif getattr(event, "anchor", None):
            problem = (
                f"`&{event.anchor}` is an anchor: remove it and write each value out in full ({NO_ALIASES})"
            )
        elif isinstance(event, yaml.CollectionStartEvent) and (depth := depth + 1) > MAX_DEPTH:
            problem = f"nested more than {MAX_DEPTH} levels deep: flatten it"
        else:
            depth -= isinstance(event, yaml.CollectionEndEvent)
            continue
        raise yaml.MarkedYAMLError(problem=problem, problem_mark=event.start_mark)


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
        text = decoded_text(path)
        loader = _ContentLoader(text)
        try:
            _check_structure(text)
            root = loader.get_single_node()
            self.data: Any = loader.construct_document(root) if root is not None else None
        except yaml.reader.ReaderError as error:  # a control character: no mark, an offset
            line = text[: error.position].count("\n") + 1
            character = (
                error.character if isinstance(error.character, int) else ord(str(error.character)[:1] or "?")
            )
            raise ContentError(
                path,
                line,
                f"not valid YAML: the control character U+{character:04X} is not allowed: delete it",
            ) from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            problem = getattr(error, "problem", None) or " ".join(str(error).split())
            context, started = getattr(error, "context", None), getattr(error, "context_mark", None)
            if context and started:
                problem = f"{problem} ({context} that starts on line {started.line + 1})"
            raise ContentError(path, mark.line + 1 if mark else None, f"not valid YAML: {problem}") from None
        except RecursionError:
            raise ContentError(
                path, None, f"not valid YAML: nested more than {MAX_DEPTH} levels deep"
            ) from None
        finally:
            loader.dispose()
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
        if not isinstance(self.data, dict):
            required = [name for name, field in model.model_fields.items() if field.is_required()]
            fields = ", ".join(f"{name}:" for name in required or model.model_fields)
            what = "is empty" if self.data is None else f"holds a {_yaml_kind(self.data)}"
            raise ContentError(
                self.path, 1, f"the file {what}: it should be a mapping of `key: value` lines ({fields} …)"
            )
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


def _yaml_kind(value: Any) -> str:
    return "list" if isinstance(value, list) else f"single value ({str(value)[:40]!r})"


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
