"""`leadflow outbox dead-letters`: events that can never be routed (list, retry, drop)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from leadflow.cli.common import console, database, errors, minute

outbox_app = typer.Typer(help="The outbox of accepted events on their way to Temporal.", no_args_is_help=True)
dead_letters_app = typer.Typer(
    help="Events that can never be routed, set aside so the rest flows: list, retry, drop.",
    no_args_is_help=True,
)
outbox_app.add_typer(dead_letters_app, name="dead-letters")


DeadLetterIds = Annotated[
    list[int] | None, typer.Argument(help="Dead letter ids (see leadflow outbox dead-letters list).")
]
AllDeadLetters = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


def _chosen_dead_letters(ids: list[int] | None, every: bool) -> list[int] | None:
    """The ids given, or None for all with --all; neither or both is a usage error."""
    if bool(ids) == every:
        errors.print("give dead letter ids or --all (not both)", highlight=False)
        raise typer.Exit(2)
    return None if every else ids


@dead_letters_app.command("list")
def dead_letters_list() -> None:
    """The events set aside because they can never be routed: lead, event, when, and why."""
    from leadflow.intake.deadletters import dead_letters

    db = database()
    db.upgrade()
    letters = dead_letters(db)
    table = Table("Id", "Lead", "Event", "Type", "Accepted", "Set aside", "Error", title="Dead letters (UTC)")
    for letter in letters:
        table.add_row(
            str(letter.id),
            str(letter.lead_id),
            str(letter.event_id),
            letter.event_type or "(erased)",
            minute(letter.created_at),
            minute(letter.set_aside_at),
            letter.error,
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)", highlight=False)


@dead_letters_app.command("retry")
def dead_letters_retry(ids: DeadLetterIds = None, every: AllDeadLetters = False) -> None:
    """Put dead letters back into the outbox (after a fix): the router tries them again, and sets aside
    again any that still cannot be routed."""
    from leadflow.intake.deadletters import retry

    db = database()
    db.upgrade()
    back = retry(db, _chosen_dead_letters(ids, every))
    console.print(f"{back} dead letter(s) back in the outbox", highlight=False)


@dead_letters_app.command("drop")
def dead_letters_drop(ids: DeadLetterIds = None, every: AllDeadLetters = False) -> None:
    """Forget dead letters: their events stay stored (the lead's timeline shows them) but never reach the
    lead's workflow."""
    from leadflow.intake.deadletters import drop

    db = database()
    db.upgrade()
    dropped = drop(db, _chosen_dead_letters(ids, every))
    console.print(f"{dropped} dead letter(s) dropped", highlight=False)
