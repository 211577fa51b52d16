"""The API fuzzed from its own OpenAPI schema (schemathesis), on SQLite and on PostgreSQL: whatever a client
sends (valid requests and requests built to break the schema: NUL characters, lone surrogates, huge numbers,
missing keys), no answer is a 5xx, every answer is one the schema documents (status, content type, body), and
a refused request leaves the store exactly as it was.

Each route is fuzzed by those who reach it: the /v1 routes by an API key's holder; the public routes (the
tracking snippet and its collect endpoint, email links, Twilio's webhooks) by a stranger without key,
signature or allowed origin, who must change nothing at all; the collect endpoint also by a page of the sample
site (its public key and an allowed Origin), and Twilio's webhooks by Twilio (signed, from a lead's number),
to reach past the door. The dashboard's sign-in form, which is not in the schema, is fuzzed from hypothesis."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from leadflow.http.app import create_app
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.intake.tracking.collect import TRACKER_EVENTS
from leadflow.intake.tracking.sample_site import SAMPLE_SITE_KEY
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Base
from leadflow.reports.dashboard import COOKIE
from tests.reports.test_dashboard import FORM, form_token
from tests.support.browser import serving
from tests.support.helpers import API_KEY, channel_settings, free_port

EXAMPLES = 20  # per operation, caller and generation mode: about 10 s per backend on 2 idle cores
AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}
TWILIO_AUTH_TOKEN = "fuzz-auth-token"
LEAD_PHONE = "+14155550100"
SAMPLE_PAGE = "http://127.0.0.1:5000"  # an origin sites.yaml allows for the sample site's key
ELSEWHERE = "https://attacker.example"  # one it does not
SNIPPET_EVENTS = sorted(TRACKER_EVENTS)
FUZZ_CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            # A schema-breaking request is refused with a 4xx; 413 is how a batch over the limit is refused.
            "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 409, 413, 422, 429]},
            # Not checked: that every schema-valid body is accepted. Some rules are not in the schema (exactly
            # one of email / lead_id / anonymous_id, no timestamp a day ahead, a known time zone, the event
            # types a site may send, a signature or key that checks out).
            "positive_data_acceptance": {"enabled": False},
        }
    }
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # A Twilio auth token, so the webhooks check signatures (and refuse the fuzzer's) instead of answering 404.
    return {**channel_settings(), "twilio_auth_token": TWILIO_AUTH_TOKEN}


def row_counter(runtime: Runtime) -> Callable[[], dict[str, int]]:
    """Rows in every table, read in one query."""
    tables = [table.name for table in Base.metadata.sorted_tables]
    query = text("SELECT " + ", ".join(f"(SELECT count(*) FROM {name})" for name in tables))

    def counts() -> dict[str, int]:
        with runtime.db.read() as session:
            return dict(zip(tables, session.execute(query).one(), strict=True))

    return counts


@dataclass(frozen=True)
class Caller:
    """Who sends the fuzzer's requests to an operation: `prepare` makes a generated case theirs (a key, a
    signature, an origin) without making a valid case invalid or the reverse, and gives the headers to send;
    a caller that may not write must change nothing, whatever it is answered."""

    name: str
    prepare: Callable[[Case, GenerationMode], dict[str, str]]
    may_write: bool = True
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def key_holder(case: Case, mode: GenerationMode) -> dict[str, str]:
    return AUTHORIZED


def stranger(case: Case, mode: GenerationMode) -> dict[str, str]:
    return {}


def page_of(origin: str) -> Callable[[Case, GenerationMode], dict[str, str]]:
    """A page at `origin` using the sample site's public key and (in valid cases) the event types the site
    may send."""

    def prepare(case: Case, mode: GenerationMode) -> dict[str, str]:
        if case.path == "/t/leadflow.js":
            if mode == GenerationMode.POSITIVE:
                case.query = {**(case.query or {}), "site": SAMPLE_SITE_KEY}
            return {}
        body = case.body
        if isinstance(body, dict) and isinstance(body.get("site"), str) and len(body["site"]) <= 100:
            body["site"] = (
                SAMPLE_SITE_KEY  # a valid key for a valid one: the case stays as (in)valid as it was
            )
        if mode == GenerationMode.POSITIVE and isinstance(body, dict):
            for number, event in enumerate(body.get("events") or []):
                event["type"] = SNIPPET_EVENTS[number % len(SNIPPET_EVENTS)]
        return {"Origin": origin}

    return prepare


def twilio_signing(public_url: str) -> Callable[[Case, GenerationMode], dict[str, str]]:
    """Twilio, posting the generated form (schema-valid: every field text) from a lead's number, signed."""

    def prepare(case: Case, mode: GenerationMode) -> dict[str, str]:
        case.body["From"] = LEAD_PHONE
        signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(public_url + case.path, case.body)
        return {"X-Twilio-Signature": signature}

    return prepare


@dataclass
class Fuzzing:
    """What the fuzzer saw, across operations and callers."""

    counts: Callable[[], dict[str, int]]
    statuses: Counter[int] = field(default_factory=Counter)
    by_caller: dict[str, Counter[int]] = field(default_factory=dict)
    refused_cleanly: set[str] = field(default_factory=set)  # operations that refused and stored nothing
    failures: list[str] = field(default_factory=list)

    def run(self, operation: APIOperation, mode: GenerationMode, caller: Caller) -> None:
        seen = self.by_caller.setdefault(f"{caller.name} {operation.label}", Counter())

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(  # derandomized: 20 random cases sometimes held no accepted /t/collect body, a red CI by chance
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Case) -> None:
            before = self.counts()
            response = case.call(headers=caller.prepare(case, mode))
            self.statuses[response.status_code] += 1
            seen[response.status_code] += 1
            case.validate_response(response)  # no 5xx; status, content type and body as documented
            refused = 400 <= response.status_code < 500
            if refused or not caller.may_write:
                after = self.counts()
                written = {
                    table: after[table] - before[table] for table in after if after[table] != before[table]
                }
                assert not written, (
                    f"{operation.label} answered {response.status_code} to {caller.name} yet wrote {written}"
                )
                if refused:
                    self.refused_cleanly.add(operation.label)

        try:
            call()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # nothing in its schema can be broken
        except BaseException as found:  # schemathesis reports its findings as a BaseExceptionGroup
            if isinstance(found, KeyboardInterrupt):
                raise
            self.failures.append(f"{operation.label} by {caller.name} ({mode}):\n{found}")


def callers_of(operation: APIOperation, public_url: str) -> list[Caller]:
    if operation.definition.raw.get("security"):
        return [Caller("an API key's holder", key_holder)]
    everyone = [Caller("a stranger", stranger, may_write=False)]
    if operation.path == "/t/leadflow.js":
        return [*everyone, Caller("a page of the sample site", page_of(SAMPLE_PAGE))]
    if operation.path in ("/t/collect", "/t/push"):
        return [
            *everyone,
            Caller("a page of the sample site", page_of(SAMPLE_PAGE)),
            Caller("a page elsewhere with the sample site's key", page_of(ELSEWHERE), may_write=False),
        ]
    if operation.path.startswith("/webhooks/twilio/"):
        # What Twilio signs is what it means to send: a schema-breaking form from Twilio is not a case.
        twilio = Caller("Twilio", twilio_signing(public_url), modes=(GenerationMode.POSITIVE,))
        return [*everyone, twilio]
    return everyone


def test_whatever_a_client_sends_the_api_answers_as_documented_and_stores_no_garbage(
    runtime: Runtime,
) -> None:
    # Leads to find, so routes on `{reference}` answer 200 too, not only 404; one with a phone, to text from.
    for number in range(1, 4):
        upsert_lead(runtime.db, LeadIn(email=f"lead{number}@acme.test", properties={"first_name": "Ada"}))
    upsert_lead(runtime.db, LeadIn(email="texter@acme.test", phone=LEAD_PHONE))
    ingest_events(runtime.db, [EventIn(id="seen-1", type="page_viewed", lead_id=1)])
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(runtime), config=FUZZ_CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [operation.label for operation in operations]
    public = [operation.label for operation in operations if not operation.definition.raw.get("security")]
    assert len(public) >= 8, public
    fuzzing = Fuzzing(row_counter(runtime))
    for operation in operations:
        for caller in callers_of(operation, runtime.settings.resolved_public_url):
            for mode in caller.modes:
                fuzzing.run(operation, mode, caller)

    assert not fuzzing.failures, "\n\n".join(fuzzing.failures)
    statuses = fuzzing.statuses
    assert not any(code >= 500 for code in statuses), statuses
    # The fuzzer reached past validation: some requests were accepted, many refused, none crashed.
    assert any(200 <= code < 300 for code in statuses) and statuses[422] > 20, statuses
    assert len(fuzzing.refused_cleanly) >= 20, fuzzing.refused_cleanly
    # And past the public doors, with the sample site's key and with Twilio's signature.
    seen = fuzzing.by_caller
    assert seen["a page of the sample site POST /t/collect"][202] > 0, seen
    assert seen["a page of the sample site GET /t/leadflow.js"][200] > 0, seen
    assert seen["Twilio POST /webhooks/twilio/sms"][200] > 0, seen
    assert seen["Twilio POST /webhooks/twilio/status"][204] > 0, seen
    for door in (
        "a stranger POST /webhooks/twilio/sms",
        "a page elsewhere with the sample site's key POST /t/collect",
        "a page elsewhere with the sample site's key POST /t/push",
    ):
        assert seen[door].keys() <= {400, 403, 413, 422}, seen


# --- The dashboard's sign-in and sign-out forms (not in the schema: pages for a browser, not an API) -------

VALID_TOKEN = "(this browser's CSRF token)"  # stands for the token of the page the browser was given
ANY_TEXT = st.text(max_size=200)  # NUL, controls, any plane
TARGETS = st.sampled_from(
    [
        "/dashboard?since=7d",
        "//attacker.example",
        "https://attacker.example/",
        "/dashboard//attacker.example",
        "/dashboard\\..\\",
        "/dashboard\r\nSet-Cookie: x=1",
        "/\\attacker.example",
        "javascript:alert(1)",
    ]
)
SIGN_IN_FORMS = st.fixed_dictionaries(
    {"key": st.one_of(st.just(API_KEY), ANY_TEXT), "csrf_token": st.one_of(st.just(VALID_TOKEN), ANY_TEXT)},
    optional={"next": st.one_of(TARGETS, ANY_TEXT), "other": ANY_TEXT},
)


async def test_whatever_is_posted_to_the_dashboards_forms_signs_in_only_the_key_holder_and_stays_on_site(
    runtime: Runtime,
) -> None:
    if runtime.db.dialect != "sqlite":
        pytest.skip("the dashboard's forms are the same on both backends")
    counts = row_counter(runtime)
    statuses: Counter[int] = Counter()
    port = free_port()
    # Attempts from many addresses (all of 127/8 is this machine), each within its sign-in limit.
    addresses = [
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            transport=httpx.HTTPTransport(local_address=f"127.0.1.{number}"),
        )
        for number in range(1, 12)
    ]
    browsers = itertools.cycle(addresses)

    @given(path=st.sampled_from(["/dashboard/login", "/dashboard/logout"]), form=SIGN_IN_FORMS | st.binary())
    @example("/dashboard/login", {"key": API_KEY, "csrf_token": VALID_TOKEN, "next": "//attacker.example"})
    @example("/dashboard/login", {"key": "lf_guess", "csrf_token": VALID_TOKEN})
    @example("/dashboard/login", {"key": API_KEY, "csrf_token": "forged"})
    @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def post(path: str, form: dict[str, str] | bytes) -> None:
        browser = next(browsers)
        browser.cookies.clear()  # a new browser, from an address with sign-in attempts left
        token = form_token(browser.get("/dashboard/login").text)
        fields = {} if isinstance(form, bytes) else form
        honest = fields.get("csrf_token") == VALID_TOKEN
        with_token = {name: token if value == VALID_TOKEN else value for name, value in fields.items()}
        body = form if isinstance(form, bytes) else urlencode(with_token).encode()
        before = counts()
        answer = browser.post(path, content=body, headers=FORM, follow_redirects=False)
        statuses[answer.status_code] += 1
        assert counts() == before  # signing in or out writes nothing to the store
        signed_in = f"{COOKIE}=" in " ".join(answer.headers.get_list("set-cookie"))
        if path == "/dashboard/logout":
            assert answer.status_code == (303 if honest else 403), answer.text[:300]
            return
        key_holder = honest and fields.get("key") == API_KEY
        expected = 303 if key_holder else 401 if honest else 403
        assert answer.status_code == expected, (form, answer.text[:300])
        assert signed_in == key_holder
        if key_holder:  # sent back to a dashboard page, never to another site
            location = answer.headers["location"]
            parts = urlsplit(location)
            assert not parts.scheme and not parts.netloc and location.startswith("/dashboard"), location
        else:
            assert answer.headers["content-type"].startswith("text/html")

    async with serving(create_app(runtime), port):
        await asyncio.to_thread(post)
    for address in addresses:
        address.close()
    assert statuses[303] and statuses[401] and statuses[403], statuses
