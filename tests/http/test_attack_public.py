"""Attacks on the routes anyone on the internet can reach without a key (issue 20): the tracking snippet and
its collect endpoint, the links in emails, Twilio's webhooks and the dashboard's sign-in. Long paths, query
strings and headers are answered at once with a 4xx (never a 5xx, never after seconds of work); a body over
the limit is refused with 413 on every one of them, and stores nothing; a form signed with Twilio's token but
holding what the store cannot keep is a 400 naming the field, not a crash. Driven over HTTP against a real
uvicorn server, its access log on (masking runs on every request line)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from leadflow.http.bodylimit import too_large
from leadflow.intake.ingest import LeadIn, upsert_lead
from leadflow.intake.tracking.collect import MAX_BODY_BYTES as COLLECT_LIMIT
from leadflow.intake.tracking.collect import PUSH_MAX_BODY_BYTES as PUSH_LIMIT
from leadflow.intake.tracking.sample_site import SAMPLE_SITE_KEY
from leadflow.platform.runtime import Runtime
from tests.http.test_api_limits import exchange, request_head, stored
from tests.http.test_attack_web import served  # noqa: F401  (the API on a real port, access log on)
from tests.intake.test_attack_ingest import AUTH, P256DH
from tests.reports.test_dashboard import FORM
from tests.support.helpers import channel_settings

LIMIT = 16 * 1024
TWILIO_TOKEN = "public-attack-token"
PHONE = "+14155550100"
LONG = 50_000  # a request head uvicorn reads when it arrives in one piece (httpx sends URLs up to 64 KiB)
SAMPLE_PAGE = {"Origin": "http://127.0.0.1:5000"}
COLLECT = json.dumps(
    {
        "site": SAMPLE_SITE_KEY,
        "anonymous_id": "visitor-0001",
        "events": [{"id": "event-0001", "type": "scrolled"}],
    }
)
PUSH = json.dumps(
    {
        "site": SAMPLE_SITE_KEY,
        "anonymous_id": "visitor-0001",
        "consent": True,
        "subscription": {"endpoint": "https://push.example.net/x", "keys": {"p256dh": P256DH, "auth": AUTH}},
    }
)
# Every route without an API key, with a body such as its real callers send.
PUBLIC: list[tuple[str, str, dict[str, str], str]] = [
    ("GET", f"/t/leadflow.js?site={SAMPLE_SITE_KEY}", {}, ""),
    ("POST", "/t/collect", {"Content-Type": "text/plain", **SAMPLE_PAGE}, COLLECT),
    ("GET", "/t/sw.js", {}, ""),
    ("POST", "/t/push", {"Content-Type": "text/plain", **SAMPLE_PAGE}, PUSH),
    ("GET", "/t/o/forged", {}, ""),
    ("GET", "/t/c/forged", {}, ""),
    ("GET", "/u/forged", {}, ""),
    ("POST", "/u/forged", FORM, "List-Unsubscribe=One-Click"),
    ("POST", "/webhooks/twilio/sms", FORM, f"From=%2B14155550100&Body=STOP&MessageSid=SM{'0' * 32}"),
    ("POST", "/webhooks/twilio/status", FORM, f"MessageSid=SM{'0' * 32}&MessageStatus=delivered"),
    ("GET", "/dashboard/login", {}, ""),
    ("POST", "/dashboard/login", FORM, "key=lf_guess&csrf_token=x"),
    ("POST", "/dashboard/logout", FORM, "csrf_token=x"),
]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {**channel_settings(), "max_body_bytes": LIMIT, "twilio_auth_token": TWILIO_TOKEN}


def with_query(path: str, query: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{query}"


def oversized(path: str) -> list[tuple[str, str, dict[str, str]]]:
    """What an attacker makes long of a request to `path`: (what, path, extra headers)."""
    runs = "a" * LONG
    return [
        ("a long path", path + runs if "forged" not in path else path.replace("forged", runs), {}),
        ("a long query value", with_query(path, f"q={'%' * LONG}"), {}),
        ("many query parameters", with_query(path, "&".join(f"p{n}=+1" for n in range(LONG // 10))), {}),
        ("a long header", path, {"X-Padding": "b" * LONG}),
        (
            "long headers the routes read",
            path,
            {
                "Origin": "http://127.0.0.1:" + "9" * 2_500,
                "Accept-Encoding": "deflate, " * 250 + "gzip",
                "X-Twilio-Signature": "c" * 2_500,
                "User-Agent": "d" * 2_500,
                "DNT": "1" * 2_500,
            },
        ),
        ("many cookies", path, {"Cookie": "; ".join(f"k{n}=v" for n in range(LONG // 8))}),
        ("a long cookie", path, {"Cookie": f"leadflow_csrf={'e' * LONG}"}),
        # uvicorn refuses (400) a head over 16 KiB unless it arrived in one read (up to 256 KiB): either way
        ("a 200 KB header", path, {"X-Padding": "f" * 200_000}),
    ]


async def test_long_paths_queries_and_headers_on_public_routes_are_refused_at_once(
    served: str,  # noqa: F811
    runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    answers: dict[str, tuple[int, float]] = {}
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        for method, path, headers, body in PUBLIC:
            for what, long_path, extra in oversized(path):
                started = time.perf_counter()
                try:
                    answer = await client.request(
                        method, long_path, content=body or None, headers={**headers, **extra}
                    )
                    status = answer.status_code
                except httpx.RemoteProtocolError:  # the server closed the connection on a head too large
                    status = 0
                answers[f"{what}: {method} {path}"] = status, time.perf_counter() - started
    failures = {attack: status for attack, (status, _) in answers.items() if status >= 500}
    assert not failures, failures
    slow = {attack: round(took, 2) for attack, (_, took) in answers.items() if took > 1.0}
    assert not slow, slow  # each within a second (a quadratic masking took 3 s for 15,000 characters)
    # Nothing but the sample page's visitor, its one event and its push consent (however many times it came).
    assert stored(runtime) == (1, 2, 2)
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert (
        len(lines) >= len(PUBLIC) * 6 and sum("more characters]" in line for line in lines) >= len(PUBLIC) * 3
    )


def chunked(body: bytes, size: int = 4096) -> list[bytes]:
    """`body` framed as a chunked transfer, one frame per `size` bytes."""
    frames = [body[start : start + size] for start in range(0, len(body), size)]
    return [f"{len(frame):x}\r\n".encode() + frame + b"\r\n" for frame in frames] + [b"0\r\n\r\n"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [route for route in PUBLIC if route[0] == "POST"],
    ids=[path for method, path, _, _ in PUBLIC if method == "POST"],
)
async def test_every_public_route_refuses_an_oversize_body_with_413(
    runtime: Runtime,
    served: str,  # noqa: F811
    method: str,
    path: str,
    headers: dict[str, str],
    body: str,
) -> None:
    port = int(served.rsplit(":", 1)[1])
    limit = {"/t/collect": COLLECT_LIMIT, "/t/push": PUSH_LIMIT}.get(path, LIMIT)
    padding = "x" * (2 * limit)
    if path.startswith("/t/"):
        large = json.dumps({**json.loads(body), "padding": padding}).encode()
    else:
        large = f"{body}&padding={padding}".encode()
    # request_head sends a Content-Type of its own (JSON): the routes read these bodies whatever it says.
    sent_as = {name: value for name, value in headers.items() if name != "Content-Type"}
    # Declared: answered on the headers alone, before a byte of the body is sent.
    head = request_head(port, path, **sent_as, Content_Length=str(len(large)))
    answer, sent = await exchange(port, head, [large])
    assert answer.startswith(b"HTTP/1.1 413") and sent == 0, answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"detail": too_large(limit)}
    # Streamed without a length: cut off as the count passes the limit, before the rest is sent.
    frames = chunked(large)
    answer, sent = await exchange(
        port, request_head(port, path, **sent_as, Transfer_Encoding="chunked"), frames
    )
    assert answer.startswith(b"HTTP/1.1 413") and sent < len(frames), answer[:300]
    assert stored(runtime) == (0, 0, 0)


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        ({"Body": "hello\x00"}, "Body contains a NUL character"),
        ({"Body": "STOP", "From": PHONE + "\x00"}, "From contains a NUL character"),
        ({"Body": "hello", "MessageSid": "SM" + "0" * 63}, "MessageSid is longer than 64 characters"),
        ({"Body": "STOP", "SmsSid": "SM" + "0" * 63}, "MessageSid is longer than 64 characters"),
        ({"Body": "🙂" * 801}, "Body is longer than a message can be (1600 UTF-16 code units)"),
    ],
)
async def test_a_form_signed_by_twilio_that_the_store_cannot_keep_is_a_400_naming_the_field(
    runtime: Runtime, api: httpx.AsyncClient, form: dict[str, str], problem: str
) -> None:
    """Only Twilio can sign, but a 500 would have Twilio retry, and the fuzzer found these (Twilio ids are
    34 characters, a message 1,600 UTF-16 code units)."""
    upsert_lead(runtime.db, LeadIn(email="texter@acme.test", phone=PHONE))
    validator = RequestValidator(TWILIO_TOKEN)
    url = runtime.settings.resolved_public_url + "/webhooks/twilio/sms"

    async def signed(params: dict[str, str]) -> httpx.Response:
        signature = validator.compute_signature(url, params)
        return await api.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})

    sid = {} if "SmsSid" in form else {"MessageSid": "SM" + "1" * 32}
    refused = await signed({"From": PHONE, **sid, **form})
    assert refused.status_code == 400 and refused.json()["detail"].startswith(problem), refused.text
    assert stored(runtime) == (1, 0, 0)
    # The longest message Twilio delivers is stored whole.
    longest = await signed({"From": PHONE, "MessageSid": "SM" + "2" * 32, "Body": "🙂" * 800})
    assert longest.status_code == 200 and stored(runtime) == (1, 1, 1)
