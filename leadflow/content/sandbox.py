"""The sandbox marketer templates render in: Jinja2's immutable sandbox (no attribute starting with `_`, so no
way to Python internals; no mutation of lists and dicts), plus bounds on the work one render may do, so a
template, mistaken or hostile, can neither reach Python nor stall or exhaust the worker that renders it:

- a budget of MAX_STEPS per rendered block: every loop iteration and every call (macros, methods, `self.x()`,
  `caller()`) spends a step, and every value built spends one more per thousand characters or items, so
  nested loops over `range(100000)` stop at the budget instead of running 10^10 times;
- no value a template builds may exceed MAX_LENGTH characters or items, checked before the allocation where
  an operation multiplies its input (`'x' * 10**9`, `|center(10**9)`, `'%09999999d' % 1`, `'{:>99999999}'`,
  `replace`, `join`, `sum`, `indent`, `wordwrap`) and after it where it can at most double it (`~`, `+`);
  `**` stops at MAX_INT_BITS; a rendered block at MAX_OUTPUT characters;
- `range` stops at MAX_LENGTH numbers; no recursive `{% for %}` loops and no `lipsum` (neither would
  spend the budget).

A template over a bound raises TemplateLimitExceeded (a Jinja SecurityError) naming it. `render_block` turns
every other failure inside a render into a Jinja error as well, so callers handle one kind of error, with
the file and line it came from (`template_line`), and a worker never crashes on a template.
"""

from __future__ import annotations

import math
import re
import string
import types
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

from jinja2 import Template, nodes, pass_context
from jinja2.exceptions import SecurityError, TemplateError, TemplateRuntimeError, TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_STEPS = 20_000  # per rendered block: loop iterations and calls, plus one per 1,000 characters built
MAX_LENGTH = 100_000  # characters of a string, items of a list, widths and counts passed to calls
MAX_OUTPUT = 1_000_000  # characters of one rendered block
MAX_INT_BITS = 4_096  # about 1,200 digits
CHARACTERS_PER_STEP = 1_000
SIZE_ARGUMENTS = frozenset({"center", "indent", "wordwrap", "truncate", "batch", "slice"})  # filters
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")
_SIZED = (str, bytes, list, tuple, dict, set)


class TemplateLimitExceeded(SecurityError):
    """A template asked for more work, or a larger value, than one message may take."""


@dataclass
class _Budget:
    steps: int = MAX_STEPS

    def spend(self, steps: int) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise TemplateLimitExceeded(
                f"the template does more than {MAX_STEPS} steps of work (loop iterations, calls, thousands of "
                "characters built): simplify its loops"
            )


_budget: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _spend(steps: int = 1) -> None:
    budget = _budget.get()
    if budget is None:  # a loop or a call outside render_block: nothing would bound it
        raise TemplateRuntimeError("message templates render through leadflow.content.sandbox.render_block")
    budget.spend(steps)


def _sized(value: Any, what: str) -> Any:
    """`value`, once it is known to be within the bounds; building it spends its share of the budget."""
    if isinstance(value, _SIZED):
        if len(value) > MAX_LENGTH:
            raise TemplateLimitExceeded(
                f"{what} makes a value of {len(value)} characters or items (at most {MAX_LENGTH})"
            )
        budget = _budget.get()
        if budget is not None:  # None: Jinja folding a constant while it compiles, bounded by the checks
            budget.spend(len(value) // CHARACTERS_PER_STEP)
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitExceeded(f"{what} makes a number over {MAX_INT_BITS} bits")
    return value


def _too_long(what: str) -> TemplateLimitExceeded:
    return TemplateLimitExceeded(f"{what} would make a value over {MAX_LENGTH} characters or items")


def _numbers_bounded(what: str, arguments: Iterable[Any]) -> None:
    for argument in arguments:
        if isinstance(argument, int) and abs(argument) > MAX_LENGTH:
            raise TemplateLimitExceeded(f"{what} is given {argument}: widths and counts stop at {MAX_LENGTH}")


def _format_widths_bounded(what: str, template: str, braces: bool) -> None:
    """Widths and precisions in a format string (`%09999d`, `{:>99999}`) stop at MAX_LENGTH."""
    if braces:
        try:
            specs = [spec or "" for _, _, spec, _ in string.Formatter().parse(template)]
        except ValueError:
            return  # malformed: formatting it fails with its own error
        if any("{" in spec for spec in specs):
            raise TemplateLimitExceeded(f"{what}: nested format fields ({{:{{}}}}) are not allowed")
    else:
        specs = [match[0] for match in _PERCENT_SPEC.finditer(template)]
        if any("*" in spec for spec in specs):
            raise TemplateLimitExceeded(f"{what}: widths taken from the arguments (%*d) are not allowed")
    if any(int(number) > MAX_LENGTH for spec in specs for number in _NUMBER.findall(spec)):
        raise TemplateLimitExceeded(f"{what}: a width or precision over {MAX_LENGTH}")


def _replace_bounded(what: str, text: str, old: Any, new: Any, count: Any = None) -> None:
    old, new = str(old), str(new)
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    if len(text) + occurrences * (len(new) - len(old)) > MAX_LENGTH:
        raise _too_long(what)


def _bounded_list(iterable: Iterable[Any], what: str) -> list[Any]:
    """The items of `iterable`, refused once they add up to more than MAX_LENGTH characters or items."""
    items, total = [], 0
    for item in iterable:
        total += len(item) if isinstance(item, _SIZED) else 1
        if total > MAX_LENGTH:
            raise _too_long(what)
        items.append(item)
    return items


def _guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """The filter `function` with its result bounded, its width and count arguments bounded, and the filters
    that multiply their input (replace, join, sum, indent, format, wordwrap) checked before they run."""
    passes_first = hasattr(function, "jinja_pass_arg")  # a context, eval context or environment comes first
    what = f"the {name} filter"

    @wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        head, (value, *rest) = args[: int(passes_first)], args[int(passes_first) :] or (None,)
        if name in SIZE_ARGUMENTS:
            _numbers_bounded(what, [*rest, *kwargs.values()])
        if name == "replace" and isinstance(value, str) and len(rest) >= 2:
            _replace_bounded(what, value, *rest[:3])
        elif name in ("join", "sum") and isinstance(value, Iterable) and not isinstance(value, str | dict):
            value = _bounded_list(value, what)
        elif name == "indent" and isinstance(value, str):
            width = rest[0] if rest else kwargs.get("width", 4)
            prefix = len(width) if isinstance(width, str) else int(width)
            if prefix * (value.count("\n") + 1) + len(value) > MAX_LENGTH:
                raise _too_long(what)
        elif name == "format" and isinstance(value, str):
            _format_widths_bounded(what, value, braces=False)
        elif name == "wordwrap" and isinstance(value, str):
            width = max(int(rest[0] if rest else kwargs.get("width", 79)), 1)
            wrap = str((rest[2] if len(rest) > 2 else kwargs.get("wrapstring")) or "\n")
            if len(wrap) * (len(value) // width + value.count("\n") + 1) + len(value) > MAX_LENGTH:
                raise _too_long(what)
        return _sized(function(*head, value, *rest, **kwargs), what)

    return guarded


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:  # more numbers than a machine word counts
        size = MAX_LENGTH + 1
    if size > MAX_LENGTH:
        raise TemplateLimitExceeded(f"range{args} has more than {MAX_LENGTH} numbers")
    return numbers


@pass_context  # never run while compiling: Jinja folds no filter that takes the context
def _counted(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    """What every `{% for %}` iterates through: each iteration spends a step."""
    for item in iterable:
        _spend()
        yield item


@pass_context
def _concatenated(context: Context, text: str) -> str:
    """What every `~` makes, bounded after the fact: it at most doubles values already bounded."""
    return _sized(text, "`~`")  # the same object: escaped HTML (Markup) stays escaped


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with the bounds above."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range
        self.filters = {name: _guard_filter(name, function) for name, function in self.filters.items()}
        # Filter names no template can write: they start with "_" (and the lint refuses such names).
        self.filters["_counted"] = _counted
        self.filters["_concatenated"] = _concatenated

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """The template's syntax tree, with every loop counted and every `~` bounded."""
        tree = super()._parse(source, name, filename)
        for assigned in tree.find_all(nodes.NSRef):
            if assigned.attr.startswith("_"):  # `{% set ns.__class__ = … %}`: a name Python reserves
                raise TemplateSyntaxError(
                    f"`{assigned.attr}` is a Python internal (a name starting with _): templates may not set it",
                    assigned.lineno,
                    name,
                    filename,
                )
        for loop in tree.find_all(nodes.For):
            if loop.recursive:
                raise TemplateSyntaxError(
                    "recursive loops are not allowed in message templates", loop.lineno, name, filename
                )
            loop.iter = nodes.Filter(loop.iter, "_counted", [], [], None, None, lineno=loop.lineno)
        for parent in list(tree.find_all(nodes.Node)):
            for field in parent.fields:
                child = getattr(parent, field)
                if isinstance(child, nodes.Concat):
                    setattr(parent, field, _bounded_concat(child))
                elif isinstance(child, list) and any(isinstance(item, nodes.Concat) for item in child):
                    setattr(parent, field, [_bounded_concat(item) for item in child])
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        what = f"`{operator}`"
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, _SIZED)
                    and isinstance(times, int)
                    and len(sequence) * times > MAX_LENGTH
                ):
                    raise _too_long(what)
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise TemplateLimitExceeded(f"{what} would make a number over {MAX_INT_BITS} bits")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right > 0 and right * math.log2(abs(left)) > MAX_INT_BITS:
                raise TemplateLimitExceeded(f"{what} would make a number over {MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _format_widths_bounded(what, left, braces=False)
        return _sized(super().call_binop(context, operator, left, right), what)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        what = f"calling {getattr(__obj, '__name__', type(__obj).__name__)}"
        # The sandbox hands out str.format wrapped (to check the fields it reads); the string is underneath.
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        method = getattr(__obj, "__name__", "")
        if isinstance(owner, str) and method in ("format", "format_map"):
            _format_widths_bounded(what, owner, braces=True)  # its arguments are values, not widths
        elif isinstance(__obj, types.BuiltinFunctionType):  # str.center(10**9), (1).to_bytes(10**9), …
            _numbers_bounded(what, [*args, *kwargs.values()])
            if isinstance(owner, str) and method == "replace" and len(args) >= 2:
                _replace_bounded(what, owner, *args[:3])
            elif isinstance(owner, str) and method == "join" and args:
                args = (_bounded_list(args[0], what), *args[1:])
        return _sized(super().call(__context, __obj, *args, **kwargs), what)


def _bounded_concat(node: nodes.Node) -> nodes.Node:
    if not isinstance(node, nodes.Concat):
        return node
    return nodes.Filter(node, "_concatenated", [], [], None, None, lineno=node.lineno)


def render_block(template: Template, block: str, context: dict[str, Any]) -> str:
    """One block of `template` rendered within the bounds. Whatever goes wrong is a TemplateError (a
    RecursionError or an IndexError from a method included), raised from where it happened."""
    token = _budget.set(_Budget())
    try:
        pieces: list[str] = []
        length = 0
        for piece in template.blocks[block](template.new_context(context)):
            length += len(piece)
            if length > MAX_OUTPUT:
                raise TemplateLimitExceeded(f"the {block} block renders to over {MAX_OUTPUT} characters")
            pieces.append(piece)
        return "".join(pieces)
    except TemplateError:
        raise
    except (RecursionError, MemoryError) as error:
        raise TemplateLimitExceeded(f"the template needs too much ({type(error).__name__})") from error
    except Exception as error:
        raise TemplateRuntimeError(f"{type(error).__name__}: {error}") from error
    finally:
        _budget.reset(token)


def template_line(error: BaseException) -> tuple[Path, int] | None:
    """The template file and line `error` came from: the innermost template frame of its traceback, or of
    the error it was raised from."""
    found = None
    for raised in (error, error.__cause__):
        traceback = raised.__traceback__ if raised else None
        while traceback is not None:
            template = traceback.tb_frame.f_globals.get("__jinja_template__")
            if template is not None and template.filename:
                found = Path(template.filename), template.get_corresponding_lineno(traceback.tb_lineno)
            traceback = traceback.tb_next
    if found is None and isinstance(error, TemplateSyntaxError) and error.filename and error.lineno:
        found = Path(error.filename), error.lineno
    return found
