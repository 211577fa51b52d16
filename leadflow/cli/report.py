"""`leadflow report`: the funnel, sequences, hand-off and scoring health for a period."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from leadflow.cli.common import console, database, errors, print_json


def report(
    since: Annotated[str, typer.Option(help="The period: 48h, 30d, 12w or all.")] = "30d",
    output: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """The funnel, sequence performance per step, the hand-off to sales and scoring health for a period."""
    import csv
    import sys

    from leadflow.platform import clock
    from leadflow.reports import Period, build_report, tables

    if output not in ("table", "json", "csv"):
        errors.print(f"--format {output!r}: expected table, json or csv")
        raise typer.Exit(2)
    try:
        period = Period.last(since, clock.now())
    except ValueError as problem:
        errors.print(str(problem))
        raise typer.Exit(2) from None
    with database().read() as session:
        result = build_report(session, period)
    if output == "json":
        print_json(result.as_json())
        return
    if output == "csv":
        writer = csv.writer(sys.stdout)
        for table in tables(result):
            writer.writerow(["table", *table.headers])
            writer.writerows([table.title, *row] for row in table.rows)
            writer.writerow([])
        return
    console.print(f"[bold]Leadflow report[/] {period.start:%Y-%m-%d %H:%M} – {period.end:%Y-%m-%d %H:%M} UTC")
    for table in tables(result):
        shown = Table(*table.headers, title=table.title, title_justify="left")
        for row in table.rows:
            shown.add_row(*row)
        console.print(shown)
