"""API keys as an operator handles them: `leadflow keys create` prints a key once and the store keeps only its
keyed hash; the key works on the API and the dashboard; `keys list` shows names and use, never keys;
`keys revoke` shuts it out at once, dashboard sessions included. LEADFLOW_API_KEYS keys are hashed in memory
and never stored; `leadflow dev` seeds the README's `dev-key`, hashed, once."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.cli.dev import DEV_KEY, seed_dev_key
from leadflow.http.apikeys import KeyRefused, create_key, key_digest, revoke_key
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import Settings, get_settings
from leadflow.platform.store.models import ApiKey
from leadflow.reports.dashboard import COOKIE
from tests.reports.test_dashboard import sign_in
from tests.support.helpers import API_KEY


@pytest.fixture
def cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """The `leadflow` command on the test's store and secret key."""
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", runtime.db.url)
    monkeypatch.setenv("LEADFLOW_SECRET_KEY", runtime.settings.resolved_secret_key)
    monkeypatch.setenv("LEADFLOW_API_KEYS", "bootstrap-one, bootstrap-two")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_key_is_shown_once_stored_hashed_used_listed_and_revoked(
    runtime: Runtime, api: httpx.AsyncClient, cli: CliRunner
) -> None:
    created = cli.invoke(app, ["keys", "create", "crm-sync"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("lf_") and len(key) > 40 and "shown once" in created.stderr

    with runtime.db.read() as session:
        [row] = session.scalars(select(ApiKey)).all()
    assert row.name == "crm-sync" and row.last_used_at is None and row.revoked_at is None
    assert row.digest == key_digest(runtime.settings.resolved_secret_key, key)
    assert key not in (row.digest, row.name)

    answer = await api.post("/v1/leads", json={"email": "ada@acme.test"}, headers=bearer(key))
    assert answer.status_code == 201
    listed = cli.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and "crm-sync" in listed.stdout and key not in listed.stdout
    assert "2 key(s) from LEADFLOW_API_KEYS" in listed.stdout and "bootstrap-one" not in listed.stdout
    with runtime.db.read() as session:
        assert session.scalars(select(ApiKey.last_used_at)).one() is not None

    again = cli.invoke(app, ["keys", "create", "crm-sync"])
    assert again.exit_code == 1 and "exists already (active)" in again.stderr

    revoked = cli.invoke(app, ["keys", "revoke", "crm-sync"])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    refused = await api.get("/v1/leads/ada@acme.test", headers=bearer(key))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert cli.invoke(app, ["keys", "revoke", "crm-sync"]).exit_code == 0  # twice is fine
    unknown = cli.invoke(app, ["keys", "revoke", "nobody"])
    assert unknown.exit_code == 1 and "no key named 'nobody' (known: crm-sync)" in unknown.stderr
    [row_shown] = [
        line for line in cli.invoke(app, ["keys", "list"]).stdout.splitlines() if "crm-sync" in line
    ]
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", row_shown)) == 3  # created, last used, revoked


async def test_revoking_a_key_ends_its_dashboard_sessions(runtime: Runtime, api: httpx.AsyncClient) -> None:
    key = create_key(runtime.db, runtime.settings.resolved_secret_key, "marketing-laptop")
    signed_in = await sign_in(api, key)
    assert signed_in.status_code == 303
    assert key not in api.cookies[COOKIE]
    assert (await api.get("/dashboard")).status_code == 200
    revoke_key(runtime.db, "marketing-laptop")
    assert (await api.get("/dashboard")).status_code == 401


async def test_a_forged_or_foreign_session_cookie_is_refused(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    await sign_in(api, API_KEY)
    genuine = api.cookies[COOKIE]
    payload, _, signature = genuine.rpartition(".")
    for forged in (genuine[:-2] + "xx", f"{payload}.{signature[::-1]}", API_KEY):
        api.cookies.clear()
        api.cookies.set(COOKIE, forged, domain="leadflow.test", path="/dashboard")
        assert (await api.get("/dashboard")).status_code == 401, forged


def test_bootstrap_keys_are_hashed_in_memory_and_never_shown(runtime: Runtime) -> None:
    settings = Settings(api_keys="first-secret-key, second-secret-key")  # as LEADFLOW_API_KEYS gives it
    assert [key.get_secret_value() for key in settings.api_keys] == ["first-secret-key", "second-secret-key"]
    assert "first-secret-key" not in repr(settings) and "first-secret-key" not in str(settings.model_dump())
    assert Settings().api_keys == []  # no key works unless one is configured or created


async def test_dev_seeds_the_readme_key_hashed_once_and_a_revocation_holds(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    seed_dev_key(runtime)
    seed_dev_key(runtime)  # every later start: nothing new
    with runtime.db.read() as session:
        [row] = session.scalars(select(ApiKey)).all()
    assert row.name == "dev" and DEV_KEY not in row.digest
    assert (await api.get("/v1/health", headers=bearer(DEV_KEY))).status_code == 200
    revoke_key(runtime.db, "dev")
    seed_dev_key(runtime)
    assert (await api.get("/v1/health", headers=bearer(DEV_KEY))).status_code == 401
    with pytest.raises(KeyRefused, match="exists already"):
        create_key(runtime.db, runtime.settings.resolved_secret_key, "dev")
