"""Message templates: Jinja2 in a bounded immutable sandbox (leadflow.content.sandbox) with StrictUndefined.

A template is one file per channel, `templates/CHANNEL/NAME.j2`, made of blocks:
- email: `subject`, `html` and optionally `text` (a plain-text part is made from the HTML when absent);
- sms: `body` (at most 1,600 characters);
- push: `title`, `body` and optionally `url`.
Shared pieces come in with `{% include %}` inside a block. The HTML block is autoescaped; the rest is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateError, nodes
from jinja2.exceptions import SecurityError, TemplateNotFound, TemplateSyntaxError
from jinja2.loaders import split_template_path

from leadflow.content.sandbox import BoundedSandbox, render_block, template_line
from leadflow.content.yamlfile import not_text

# channel: (required blocks, optional blocks)
BLOCKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "email": (("subject", "html"), ("text",)),
    "sms": (("body",), ()),
    "push": (("title", "body"), ("url",)),
}
EMAIL_BLOCKS = BLOCKS["email"][0]
REQUIRED_BLOCKS = {channel: blocks[0] for channel, blocks in BLOCKS.items()}
SMS_MAX_LENGTH = 1600  # Twilio refuses longer bodies


class TemplateRenderError(Exception):
    """A template that cannot render for this lead: the marketer must fix it; retrying will not help."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class RenderedSms:
    body: str


@dataclass(frozen=True)
class RenderedPush:
    title: str
    body: str
    url: str = ""


Problem = tuple[Path, int | None, str]  # file, line, reason
# Names a template may read that are not the message's variables: Jinja's own (`loop`, `caller`, `self`…).
JINJA_NAMES = frozenset({"loop", "caller", "self", "super", "varargs", "kwargs"})
REFERENCES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


class UnreadableTemplate(TemplateSyntaxError):
    """A template file that is not text."""


def compile_problem(error: TemplateSyntaxError) -> str:
    return (
        error.message or "" if isinstance(error, UnreadableTemplate) else f"does not compile: {error.message}"
    )


class _TextLoader(FileSystemLoader):
    """Template files as UTF-8 text; a file that is not is a syntax error at its line, like any other
    mistake in a template (not a UnicodeDecodeError escaping the render)."""

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Any]:
        try:
            source, filename, uptodate = super().get_source(environment, template)
            if "\0" not in source:
                return source, filename, uptodate
        except UnicodeDecodeError:
            pass
        path = self.path_of(template)
        line, reason = not_text(path.read_bytes()) or (1, "is not text")
        raise UnreadableTemplate(reason, line, template, str(path))

    def path_of(self, template: str) -> Path:
        return Path(self.searchpath[0], *split_template_path(template))


class TemplateLibrary:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        loader = _TextLoader(directory)
        self._loader = loader
        self._trees: dict[str, nodes.Template | TemplateError] = {}
        self._text = BoundedSandbox(loader=loader, undefined=StrictUndefined, autoescape=False)
        self._html = BoundedSandbox(loader=loader, undefined=StrictUndefined, autoescape=True)

    def names(self, channel: str) -> list[str]:
        return sorted(path.stem for path in (self.directory / channel).glob("[!_]*.j2") if path.is_file())

    def problem_with(self, channel: str, name: str) -> str | None:
        """Why `name` cannot be used on `channel`, or None when it can."""
        problem = self.problem_at(channel, name)
        if problem is None:
            return None
        path, line, reason = problem
        return reason if not path.exists() else f"template {path}{f':{line}' if line else ''} {reason}"

    def problem_at(self, channel: str, name: str) -> tuple[Path, int | None, str] | None:
        """(file, line, reason) when `name` cannot be used on `channel`, else None."""
        path = self.directory / channel / f"{name}.j2"
        if not path.exists():
            known = ", ".join(self.names(channel)) or "none"
            return path, None, f"no {channel} template {name!r} (expected {path}; known: {known})"
        try:
            template = self._text.get_template(_relative(channel, name))
        except TemplateSyntaxError as error:
            return path, error.lineno, compile_problem(error)
        except TemplateError as error:
            return path, None, f"does not compile: {error}"
        missing = [block for block in REQUIRED_BLOCKS[channel] if block not in template.blocks]
        if missing:
            blocks = " ".join(f"{{% block {block} %}}…{{% endblock %}}" for block in missing)
            return path, 1, f"lacks the block(s) {', '.join(missing)}: add {blocks}"
        return None

    def render_email(self, name: str, context: dict[str, Any]) -> RenderedEmail:
        relative = _relative("email", name)
        try:
            text_template = self._text.get_template(relative)
            subject = " ".join(_block(text_template, "subject", context).split())
            html = _block(self._html.get_template(relative), "html", context).strip()
            text = (
                _block(text_template, "text", context).strip()
                if "text" in text_template.blocks
                else html_to_text(html)
            )
        except TemplateError as error:
            raise TemplateRenderError(self._refusal("email", name, error)) from error
        return RenderedEmail(subject=subject, text=text, html=html)

    def render(self, channel: str, name: str, context: dict[str, Any]) -> dict[str, str]:
        """Every block of a template, rendered: what `leadflow preview` shows and SMS / push would send."""
        if channel == "email":
            email = self.render_email(name, context)
            return {"subject": email.subject, "text": email.text, "html": email.html}
        try:
            template = self._text.get_template(_relative(channel, name))
            required, optional = BLOCKS[channel]
            return {
                block: " ".join(_block(template, block, context).split())
                for block in required + optional
                if block in template.blocks
            }
        except TemplateError as error:
            raise TemplateRenderError(self._refusal(channel, name, error)) from error

    def render_sms(self, name: str, context: dict[str, Any]) -> RenderedSms:
        try:
            template = self._text.get_template(_relative("sms", name))
            body = _block(template, "body", context).strip()
        except TemplateError as error:
            raise TemplateRenderError(self._refusal("sms", name, error)) from error
        if not body or len(body) > SMS_MAX_LENGTH:
            raise TemplateRenderError(
                f"template sms/{name}: the body is {len(body)} characters; it must be 1 to {SMS_MAX_LENGTH}"
            )
        return RenderedSms(body)

    def render_push(self, name: str, context: dict[str, Any]) -> RenderedPush:
        try:
            template = self._text.get_template(_relative("push", name))
            title, body = (" ".join(_block(template, b, context).split()) for b in ("title", "body"))
            url = _block(template, "url", context).strip() if "url" in template.blocks else ""
        except TemplateError as error:
            raise TemplateRenderError(self._refusal("push", name, error)) from error
        if url and not url.startswith(("https://", "http://", "/")):
            raise TemplateRenderError(f"template push/{name}: url {url!r} is not a web address")
        return RenderedPush(title, body, url)

    def _refusal(self, channel: str, name: str, error: TemplateError) -> str:
        """Why `channel/name` did not render, with the file and line where it failed when known."""
        where = template_line(error)
        if where is None:
            return f"template {channel}/{name}: {error}"
        path, line = where
        return f"template {channel}/{name} ({_shown(path, self.directory)}:{line}): {error}"

    def sandbox_problems(self, channel: str, name: str) -> list[Problem]:
        """(file, line, reason) for what the sandbox refuses in `channel/name`: reads of Python internals
        anywhere in it, and what a render for a sample lead hits (a refused call, a bound on work or size)."""
        path = self.directory / channel / f"{name}.j2"
        tree = self._tree(_relative(channel, name))
        if tree is None:
            return []  # does not compile: problem_at says so
        problems: list[Problem] = [(path, line, why) for line, why in internals_read(tree)]
        for include in tree.find_all(nodes.Include):  # shared pieces (`_footer.html.j2`) are read as well
            piece = include.template.value if isinstance(include.template, nodes.Const) else None
            if isinstance(piece, str) and (partial := self._tree(piece)):
                included = self._loader.path_of(piece)
                problems.extend((included, line, why) for line, why in internals_read(partial))
        try:
            template = self._text.get_template(_relative(channel, name))
        except TemplateError:
            return problems  # does not compile: problem_at says so
        for block in template.blocks:
            try:
                render_block(template, block, sample_context())
            except SecurityError as refused:
                where = template_line(refused)
                problems.append(
                    (where[0], where[1], f"the sandbox refuses it: {refused}")
                    if where
                    else (path, None, f"the sandbox refuses the {block} block: {refused}")
                )
            except TemplateError:
                pass  # unknown variables and the like: the lint of the sequences that send it explains them
        return problems

    def variables_used(self, channel: str, name: str) -> list[VariableUse]:
        """Each variable a template reads (`lead.first_name`, `event.properties.title`, `unsubscribe_url`),
        with its line and whether it is guarded (`| default`, `is defined`), included templates too."""
        return self._variables_used(_relative(channel, name), channel, set())

    def _variables_used(self, relative: str, channel: str, seen: set[str]) -> list[VariableUse]:
        seen.add(relative)
        tree = self._tree(relative)
        if tree is None:
            return []  # does not compile: reported at its own file and line
        guarded = {
            chain
            for node in tree.find_all(nodes.Test)
            if node.name in ("defined", "undefined") and (chain := _chain(node.node)) is not None
        }
        uses: list[VariableUse] = []
        _collect_uses(tree, guarded, uses, defaulted=False)
        local = _names_defined(tree) | set(self._text.globals) | JINJA_NAMES
        uses = [use for use in uses if use.variable not in local]
        for node in tree.find_all(nodes.Include):
            included = node.template.value if isinstance(node.template, nodes.Const) else None
            if isinstance(included, str) and included.startswith(f"{channel}/") and included not in seen:
                uses.extend(self._variables_used(included, channel, seen))
        return uses

    def _tree(self, relative: str) -> nodes.Template | None:
        """The syntax tree of a template file, or None when it is missing or does not compile."""
        parsed = self._parsed(relative)
        return None if isinstance(parsed, TemplateError) else parsed

    def _parsed(self, relative: str) -> nodes.Template | TemplateError:
        """The syntax tree of a template file, or why there is none; parsed once (the checks read it often)."""
        if relative not in self._trees:
            try:
                source, filename, _ = self._loader.get_source(self._text, relative)
                self._trees[relative] = self._text.parse(source, relative, filename)
            except TemplateError as error:
                self._trees[relative] = error
        return self._trees[relative]

    def file_problems(self) -> list[Problem]:
        """Every template file, shared pieces (`_footer.html.j2`) included, compiles, and every template it
        includes, imports or extends exists and does not lead back to it."""
        problems: list[Problem] = []
        references: dict[str, list[tuple[int, str, list[Any]]]] = {}
        for channel in BLOCKS:
            for path in sorted((self.directory / channel).glob("*.j2")):
                relative = f"{channel}/{path.name}"
                tree = self._parsed(relative)
                if isinstance(tree, nodes.Template):
                    references[relative] = list(_references(tree))
                elif not path.is_file():
                    problems.append(
                        (path, None, "is a folder, not a template file: move it out, or rename it")
                    )
                elif isinstance(tree, TemplateSyntaxError) and path.name.startswith("_"):
                    problems.append((path, tree.lineno, compile_problem(tree)))  # messages: see problem_at
        known = ", ".join(name for name in references if name.partition("/")[2].startswith("_")) or "none"
        for relative, found in references.items():
            path = self._loader.path_of(relative)
            for line, verb, names in found:
                if not any(self._exists(name) for name in names):
                    problems.append(
                        (
                            path,
                            line,
                            f"{verb} {' or '.join(map(repr, names))}, which does not exist: name a file under "
                            f"{self.directory} as CHANNEL/FILE (shared pieces: {known})",
                        )
                    )
                elif loop := _loop_back(relative, names, references):
                    problems.append(
                        (
                            path,
                            line,
                            f"{verb} {' → '.join(loop)}, which leads back to it: remove the {verb[:-1]}",
                        )
                    )
        return problems

    def _exists(self, relative: Any) -> bool:
        if not isinstance(relative, str):
            return False
        try:
            return self._loader.path_of(relative).is_file()
        except TemplateNotFound:  # `..` in the name: outside the templates folder
            return False


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


def sample_context() -> dict[str, Any]:
    """A lead with every field leads are known to have, for trying a template out."""
    lead = _SampleLead(
        id=1,
        email="ada@acme.test",
        phone="+33612345678",
        stage="lead",
        score=42,
        company="Acme",
        first_name="Ada",
        last_name="Lovelace",
        job_title="CTO",
        industry="software",
        company_size=250,
        country="FR",
        timezone="Europe/Paris",
        utm_source="newsletter",
        ebook_title="The Nurture Playbook",
    )
    return {"lead": lead, "unsubscribe_url": "https://leadflow.example/u/sample"}


class _SampleLead(dict[str, Any]):
    """A sample lead has every property: one it lacks reads as empty text, so trying a template goes on."""

    def __missing__(self, key: str) -> str:
        return ""


def _relative(channel: str, name: str) -> str:
    return f"{channel}/{name}.j2"


def _block(template: Template, block: str, context: dict[str, Any]) -> str:
    return render_block(template, block, context)


def _shown(path: Path, directory: Path) -> str:
    return str(path.relative_to(directory)) if path.is_relative_to(directory) else str(path)


class _TextExtractor(HTMLParser):
    _BREAKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "table"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._href: str | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head"):
            self._skip += 1
        if tag in self._BREAKS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head"):
            self._skip -= 1
        if tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text part for an HTML email: paragraphs kept, links written out."""
    extractor = _TextExtractor()
    extractor.feed(html)
    lines = (line.strip() for line in "".join(extractor.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
