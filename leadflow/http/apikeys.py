"""Server-side API keys, kept only as a keyed hash: HMAC-SHA256 of the key under LEADFLOW_SECRET_KEY.

A key is shown once, when `leadflow keys create NAME` makes it; the store holds its digest, name, creation,
revocation and last use. Whoever reads the store learns no key, and without the secret key cannot even test
a guess against the digests. `LEADFLOW_API_KEYS` stays as a bootstrap for deployments and tests: those keys
are hashed in memory when the API starts and are never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr
from sqlalchemy import select, update

from leadflow.platform import clock
from leadflow.platform.errors import LeadflowError
from leadflow.platform.store import Database
from leadflow.platform.store.models import ApiKey

KEY_PREFIX = "lf_"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
LAST_USED_EVERY = 60.0  # seconds: a key's last use is written at most once a minute, not on every request


class KeyRefused(LeadflowError, ValueError):
    """A key cannot be created or revoked as asked: the message says why."""


@dataclass(frozen=True)
class Caller:
    """Who an authenticated request comes from: the key's name (never the key) and digest."""

    name: str
    digest: str


def key_digest(secret_key: str, key: str) -> str:
    return hmac.new(secret_key.encode(), key.encode(), hashlib.sha256).hexdigest()


def create_key(db: Database, secret_key: str, name: str, key: str | None = None) -> str:
    """Store a new key named `name` (a random one unless `key` is given) and return it: the only time it is
    ever seen. A name is used once, revoked or not, so the history of keys stays readable."""
    if not re.match(NAME_PATTERN, name):
        raise KeyRefused(
            f"name {name!r}: 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    key = key or KEY_PREFIX + secrets.token_urlsafe(32)
    digest = key_digest(secret_key, key)
    with db.transaction() as session:
        existing = session.scalars(select(ApiKey).where(ApiKey.name == name)).first()
        if existing is not None:
            state = f"revoked {existing.revoked_at:%Y-%m-%d %H:%M}" if existing.revoked_at else "active"
            raise KeyRefused(f"a key named {name!r} exists already ({state}); choose another name")
        if session.scalars(select(ApiKey.id).where(ApiKey.digest == digest)).first() is not None:
            raise KeyRefused("this key is stored already, under another name")
        session.add(ApiKey(name=name, digest=digest, created_at=clock.now()))
    return key


def list_keys(db: Database) -> list[ApiKey]:
    with db.read() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(db: Database, name: str) -> ApiKey:
    """Revoke the key named `name` at once (requests with it get 401 from now on). Revoking twice is fine."""
    with db.transaction() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.name == name)).first()
        if key is None:
            known = ", ".join(session.scalars(select(ApiKey.name).order_by(ApiKey.name))) or "none"
            raise KeyRefused(f"no key named {name!r} (known: {known})")
        if key.revoked_at is None:
            key.revoked_at = clock.now()
        return key


class Keyring:
    """Tells who holds a key, for the API and the dashboard: the bootstrap keys from the settings (hashed
    here, in memory) and the active keys of the store, looked up by digest on every request so that a
    revocation takes effect at once."""

    def __init__(self, db: Database, secret_key: str, bootstrap: Sequence[SecretStr]) -> None:
        self._db, self._secret = db, secret_key
        self._bootstrap = {
            key_digest(secret_key, key.get_secret_value()): f"LEADFLOW_API_KEYS #{position}"
            for position, key in enumerate(bootstrap, start=1)
        }
        self._written: dict[str, float] = {}  # digest: time.monotonic() of the last last_used_at write
        self._lock = threading.Lock()

    def caller(self, supplied: str) -> Caller | None:
        """The holder of `supplied`, or None for an unknown or revoked key. Blocking (reads the store)."""
        if not supplied:
            return None
        return self.caller_by_digest(key_digest(self._secret, supplied))

    def caller_by_digest(self, digest: str) -> Caller | None:
        if digest in self._bootstrap:
            return Caller(self._bootstrap[digest], digest)
        with self._db.read() as session:
            name = session.scalars(
                select(ApiKey.name).where(ApiKey.digest == digest, ApiKey.revoked_at.is_(None))
            ).first()
        if name is None:
            return None
        self._note_use(digest, clock.now())
        return Caller(name, digest)

    def _note_use(self, digest: str, now: datetime) -> None:
        moment = time.monotonic()
        with self._lock:
            if moment - self._written.get(digest, -LAST_USED_EVERY) < LAST_USED_EVERY:
                return
            self._written[digest] = moment
        with self._db.transaction() as session:
            session.execute(update(ApiKey).where(ApiKey.digest == digest).values(last_used_at=now))
