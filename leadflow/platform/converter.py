"""The data converter of every Temporal client, worker and replayer here: pydantic's JSON, with one cache of
type adapters per process, and (`lead_data_converter`) each lead's payloads encrypted under its own key.

Temporal's sandbox builds a new payload converter for every workflow it loads, and pydantic's converter keeps
its type adapters per instance: each new or evicted-and-reloaded workflow rebuilt the schema of every type it
decoded (measured: a quarter of a worker's CPU in a burst of new leads). The adapters depend only on the type,
so one cache serves them all. The payloads are byte for byte those of `pydantic_data_converter`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)

from leadflow.platform.store import Database
from leadflow.platform.store.models import Lead, LeadKey, StageChange
from leadflow.platform.store.upsert import insert_ignoring_conflicts

_type_adapters = lru_cache(maxsize=1024)(TypeAdapter)


class _SharedAdaptersJSON(PydanticJSONPlainPayloadConverter):
    def __init__(self) -> None:
        super().__init__()
        self._type_adapter = _type_adapters

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._type_adapter = _type_adapters


# One instance for all: the SDK builds a new payload converter for every serialization context (each
# workflow and activity call), and a new pydantic converter builds its own schema serializer. It keeps no
# state of a call (it takes no serialization context), like the SDK's default converters, also shared.
_JSON = _SharedAdaptersJSON()


class PayloadConverter(CompositePayloadConverter):
    """Temporal's default converters, JSON by pydantic (dataclasses, models, datetimes) with shared adapters."""

    def __init__(self) -> None:
        super().__init__(
            *(
                _JSON if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


data_converter = DataConverter(payload_converter_class=PayloadConverter)


# --- each lead's payloads under its own key -------------------------------------------------------------
#
# Temporal keeps every workflow's history (signals with event properties, activity inputs and results, child
# workflow inputs, failure messages) in its database, and an erase cannot edit a history. So what concerns a
# lead is encrypted (AES-256-GCM) under a data key of that lead, kept in the store (`lead_keys`) and deleted
# with the lead: erased, its histories are noise. The lead comes from the workflow id of the payload's
# serialization context (Settings.lead_workflow_id, sequence_workflow_id: `...lead-<id>`; a hand-off's
# `handoff-<stage change>` is looked up). Payloads without this encoding (histories recorded before, other
# workflows) are read as they are.

ENCODING = b"binary/leadflow-lead-aes256gcm"
NONCE_BYTES = 12
NONCES_DRAWN = 256  # per read of the OS's randomness (3 KiB)
KEYS_CACHED = 10_000  # per process: 10,000 keys are a few MiB; a miss costs one read of the store
_LEAD_WORKFLOW = re.compile(r"lead-(\d+)$")
_HANDOFF_WORKFLOW = re.compile(r"handoff-(\d+)$")
_GONE = 0  # no lead has id 0: the lead of a hand-off whose record was erased


class LeadErased(Exception):
    """A payload of a lead whose key was erased: it can no longer be read, by design."""


class LeadKeys:
    """Each lead's data key: made with the lead (`make_lead_keys`, in the transaction that creates it) or, for a
    lead made without one, on first use; kept in the store, gone with the lead. A bounded LRU cache in this
    process (a key erased meanwhile stays in a worker's memory until it is evicted, never on disk); the router
    loads the keys of a whole batch at once (`load`), so that encoding its signals reads nothing."""

    def __init__(self, db: Database, cache_size: int = KEYS_CACHED) -> None:
        self.db = db
        self.cache_size = cache_size
        self._ciphers: OrderedDict[int, AESGCM] = OrderedDict()
        self._handoff_leads: OrderedDict[int, int] = OrderedDict()  # stage change -> lead, never changes

    async def lead_of(self, workflow_id: str) -> int | None:
        """The lead whose data the workflow `workflow_id` carries; None for a workflow of no lead."""
        if found := _LEAD_WORKFLOW.search(workflow_id):
            return int(found[1])
        if not (found := _HANDOFF_WORKFLOW.search(workflow_id)):
            return None
        stage_change_id = int(found[1])
        lead_id = self._handoff_leads.get(stage_change_id)
        if lead_id is None:
            lead_id = await self.db.call(self._lead_of_stage_change, stage_change_id) or _GONE
            if lead_id != _GONE:
                _remember(self._handoff_leads, stage_change_id, lead_id, self.cache_size)
        return lead_id

    async def cipher(self, lead_id: int, make: bool) -> AESGCM | None:
        """The lead's cipher (its key made first if `make` and the lead has none); None once it is erased."""
        cipher = self._ciphers.get(lead_id)
        if cipher is not None:
            self._ciphers.move_to_end(lead_id)
            return cipher
        keys = await self.db.call(self._keys_made if make else self._keys, [lead_id])
        return self._cached(keys).get(lead_id)

    async def load(self, lead_ids: Iterable[int]) -> None:
        """Cache the keys of `lead_ids` in one read of the store (making those missing in one transaction)."""
        missing = [lead_id for lead_id in dict.fromkeys(lead_ids) if lead_id not in self._ciphers]
        if missing:
            self._cached(await self.db.call(self._keys_made, missing[-self.cache_size :]))

    def forget(self, lead_id: int) -> None:
        self._ciphers.pop(lead_id, None)

    def _cached(self, keys: dict[int, bytes]) -> dict[int, AESGCM]:
        ciphers = {lead_id: AESGCM(key) for lead_id, key in keys.items()}
        for lead_id, cipher in ciphers.items():
            _remember(self._ciphers, lead_id, cipher, self.cache_size)
        return ciphers

    def _lead_of_stage_change(self, stage_change_id: int) -> int | None:
        with self.db.read() as session:
            return session.scalar(select(StageChange.lead_id).where(StageChange.id == stage_change_id))

    def _keys(self, lead_ids: list[int]) -> dict[int, bytes]:
        with self.db.read() as session:
            return _stored_keys(session, lead_ids)

    def _keys_made(self, lead_ids: list[int]) -> dict[int, bytes]:
        keys = self._keys(lead_ids)
        keyless = [lead_id for lead_id in lead_ids if lead_id not in keys and lead_id != _GONE]
        if not keyless:
            return keys
        try:  # leads made without a key: by an older version, or straight in the store
            with self.db.transaction() as session:
                existing = [*session.scalars(select(Lead.id).where(Lead.id.in_(keyless)))]
                make_lead_keys(session, existing)
        except IntegrityError:
            pass  # one was erased meanwhile: those still there are read below, the others have none
        return {**keys, **self._keys(keyless)}  # ours, or those another process made first


def make_lead_keys(session: Session, lead_ids: Iterable[int]) -> None:
    """Give each of `lead_ids` a new data key, in the caller's transaction (the one that creates the leads);
    a lead that already has one keeps it."""
    rows = [{"lead_id": lead_id, "key": AESGCM.generate_key(bit_length=256)} for lead_id in lead_ids]
    insert_ignoring_conflicts(session, LeadKey, rows, ["lead_id"])


def _stored_keys(session: Session, lead_ids: list[int]) -> dict[int, bytes]:
    keys: dict[int, bytes] = {}
    for start in range(0, len(lead_ids), 500):  # bounded IN lists
        chunk = lead_ids[start : start + 500]
        query = select(LeadKey.lead_id, LeadKey.key).where(LeadKey.lead_id.in_(chunk))
        keys.update((lead_id, key) for lead_id, key in session.execute(query))
    return keys


def _remember(cache: OrderedDict[int, Any], key: int, value: Any, size: int) -> None:
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)


class LeadPayloadCodec(PayloadCodec, WithSerializationContext):
    """Encrypts the payloads of a lead's workflows and activities under the lead's key (see above)."""

    def __init__(self, keys: LeadKeys, workflow_id: str | None = None) -> None:
        self.keys = keys
        self.workflow_id = workflow_id

    def with_context(self, context: SerializationContext) -> Self:
        return type(self)(self.keys, getattr(context, "workflow_id", None))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        lead_id = await self.keys.lead_of(self.workflow_id) if self.workflow_id else None
        if lead_id is None:
            return list(payloads)
        # An erased lead's workflow still running (until it is terminated) writes what nobody can read.
        cipher = await self.keys.cipher(lead_id, make=True) or AESGCM(AESGCM.generate_key(bit_length=256))
        return [_sealed(cipher, lead_id, payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            lead_id = int(payload.metadata["lead"])
            cipher = await self.keys.cipher(lead_id, make=False)
            try:
                if cipher is None:
                    raise InvalidTag
                nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
                decoded.append(Payload.FromString(cipher.decrypt(nonce, sealed, payload.metadata["lead"])))
            except InvalidTag:
                raise LeadErased(
                    f"lead {lead_id} was erased: its workflow data can no longer be read"
                ) from None
        return decoded


class _Nonces:
    """Random 96-bit nonces from the OS, drawn NONCES_DRAWN at a time: os.urandom releases the GIL, and on a
    busy worker the event loop that released it waited milliseconds to get it back, once per payload."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drawn, self._used = b"", 0
        os.register_at_fork(after_in_child=self._discard)  # a child must not reuse its parent's nonces

    def take(self) -> bytes:
        with self._lock:
            if self._used == len(self._drawn):
                self._drawn, self._used = os.urandom(NONCE_BYTES * NONCES_DRAWN), 0
            start = self._used
            self._used += NONCE_BYTES
            return self._drawn[start : start + NONCE_BYTES]

    def _discard(self) -> None:
        self._lock = threading.Lock()
        self._drawn, self._used = b"", 0


_nonces = _Nonces()


def _sealed(cipher: AESGCM, lead_id: int, payload: Payload) -> Payload:
    lead = str(lead_id).encode()
    nonce = _nonces.take()
    sealed = cipher.encrypt(nonce, payload.SerializeToString(), lead)
    return Payload(metadata={"encoding": ENCODING, "lead": lead}, data=nonce + sealed)


def lead_data_converter(db: Database) -> DataConverter:
    """The converter of an installation's clients and workers: `data_converter`, each lead's payloads
    encrypted, and failures' messages and stack traces inside the (encrypted) payloads instead of beside
    them (an SMTP refusal quotes the address)."""
    return dataclasses.replace(
        data_converter,
        payload_codec=LeadPayloadCodec(LeadKeys(db)),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
