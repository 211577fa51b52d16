"""`leadflow keys`: API keys (create, list, revoke) and web-push (VAPID) keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from leadflow.cli.common import console, database, errors, minute
from leadflow.platform.settings import get_settings

keys_app = typer.Typer(help="API keys (create, list, revoke) and web-push keys.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what uses it: crm-sync, website, ci.")],
) -> None:
    """Make an API key and print it, once: only its keyed hash is stored, so it cannot be shown again."""
    from leadflow.http.apikeys import KeyRefused, create_key

    settings = get_settings()
    db = database()
    db.upgrade()
    try:
        key = create_key(db, settings.resolved_secret_key, name)
    except KeyRefused as refused:
        errors.print(str(refused), highlight=False, markup=False)
        raise typer.Exit(1) from None
    errors.print(
        f"API key {name!r} (shown once; keep it in your secrets store):", highlight=False, markup=False
    )
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """The stored API keys: name, when made, last used (to the minute), revoked. Never the keys themselves."""
    from leadflow.http.apikeys import list_keys

    db = database()
    db.upgrade()
    table = Table("Name", "Created", "Last used", "Revoked", title="API keys (times in UTC)")
    for key in list_keys(db):
        table.add_row(key.name, minute(key.created_at), minute(key.last_used_at), minute(key.revoked_at))
    console.print(table)
    bootstrap = len(get_settings().api_keys)
    if bootstrap:
        console.print(f"and {bootstrap} key(s) from LEADFLOW_API_KEYS (not stored)", highlight=False)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name (see leadflow keys list).")],
) -> None:
    """Revoke an API key: requests with it are refused (401) from now on, dashboard sessions included."""
    from leadflow.http.apikeys import KeyRefused, revoke_key

    db = database()
    db.upgrade()
    try:
        key = revoke_key(db, name)
    except KeyRefused as refused:
        errors.print(str(refused), highlight=False, markup=False)
        raise typer.Exit(1) from None
    console.print(f"API key {name!r} is revoked (since {minute(key.revoked_at)} UTC)", highlight=False)


@keys_app.command("vapid")
def keys_vapid() -> None:
    """Generate a VAPID key pair for web push: the private key goes into LEADFLOW_VAPID_PRIVATE_KEY, the
    public one is the applicationServerKey your web page subscribes with (also at GET /v1/push/key)."""
    from leadflow.messaging.providers.webpush import generate_vapid_keys

    keys = generate_vapid_keys()
    console.print(f"LEADFLOW_VAPID_PRIVATE_KEY={keys.private_key}", highlight=False, soft_wrap=True)
    console.print(f"# applicationServerKey (public): {keys.public_key}", highlight=False, soft_wrap=True)
