"""`leadflow leads`: one lead shown, its score recomputed at a past time, recycled."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from leadflow.cli.common import FormatOption, Output, console, content_or_exit, database, errors, print_json
from leadflow.platform.settings import get_settings

leads_app = typer.Typer(help="Look at leads.", no_args_is_help=True)


@leads_app.command("show")
def leads_show(
    reference: Annotated[str, typer.Argument(help="Lead id, email or anonymous id.")],
    output: FormatOption = Output.table,
) -> None:
    """A lead with its score explained (every contribution, before and after decay), stage history,
    sequences."""
    from leadflow.leads.views import find_lead, lead_document

    with database().read() as session:
        lead = find_lead(session, reference)
        if lead is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        document = lead_document(session, lead)
    if output is Output.json:
        print_json(document)
        return
    score = document["score"]
    account = document["account"]
    console.print(
        f"[bold]{document['email'] or reference}[/]  stage {document['stage']}  "
        f"score {score['total']} (fit {score['fit']}, behavior {score['behavior']}, "
        f"account {score['account']})  grade {score['grade']}  {score['temperature']}"
        + (f"  account {account['domain']}{' (hot)' if account['hot'] else ''}" if account else ""),
        highlight=False,
        soft_wrap=True,
    )
    _print_breakdown(score["breakdown"], f"Score breakdown (model {score['model_version']})")
    console.print_json(json.dumps({k: document[k] for k in ("stage_history", "sequences")}, default=str))


def _print_breakdown(breakdown: list[dict[str, Any]], title: str) -> None:
    table = Table("Rule", "Event", "When", "Before decay", "Points", "Why", title=title)
    for item in breakdown:
        table.add_row(
            item["rule"],
            item["event_type"] or f"({item['kind']})",
            (item["occurred_at"] or "")[:16],
            f"{item['points_before_decay']:+g}",
            f"{item['points']:+g}",
            item["note"],
        )
    console.print(table)


@leads_app.command("score")
def leads_score(
    reference: Annotated[str, typer.Argument(help="Lead id, email or anonymous id.")],
    at: Annotated[
        datetime | None,
        typer.Option(help="Recompute the score at this past time (UTC unless a zone is given)."),
    ] = None,
    output: FormatOption = Output.table,
) -> None:
    """Recompute a lead's score from the ledger, as it was at a past time (default: now)."""
    from leadflow.leads.views import find_lead
    from leadflow.platform import clock
    from leadflow.scoring.qualification import score_at

    moment = (at if at and at.tzinfo else at.replace(tzinfo=UTC)) if at else clock.now()
    with database().read() as session:
        lead = find_lead(session, reference)
        if lead is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        past = score_at(session, lead.id, moment)
        if past is None:
            errors.print(f"the ledger has no score for {reference!r} at {moment.isoformat()}")
            raise typer.Exit(1)
        entry_at, entry_score = past.snapshot.computed_at, past.snapshot.score
    result = past.result
    if output is Output.json:
        print_json(
            {
                "reference": reference,
                "at": moment.isoformat(),
                **result.figures(),
                "model_version": past.model_version,
                "ledger_entry": {"computed_at": entry_at.isoformat(), "score": entry_score},
            }
        )
        return
    console.print(
        f"[bold]{reference}[/] at {moment.isoformat()}: score {result.score} (fit {result.fit}, "
        f"behavior {result.behavior_points}, account {result.account}), grade {result.grade}, "
        f"{result.temperature}; model {past.model_version}; ledger entry of {entry_at.isoformat()}: "
        f"{entry_score}",
        highlight=False,
        soft_wrap=True,
    )
    _print_breakdown([c.as_json() for c in result.contributions], "Recomputed breakdown")


@leads_app.command("recycle")
def leads_recycle(
    reference: Annotated[str, typer.Argument(help="Lead id, email or anonymous id.")],
    reason: Annotated[str, typer.Option(help="Why sales handed the lead back.")],
) -> None:
    """Recycle a lead handed back by sales: stamped "recycled", it qualifies again on new engagement."""
    from leadflow.leads.views import find_lead
    from leadflow.platform import clock
    from leadflow.scoring.qualification import NotRecyclable, recycle

    model = content_or_exit(get_settings().content_dir).scoring
    with database().transaction() as session:
        lead = find_lead(session, reference)
        if lead is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        try:
            rescored = recycle(session, lead.id, reason, model, clock.now())
        except NotRecyclable as refused:
            errors.print(str(refused))
            raise typer.Exit(1) from None
    console.print(f"{reference} is recycled; score now {rescored.result.score}")
