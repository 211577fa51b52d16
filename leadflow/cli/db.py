"""`leadflow db`: the store's schema."""

from __future__ import annotations

import typer

from leadflow.cli.common import console
from leadflow.platform.settings import get_settings

db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    from leadflow.platform.store import Database

    settings = get_settings()
    Database(settings.resolved_database_url).upgrade()
    console.print(f"schema is up to date ({settings.resolved_database_url.split('@')[-1]})")
