"""The data converter of every Temporal client, worker and replayer here: pydantic's JSON, with one cache of
type adapters per process.

Temporal's sandbox builds a new payload converter for every workflow it loads, and pydantic's converter keeps
its type adapters per instance: each new or evicted-and-reloaded workflow rebuilt the schema of every type it
decoded (measured: a quarter of a worker's CPU in a burst of new leads). The adapters depend only on the type,
so one cache serves them all. The payloads are byte for byte those of `pydantic_data_converter`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)

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
