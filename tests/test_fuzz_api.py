"""The API fuzzed from its own OpenAPI schema (schemathesis), on SQLite and on PostgreSQL: whatever a client
sends (valid requests and requests built to break the schema: NUL characters, lone surrogates, huge numbers,
missing keys), no answer is a 5xx, every answer is one the schema documents (status, content type, body), and
a refused request leaves the store exactly as it was."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from sqlalchemy import text

from leadflow.api import create_app
from leadflow.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.runtime import Runtime
from leadflow.store.models import Base
from tests.conftest import API_KEY, channel_settings

EXAMPLES = 20  # per operation and generation mode: about 8 s per backend on 2 idle cores
AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}
FUZZ_CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            # A schema-breaking request is refused with a 4xx; 413 is how a batch over the limit is refused.
            "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 409, 413, 422, 429]},
            # Not checked: that every schema-valid body is accepted. Some rules are not in the schema (exactly
            # one of email / lead_id / anonymous_id, no timestamp a day ahead, a known time zone).
            "positive_data_acceptance": {"enabled": False},
        }
    }
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # A Twilio auth token, so the webhooks check signatures (and refuse the fuzzer's) instead of answering 404.
    return {**channel_settings(), "twilio_auth_token": "fuzz-auth-token"}


def row_counter(runtime: Runtime) -> Callable[[], dict[str, int]]:
    """Rows in every table, read in one query."""
    tables = [table.name for table in Base.metadata.sorted_tables]
    query = text("SELECT " + ", ".join(f"(SELECT count(*) FROM {name})" for name in tables))

    def counts() -> dict[str, int]:
        with runtime.db.read() as session:
            return dict(zip(tables, session.execute(query).one(), strict=True))

    return counts


@dataclass
class Fuzzing:
    """What the fuzzer saw, across operations."""

    counts: Callable[[], dict[str, int]]
    statuses: Counter[int] = field(default_factory=Counter)
    refused_cleanly: set[str] = field(default_factory=set)  # operations that refused and stored nothing
    failures: list[str] = field(default_factory=list)

    def run(self, operation: APIOperation, mode: GenerationMode) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def call(case: Case) -> None:
            before = self.counts()
            response = case.call(headers=AUTHORIZED)
            self.statuses[response.status_code] += 1
            case.validate_response(response)  # no 5xx; status, content type and body as documented
            if 400 <= response.status_code < 500:
                after = self.counts()
                written = {
                    table: after[table] - before[table] for table in after if after[table] != before[table]
                }
                assert not written, f"{operation.label} answered {response.status_code} yet wrote {written}"
                self.refused_cleanly.add(operation.label)

        try:
            call()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # nothing in its schema can be broken
        except BaseException as found:  # schemathesis reports its findings as a BaseExceptionGroup
            if isinstance(found, KeyboardInterrupt):
                raise
            self.failures.append(f"{operation.label} ({mode}):\n{found}")


def test_whatever_a_client_sends_the_api_answers_as_documented_and_stores_no_garbage(
    runtime: Runtime,
) -> None:
    # Leads to find, so routes on `{reference}` answer 200 too, not only 404.
    for number in range(1, 4):
        upsert_lead(runtime.db, LeadIn(email=f"lead{number}@acme.test", properties={"first_name": "Ada"}))
    ingest_events(runtime.db, [EventIn(id="seen-1", type="page_viewed", lead_id=1)])
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(runtime), config=FUZZ_CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [operation.label for operation in operations]
    fuzzing = Fuzzing(row_counter(runtime))
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzzing.run(operation, mode)

    assert not fuzzing.failures, "\n\n".join(fuzzing.failures)
    statuses = fuzzing.statuses
    assert not any(code >= 500 for code in statuses), statuses
    # The fuzzer reached past validation: some requests were accepted, many refused, none crashed.
    assert any(200 <= code < 300 for code in statuses) and statuses[422] > 20, statuses
    assert len(fuzzing.refused_cleanly) >= 15, fuzzing.refused_cleanly
