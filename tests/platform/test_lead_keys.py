"""Each lead's data key (leadflow.platform.converter) is made in the transaction that creates the lead, so the router's
first signal to a new lead writes nothing; the router loads a batch's keys with one read; and the nonces
that seal payloads are never the same twice, in a forked child either."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import select

from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform import clock
from leadflow.platform.converter import NONCE_BYTES, NONCES_DRAWN, LeadKeys, _Nonces
from leadflow.platform.store import Database
from leadflow.platform.store.models import Lead, LeadKey


def stored_keys(db: Database) -> dict[int, bytes]:
    with db.read() as session:
        return {lead_id: key for lead_id, key in session.execute(select(LeadKey.lead_id, LeadKey.key))}


def test_every_way_a_lead_is_made_gives_it_a_key_in_the_same_transaction(db: Database) -> None:
    before = stored_keys(db)
    lead, created = upsert_lead(db, LeadIn(email="keyed-upsert@acme.test"))
    events = [
        EventIn(id="keys-1", type="page_viewed", email="keyed-event@acme.test", properties={"url": "/"}),
        EventIn(id="keys-2", type="page_viewed", anonymous_id="keys-browser", properties={"url": "/"}),
    ]
    result = ingest_events(db, events)
    made = stored_keys(db).keys() - before.keys()
    assert created and lead.id in made
    assert set(result.lead_ids) <= made and len(made) == 3
    keys = [stored_keys(db)[lead_id] for lead_id in made]
    assert all(len(key) == 32 for key in keys) and len(set(keys)) == 3


class CountingCalls:
    """The store as LeadKeys sees it, counting the calls made on it."""

    def __init__(self, db: Database) -> None:
        self.db, self.calls = db, 0

    async def call(self, work: Any, *args: Any) -> Any:
        self.calls += 1
        return work(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_batch_of_keys_is_loaded_with_one_call_and_a_keyless_lead_gets_one(db: Database) -> None:
    keyed = [upsert_lead(db, LeadIn(email=f"batch-{n}@acme.test"))[0].id for n in range(3)]
    with db.transaction() as session:  # as an older version made leads: without a key
        keyless = Lead(
            properties={}, stage="subscriber", score=0, created_at=clock.now(), updated_at=clock.now()
        )
        session.add(keyless)
        session.flush()
        keyless_id = keyless.id
    never_existed = 10**12
    store = CountingCalls(db)
    keys = LeadKeys(store)  # type: ignore[arg-type]
    await keys.load([*keyed, keyless_id, never_existed, keyed[0]])
    assert store.calls == 1
    for lead_id in [*keyed, keyless_id]:
        assert await keys.cipher(lead_id, make=True) is not None
    assert store.calls == 1  # all from the cache
    assert keyless_id in stored_keys(db) and never_existed not in stored_keys(db)
    assert await keys.cipher(never_existed, make=True) is None


def test_nonces_are_never_repeated_across_refills_nor_in_a_forked_child() -> None:
    nonces = _Nonces()
    taken = [nonces.take() for _ in range(3 * NONCES_DRAWN + 1)]  # drawn 4 times, the last one barely used
    assert all(len(nonce) == NONCE_BYTES for nonce in taken) and len(set(taken)) == len(taken)
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next nonce, to the parent
        os.write(writing, nonces.take())
        os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    from_child = os.read(reading, NONCE_BYTES)
    os.close(reading)
    assert len(from_child) == NONCE_BYTES and from_child != nonces.take()
