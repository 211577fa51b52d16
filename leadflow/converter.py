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
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
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

from leadflow.store import Database
from leadflow.store.models import Lead, LeadKey, StageChange
from leadflow.store.upsert import insert_ignoring_conflicts

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
KEYS_CACHED = 10_000  # per process: 10,000 keys are a few MiB; a miss costs one read of the store
_LEAD_WORKFLOW = re.compile(r"lead-(\d+)$")
_HANDOFF_WORKFLOW = re.compile(r"handoff-(\d+)$")
_GONE = 0  # no lead has id 0: the lead of a hand-off whose record was erased


class LeadErased(Exception):
    """A payload of a lead whose key was erased: it can no longer be read, by design."""


class LeadKeys:
    """Each lead's data key: made on first use, kept in the store, gone with the lead; a bounded LRU cache
    in this process (a key erased meanwhile stays in a worker's memory until it is evicted, never on disk)."""

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
        key = await self.db.call(self._key_made if make else self._key, lead_id)
        if key is None:
            return None
        cipher = AESGCM(key)
        _remember(self._ciphers, lead_id, cipher, self.cache_size)
        return cipher

    def forget(self, lead_id: int) -> None:
        self._ciphers.pop(lead_id, None)

    def _lead_of_stage_change(self, stage_change_id: int) -> int | None:
        with self.db.read() as session:
            return session.scalar(select(StageChange.lead_id).where(StageChange.id == stage_change_id))

    def _key(self, lead_id: int) -> bytes | None:
        with self.db.read() as session:
            return session.scalar(select(LeadKey.key).where(LeadKey.lead_id == lead_id))

    def _key_made(self, lead_id: int) -> bytes | None:
        if (key := self._key(lead_id)) is not None or lead_id == _GONE:
            return key
        try:
            with self.db.transaction() as session:
                if session.get(Lead, lead_id) is None:
                    return None
                row = {"lead_id": lead_id, "key": AESGCM.generate_key(bit_length=256)}
                insert_ignoring_conflicts(session, LeadKey, [row], ["lead_id"])
        except IntegrityError:
            return None  # erased meanwhile
        return self._key(lead_id)  # ours, or the one another process made first


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


def _sealed(cipher: AESGCM, lead_id: int, payload: Payload) -> Payload:
    lead = str(lead_id).encode()
    nonce = os.urandom(NONCE_BYTES)
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
