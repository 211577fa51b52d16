"""The template library: loading, checking and rendering a channel's templates, block by block."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateError, nodes
from jinja2.exceptions import SecurityError, TemplateNotFound, TemplateSyntaxError
from jinja2.loaders import split_template_path

from leadflow.content.sandbox import BoundedSandbox, render_block, template_line
from leadflow.content.templates.plain_text import html_to_text
from leadflow.content.templates.sample import sample_context
from leadflow.content.templates.variables import (
    JINJA_NAMES,
    VariableUse,
    _chain,
    _collect_uses,
    _loop_back,
    _names_defined,
    _references,
    internals_read,
)
from leadflow.content.yamlfile import not_text
from leadflow.platform.errors import LeadflowError

# channel: (required blocks, optional blocks)
BLOCKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "email": (("subject", "html"), ("text",)),
    "sms": (("body",), ()),
    "push": (("title", "body"), ("url",)),
}
EMAIL_BLOCKS = BLOCKS["email"][0]
REQUIRED_BLOCKS = {channel: blocks[0] for channel, blocks in BLOCKS.items()}
SMS_MAX_LENGTH = 1600  # Twilio refuses longer bodies


class TemplateRenderError(LeadflowError):
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


def _relative(channel: str, name: str) -> str:
    return f"{channel}/{name}.j2"


def _block(template: Template, block: str, context: dict[str, Any]) -> str:
    return render_block(template, block, context)


def _shown(path: Path, directory: Path) -> str:
    return str(path.relative_to(directory)) if path.is_relative_to(directory) else str(path)
