"""What a template reads, found in its syntax tree: the variables (guarded or not), includes and internals."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

# Names a template may read that are not the message's variables: Jinja's own (`loop`, `caller`, `self`…).
JINJA_NAMES = frozenset({"loop", "caller", "self", "super", "varargs", "kwargs"})
REFERENCES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def _references(tree: nodes.Template) -> Iterator[tuple[int, str, list[Any]]]:
    """(line, verb, template names) of each include, import and extends naming its template(s) outright."""
    verbs = {
        nodes.Include: "includes",
        nodes.Import: "imports",
        nodes.FromImport: "imports",
        nodes.Extends: "extends",
    }
    for node in tree.find_all(REFERENCES):
        if not isinstance(node, REFERENCES) or (isinstance(node, nodes.Include) and node.ignore_missing):
            continue
        given = (
            node.template.items if isinstance(node.template, nodes.Tuple | nodes.List) else [node.template]
        )
        names = [name.value for name in given if isinstance(name, nodes.Const)]  # 5 and none too: mistakes
        if names and len(names) == len(given):  # else computed when rendering: the sample render tries it
            yield node.lineno, verbs[type(node)], names


def _loop_back(
    start: str, names: list[Any], references: dict[str, list[tuple[int, str, list[Any]]]]
) -> list[str]:
    """The chain of templates from `names` back to `start`, or [] when none leads back."""
    paths = [[name] for name in names]
    seen: set[str] = set()
    while paths:
        path = paths.pop()
        if path[-1] == start:
            return path
        if path[-1] in seen:
            continue
        seen.add(path[-1])
        paths.extend([*path, name] for _, _, targets in references.get(path[-1], []) for name in targets)
    return []


def _names_defined(tree: nodes.Template) -> set[str]:
    """Names the template itself defines: `{% set %}`, loop variables, macros and their parameters, imports."""
    names = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    names |= {node.name for node in tree.find_all(nodes.Macro)}
    names |= {node.target for node in tree.find_all(nodes.Import)}
    for node in tree.find_all(nodes.FromImport):
        names |= {name[1] if isinstance(name, tuple) else name for name in node.names}
    return names


@dataclass(frozen=True)
class VariableUse:
    variable: str  # the top-level name: "lead", "event", …
    path: tuple[str, ...]  # the attributes read from it: ("properties", "title") for event.properties.title
    line: int
    guarded: bool


Chain = tuple[str, tuple[str, ...]]


def _chain(node: nodes.Node) -> Chain | None:
    """`event.properties["title"]` as ("event", ("properties", "title")); None for anything else."""
    path: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            path.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            path.append(node.arg.value)
        else:
            return None
        node = node.node
    if not isinstance(node, nodes.Name) or node.ctx != "load":
        return None
    return node.name, tuple(reversed(path))


def _collect_uses(node: nodes.Node, guarded: set[Chain], uses: list[VariableUse], defaulted: bool) -> None:
    if isinstance(node, nodes.Filter) and node.name == "default":
        defaulted = True
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Getattr)
        and node.node.attr == "get"
        and node.args
        and isinstance(node.args[0], nodes.Const)
        and (mapping := _chain(node.node.node)) is not None
    ):
        # `event.properties.get("title")` reads a key that may be missing, and says so: None then.
        variable, path = mapping
        uses.append(VariableUse(variable, (*path, str(node.args[0].value)), node.lineno, guarded=True))
        for argument in node.args[1:]:
            _collect_uses(argument, guarded, uses, defaulted)
        return
    if (chain := _chain(node)) is not None:
        variable, path = chain
        prefixes = {(variable, path[:length]) for length in range(len(path) + 1)}
        uses.append(VariableUse(variable, path, node.lineno, defaulted or bool(prefixes & guarded)))
        return
    for child in node.iter_child_nodes():
        _collect_uses(child, guarded, uses, defaulted)


def internals_read(tree: nodes.Template) -> Iterator[tuple[int, str]]:
    """(line, reason) for every place a template reaches for a Python internal: a name starting with `_`
    read as an attribute (`''.__class__`, `lead['__init__']`, `|attr('__class__')`, `ns.__dict__`) or
    through a format string (`'{0.__class__}'.format(lead)`). The sandbox refuses each when it runs;
    `leadflow check` refuses them before, even on a branch no sample lead takes."""
    why = "is a Python internal (a name starting with _): templates may only read the lead's fields"
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.NSRef, nodes.Filter, nodes.Const)):
        if isinstance(node, nodes.Getattr | nodes.NSRef) and node.attr.startswith("_"):
            yield node.lineno, f"`{node.attr}` {why}"
        elif isinstance(node, nodes.Getitem) and _underscored(node.arg):
            yield node.lineno, f"`[{node.arg.value!r}]` {why}"  # type: ignore[attr-defined]
        elif (
            isinstance(node, nodes.Filter)
            and node.name == "attr"
            and node.args
            and _underscored(node.args[0])
        ):
            yield node.lineno, f"`attr({node.args[0].value!r})` {why}"  # type: ignore[attr-defined]
        elif (
            isinstance(node, nodes.Const)
            and isinstance(node.value, str)
            and _FORMAT_INTERNAL.search(node.value)
        ):
            yield node.lineno, f"the format string {node.value!r} reads an attribute that {why}"


_FORMAT_INTERNAL = re.compile(r"\{[^{}]*[.\[]_")


def _underscored(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Const) and isinstance(node.value, str) and node.value.startswith("_")
