"""Docs that cannot rot: what README.md and docs/*.md show is checked against the code.

- every `leadflow …` command line they name (in code blocks, tables and inline code) exists, with the options
  shown (parsed with the CLI's own click command);
- every row of a settings table names a setting of leadflow/platform/settings.py with the default it has, every
  setting has a row, and every `LEADFLOW_…` name they mention is read somewhere;
- every relative link points at a file and heading that exist;
- the README's curl examples run against the real API (served over HTTP, with a worker, Temporal and an SMTP
  server) and answer 2xx with JSON.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic import BaseModel

from leadflow.cli import app
from leadflow.cli.dev import DEV_KEY
from leadflow.http.app import create_app
from leadflow.platform.settings import PROJECT_ROOT, Settings
from tests.support.browser import serving
from tests.support.helpers import API_KEY, Stack, channel_settings, free_port

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console"}


@dataclass(frozen=True)
class Snippet:
    """A piece of a doc: where it is, and its text."""

    path: Path
    line: int
    text: str

    def where(self) -> str:
        return f"{self.path.relative_to(PROJECT_ROOT)}:{self.line}"


def code_blocks(path: Path) -> Iterator[tuple[str, list[Snippet]]]:
    """Each fenced block of `path`: its language and its lines."""
    language: str | None = None
    lines: list[Snippet] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and language is None:
            language, lines = fence.group(1), []
        elif fence and language is not None:
            yield language, lines
            language = None
        elif language is not None:
            lines.append(Snippet(path, number, line))


def prose(path: Path) -> Iterator[Snippet]:
    """The lines of `path` outside fenced blocks (tables included)."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"^\s*```", line):
            fenced = not fenced
        elif not fenced:
            yield Snippet(path, number, line)


def shell_commands(lines: list[Snippet]) -> Iterator[Snippet]:
    """The logical lines of a shell block (continuation lines joined), comments dropped."""
    pending: Snippet | None = None
    for line in lines:
        text = re.sub(r"(^|\s)#.*$", "", line.text).rstrip()
        if pending is not None:
            pending = Snippet(pending.path, pending.line, pending.text + " " + text.strip())
        else:
            pending = Snippet(line.path, line.line, text)
        if pending.text.endswith("\\"):
            pending = Snippet(pending.path, pending.line, pending.text[:-1].rstrip())
            continue
        if pending.text.strip():
            yield pending
        pending = None


# --- (a) every `leadflow …` command shown exists, with its options ---------------------------------------

SHELL_INVOCATION = re.compile(r"(?:^|[\s;(])(?:[\w.~/-]*/)?leadflow(?=\s|$)(.*)")
SHELL_OPERATOR = re.compile(r"\s(?:&&|\|\||\||;|&|>|2>)(?:\s|$).*$|\s&$")


def leadflow_commands() -> list[Snippet]:
    """Every `leadflow …` invocation in the docs: in shell blocks, and in inline code (tables and prose)."""
    found = []
    for path in DOCS:
        for language, lines in code_blocks(path):
            if language not in SHELL_BLOCKS:
                continue
            for command in shell_commands(lines):
                match = SHELL_INVOCATION.search(command.text)
                if match:
                    arguments = SHELL_OPERATOR.sub("", match.group(1)).strip()
                    found.append(Snippet(path, command.line, f"leadflow {arguments}".strip()))
        for line in prose(path):
            for span in re.findall(r"`([^`]+)`", line.text):
                span = span.replace("\\|", "|")  # a pipe escaped inside a table cell
                if span == "leadflow" or span.startswith("leadflow "):
                    found.append(Snippet(path, line.line, span))
    return found


def choices_of(parameter: Any) -> list[str] | None:
    for kind in (getattr(parameter, "bare_type", None), getattr(parameter, "type", None)):
        choices = getattr(kind, "choices", None)
        if choices:
            return [str(getattr(choice, "value", choice)) for choice in choices]
    return None


def command_problems(command_line: str) -> list[str]:
    """What is wrong with `leadflow …` as shown: an unknown command, an option the command does not take,
    a value not among an option's choices. Placeholders (NAME, FILE) and optional parts ([…]) are fine."""
    try:
        tokens = shlex.split(command_line)
    except ValueError:
        tokens = command_line.split()
    tokens = [token.strip("[]") for token in tokens[1:]]
    command: Any = typer.main.get_command(app)
    path = ["leadflow"]
    position = 0
    while hasattr(command, "commands") and position < len(tokens):
        token = tokens[position]
        if token in command.commands:
            command = command.commands[token]
            path.append(token)
            position += 1
        elif re.fullmatch(r"[a-z][a-z0-9-]*", token):
            known = ", ".join(sorted(command.commands))
            return [f"`{' '.join(path)} {token}`: no such command (known: {known})"]
        else:
            break
    options = {"--help"}
    by_name: dict[str, Any] = {}
    for parameter in command.params:
        for name in [*parameter.opts, *parameter.secondary_opts]:
            if name.startswith("-"):
                options.add(name)
                by_name[name] = parameter
    problems = []
    for index in range(position, len(tokens)):
        token = tokens[index].rstrip(",.;:)")
        if not token.startswith("-") or token in ("-", "--"):
            continue
        name, _, inline_value = token.partition("=")
        if name not in options:
            accepted = ", ".join(sorted(options - {"--help"})) or "none"
            problems.append(f"`{' '.join(path)}` has no option {name} (it takes: {accepted})")
            continue
        choices = choices_of(by_name.get(name))
        shown = inline_value or (tokens[index + 1] if index + 1 < len(tokens) else "")
        if choices and shown and not shown.startswith("-") and not shown.isupper():
            for value in shown.split("|"):
                if value not in choices:
                    problems.append(f"`{' '.join(path)} {name}`: {value!r} is not one of {choices}")
    return problems


def test_every_leadflow_command_in_the_docs_exists_with_the_options_shown() -> None:
    commands = leadflow_commands()
    assert len(commands) > 40, f"found only {len(commands)} `leadflow …` commands: is the parser broken?"
    problems = [
        f"{snippet.where()}: {problem}" for snippet in commands for problem in command_problems(snippet.text)
    ]
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_unknown_commands_and_options() -> None:
    """The checker itself: what a stale doc line looks like is refused, what is right passes."""
    assert command_problems("leadflow report --since 30d --format json") == []
    assert command_problems("leadflow keys create NAME") == []
    assert command_problems("leadflow dev --no-demo") == []
    assert command_problems("leadflow keys destroy NAME")
    assert command_problems("leadflow rescore --batch 5")
    assert command_problems("leadflow db upgrade --to head")


# --- (b) the settings tables match leadflow/platform/settings.py -------------------------------------------------


def tables(path: Path) -> Iterator[tuple[list[str], list[tuple[Snippet, list[str]]]]]:
    """Each Markdown table outside code blocks: its header cells and its rows' cells."""
    header: list[str] | None = None
    rows: list[tuple[Snippet, list[str]]] = []
    for line in [*prose(path), Snippet(path, 0, "")]:
        if line.text.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.text.strip())[1:-1]]
            if header is None:
                header, rows = [cell.lower() for cell in cells], []
            elif not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                rows.append((line, cells))
        elif header is not None:
            yield header, rows
            header = None


def settings_rows() -> list[tuple[Snippet, list[str]]]:
    """The rows of every table headed `setting | default | …`."""
    return [
        row
        for path in DOCS
        for header, rows in tables(path)
        if header[:2] == ["setting", "default"]
        for row in rows
    ]


def default_of(field: str) -> Any:
    return Settings.model_fields[field].get_default(call_default_factory=True)


def renderings(value: Any) -> list[str]:
    """The ways a doc may show the default `value`, the plainest first."""
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, int):
        shown = [str(value), f"{value:,}"]
        for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
            if value % size == 0:
                shown.append(f"{value // size} {unit}")
        return shown
    if isinstance(value, float):
        return [f"{value:g}", repr(value)]
    if isinstance(value, Path):
        relative = value.relative_to(PROJECT_ROOT).as_posix()
        return ["./" if relative == "." else f"{relative}/"]
    if isinstance(value, list | dict):

        def plain(item: Any) -> Any:
            if isinstance(item, BaseModel):
                return item.model_dump(mode="json", exclude_none=True)
            if isinstance(item, dict):
                return {key: plain(inner) for key, inner in item.items()}
            return item

        return [json.dumps(plain(value))]
    return [str(value)]


def default_problems(name: str, shown: str) -> list[str]:
    field = name.removeprefix("LEADFLOW_").lower()
    if field not in Settings.model_fields:
        return [f"{name} is not a setting of leadflow/platform/settings.py"]
    value = default_of(field)
    if shown.startswith("empty"):
        return [] if value in ("", [], {}, None) else [f"{name}: shown empty, its default is {value!r}"]
    code = re.match(r"`([^`]*)`", shown)
    text = code.group(1) if code else shown
    if text not in renderings(value):
        return [f"{name}: default shown as {text!r}, the code's is {renderings(value)[0]!r}"]
    return []


def test_every_setting_in_the_settings_tables_exists_with_the_default_shown() -> None:
    rows = settings_rows()
    assert len(rows) > 30, f"found only {len(rows)} settings rows: is the parser broken?"
    problems, documented = [], set()
    for line, cells in rows:
        names = re.findall(r"`(LEADFLOW_[A-Z0-9_]+)`", cells[0])
        if not names:
            continue  # a limit that is not a setting (a fixed one, or sites.yaml's)
        shown = cells[1].split(" / ") if len(names) > 1 else [cells[1]]
        if len(shown) != len(names):
            problems.append(
                f"{line.where()}: {len(names)} settings but {len(shown)} defaults (split by ' / ')"
            )
            continue
        for name, default in zip(names, shown, strict=True):
            documented.add(name.removeprefix("LEADFLOW_").lower())
            problems += [f"{line.where()}: {problem}" for problem in default_problems(name, default.strip())]
    undocumented = sorted(set(Settings.model_fields) - documented)
    problems += [f"LEADFLOW_{field.upper()} has no row in a settings table" for field in undocumented]
    assert not problems, "\n".join(problems)


def test_every_leadflow_variable_the_docs_name_is_read_somewhere() -> None:
    """A setting renamed or removed leaves its old name in prose too: every `LEADFLOW_…` name is a setting or
    read from the environment by the project's code (tests and benches included)."""
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in ("leadflow", "activities", "workflows", "tests", "bench")
        for path in (PROJECT_ROOT / folder).rglob("*.py")
    )
    settings = {f"LEADFLOW_{field.upper()}" for field in Settings.model_fields}
    problems = []
    for path in DOCS:
        for line in prose(path):
            for name in re.findall(r"LEADFLOW_[A-Z0-9_]*[A-Z0-9*]", line.text):
                if name.endswith("*"):
                    known = any(setting.startswith(name[:-1]) for setting in settings)
                else:
                    known = name in settings or name in source
                if not known:
                    problems.append(f"{line.where()}: {name} is neither a setting nor read by the code")
    assert not problems, "\n".join(problems)


def test_the_settings_check_catches_a_wrong_default_or_name() -> None:
    assert default_problems("LEADFLOW_API_PORT", "`8000`") == []
    assert default_problems("LEADFLOW_MAX_BODY_BYTES", "1 MiB") == []
    assert default_problems("LEADFLOW_API_PORT", "`8080`")
    assert default_problems("LEADFLOW_API_PROT", "`8000`")
    assert default_problems("LEADFLOW_SMTP_URL", "empty")


# --- links ---------------------------------------------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of `path`."""
    found = set()
    for line in prose(path):
        heading = re.match(r"^#{1,6}\s+(.*)$", line.text)
        if heading:
            text = heading.group(1).strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def test_every_relative_link_points_at_a_file_and_heading_that_exist() -> None:
    problems = []
    for path in DOCS:
        for line in prose(path):
            for target in re.findall(r"\]\(([^)\s]+)\)", line.text):
                if re.match(r"^[a-z]+:", target):
                    continue  # http(s), mailto
                file, _, anchor = target.partition("#")
                linked = (path.parent / file).resolve() if file else path
                if not linked.exists():
                    problems.append(f"{line.where()}: {target}: no such file")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    problems.append(f"{line.where()}: {target}: no such heading in {linked.name}")
    assert not problems, "\n".join(problems)


def patch_ids() -> dict[str, str]:
    """Every `workflow.patched` id in the workflows, with the file it is in."""
    found = {}
    for path in sorted((PROJECT_ROOT / "workflows").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        constants = dict(re.findall(r'^([A-Z_]+) = "([a-z0-9-]+)"', text, flags=re.M))
        for used in re.findall(r"workflow\.patched\(([A-Z_]+)\)", text):
            found[constants[used]] = str(path.relative_to(PROJECT_ROOT))
    return found


def test_every_workflow_patch_is_in_the_patch_ledger() -> None:
    """docs/patches.md says of each patch when it came and when it may go: a new one gets its row."""
    ledger = (PROJECT_ROOT / "docs" / "patches.md").read_text(encoding="utf-8")
    ids = patch_ids()
    assert len(ids) >= 9  # the ids of December 2026
    missing = [f"{patch} ({path})" for patch, path in ids.items() if f"| `{patch}` | `{path}`" not in ledger]
    assert not missing, "no row in docs/patches.md for: " + ", ".join(missing)


# Not modules: the snippet's JavaScript file and API, the embedded database's file, example host names.
NOT_MODULES = {
    "leadflow.js",
    "leadflow.identify",
    "leadflow.track",
    "leadflow.consent",
    "leadflow.push.subscribe",
    "leadflow.db",
    "leadflow.localhost",
    "leadflow.example.com",
}


def test_every_code_path_and_module_the_docs_name_exists() -> None:
    """A file or folder the docs point at (`leadflow/scoring/score.py`, `tests/workflows/histories/`), and a
    module or one of its names (`leadflow.http.inputs.MAX_DEPTH`), exists: code that moves takes its docs
    along."""
    problems = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{path.relative_to(PROJECT_ROOT)}:{number}"
            for named in re.findall(
                r"(?<![\w./-])((?:leadflow|tests|workflows|activities)/[\w./*-]*\w/?)", line
            ):
                if "*" not in named and not (PROJECT_ROOT / named).exists():
                    problems.append(f"{where}: {named}: no such file or folder")
            for dotted in re.findall(r"(?<![\w./-])(leadflow\.[a-z_][\w.]*\w)(?![\w.(])", line):
                if dotted not in NOT_MODULES and not _resolves(dotted):
                    problems.append(f"{where}: {dotted}: no such module or name")
    assert not problems, "\n".join(problems)


def _resolves(dotted: str) -> bool:
    """`dotted` is a module, or a name in the longest module it starts with."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(found, name):
                return False
            found = getattr(found, name)
        return True
    return False


def test_the_code_path_check_catches_a_moved_module() -> None:
    assert _resolves("leadflow.http.inputs.MAX_DEPTH")
    assert not _resolves("leadflow.pacing.paced_until")
    assert not _resolves("leadflow.http.inputs.NO_SUCH_NAME")


# --- (c) the README's curl examples, against the real API -----------------------------------------------


def readme_curl_script() -> tuple[list[str], int]:
    """The README's shell blocks that call curl, as bash lines (variables kept, `leadflow` commands left
    out), and how many curl calls they make."""
    lines, calls = [], 0
    for language, block in code_blocks(PROJECT_ROOT / "README.md"):
        if language not in SHELL_BLOCKS or not any("curl " in line.text for line in block):
            continue
        for command in shell_commands(block):
            text = command.text.strip()
            if text.startswith("curl "):
                calls += 1
                lines.append(text)
            elif re.match(r"^[A-Z_][A-Z0-9_]*=", text):
                lines.append(text)
    return lines, calls


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {**channel_settings(), "api_keys": [API_KEY, DEV_KEY]}  # the key `leadflow dev` stores


async def test_the_readme_curl_examples_answer_2xx_with_json(stack: Stack) -> None:
    lines, calls = readme_curl_script()
    assert calls >= 3, f"the README shows {calls} curl calls; the tour has more"
    port = free_port()
    script = []
    for line in lines:
        if line.startswith("curl "):
            pointed = re.sub(r"\b(?:localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{port}", line)
            assert pointed != line, f"a README curl call is not aimed at the dev API on port 8000: {line}"
            line = pointed
        script.append(line)
    # Each call's status and content type follow its body, so every call is checked, not only the last.
    wrapper = "curl() { command curl -sS --max-time 20 -w '\\n@@ %{http_code} %{content_type}\\n' \"$@\"; }"
    app_ = create_app(stack.runtime, on_events_accepted=stack.router.wake)
    async with serving(app_, port):
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            "\n".join(["set -e", wrapper, *script]),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    answers = re.findall(r"(.*?)\n@@ (\d{3}) (\S*)\n", out.decode(), flags=re.DOTALL)
    assert len(answers) == calls, out.decode()
    for (body, status, content_type), call in zip(
        answers, [x for x in lines if x.startswith("curl")], strict=True
    ):
        assert status.startswith("2"), f"{call}\n-> {status} {body}"
        assert content_type.startswith("application/json"), f"{call}\n-> {content_type}"
        assert isinstance(json.loads(body), dict), f"{call}\n-> {body}"
