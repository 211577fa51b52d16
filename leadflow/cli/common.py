"""What every command shares: the Typer app, the consoles, --format, loading content, the database."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from leadflow.content.loader import Content, load_content
from leadflow.content.yamlfile import ContentError, ContentErrors
from leadflow.platform.settings import get_settings

if TYPE_CHECKING:
    from leadflow.platform.store import Database


console = Console(emoji=False)
errors = Console(stderr=True, emoji=False)


class Output(StrEnum):
    table = "table"
    json = "json"


# Every command that reports takes it: a table for people, or JSON on stdout for programs (progress and
# warnings always go to stderr).
FormatOption = Annotated[
    Output, typer.Option("--format", help="table, or json (on stdout; progress and warnings on stderr).")
]


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def configure_logs() -> None:
    from leadflow.platform.logs import configure_logging

    configure_logging()


def content_or_exit(directory: Path) -> Content:
    try:
        return load_content(directory)
    except (ContentError, ContentErrors) as problem:
        for line in str(problem).splitlines():
            errors.print(line, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def minute(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "–"


def print_warnings(content: Content) -> None:
    for warning in content.warnings:
        errors.print(str(warning), highlight=False, markup=False, soft_wrap=True)


def problems_as_json(found: list[ContentError]) -> list[dict[str, Any]]:
    return [{"file": str(error.path), "line": error.line, "reason": error.reason} for error in found]


def load_checked_content(directory: Path) -> Content:
    content_or_exit(directory)
    return load_content(directory)


def database() -> Database:
    from leadflow.platform.store import Database

    settings = get_settings()
    return Database(settings.resolved_database_url, address_key=settings.resolved_secret_key)
