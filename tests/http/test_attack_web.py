"""Attacks on the web front (issue 20): what a stranger on the internet can send to `leadflow api` (long
request lines, keys in addresses, forged dashboard forms, password guessing, framing) and what a marketer's
regular expression can be made to do by the event properties a stranger controls. Each is driven against the
real API on a real uvicorn server, over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment

from leadflow.content.loader import load_content
from leadflow.http.app import create_app
from leadflow.intake.tracking.sample_site import SAMPLE_SITE_KEY, sample_site
from leadflow.platform.logs import MAX_LOGGED_CHARS, RedactPersonalData, redact
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Event
from leadflow.reports.dashboard import COOKIE, CSRF_COOKIE, SIGN_IN_ATTEMPTS
from tests.reports.test_dashboard import FORM, csrf_token, form_token
from tests.support.browser import CHROMIUM, chromium, serving
from tests.support.helpers import API_KEY, eventually, free_port
from worker import running_worker

BEARER = {"Authorization": f"Bearer {API_KEY}"}
ADDRESS = "orsolya.vantwerp@acme-robotics.test"


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[str]:
    """The API on a real port with the sample site at /sample/, as `leadflow dev` serves them, its access log
    on (records propagate to the root, where caplog is)."""
    if runtime.db.dialect != "sqlite":
        pytest.skip("the web front is the same on both backends")
    port = free_port()
    app = create_app(runtime)
    app.mount("/sample", sample_site(f"/t/leadflow.js?site={SAMPLE_SITE_KEY}"))
    async with serving(app, port, log_level="info", log_config=None, access_log=True):
        yield f"http://127.0.0.1:{port}"


# --- Row 2: access-log masking is linear, log lines are bounded -------------------------------------------


def seconds_per_call(function: Callable[[str], Any], text: str) -> float:
    """The fastest of three timings of `function(text)` (the least disturbed by other work on the machine),
    each of enough calls to last about 20 ms."""
    timer = timeit.Timer(lambda: function(text))
    loops = max(1, round(0.02 / timer.timeit(number=1)))
    return min(timer.repeat(repeat=3, number=loops)) / loops


def growth(function: Callable[[str], Any], shape: Callable[[int], str], n: int) -> float:
    """How much longer `function` takes on an input ten times as long: about 10 when linear, 100 when
    quadratic."""
    return seconds_per_call(function, shape(10 * n)) / seconds_per_call(function, shape(n))


def run_of(unit: str) -> Callable[[int], str]:
    return lambda length: "GET /" + (unit * (length // len(unit) + 1))[:length]


def access_record(path: str) -> logging.LogRecord:
    """A record as uvicorn's access logger makes it."""
    arguments = ("127.0.0.1:5000", "GET", path, "1.1", 404)
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', arguments, None
    )


def masked_access_line(path: str) -> str:
    record = access_record(path)
    RedactPersonalData().filter(record)
    return record.getMessage()


def test_masking_a_long_path_takes_linear_time() -> None:
    # A run of one character with no address in it was the quadratic case (each position tried anew).
    # Linear: about 10; quadratic: about 100 (1,000 → 10,000 characters).
    assert growth(redact, run_of("a"), 1_000) < 40
    for unit in ("a", "%", "+1", "?key="):
        assert growth(redact, run_of(unit), 50_000) < 40, unit  # 50,000 → 500,000 characters
    assert growth(masked_access_line, run_of("a"), 50_000) < 40
    # Still masked, wherever the address is in a million characters, and the line is bounded.
    line = masked_access_line("/x" * 500_000 + f"/v1/leads/{ADDRESS}")
    assert ADDRESS not in line and "orsolya" not in line
    assert len(line) < MAX_LOGGED_CHARS + 200 and line.endswith('more characters] HTTP/1.1" 404')


async def test_requests_with_long_paths_do_not_stall_the_api(
    served: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    long_paths = [
        "/" + "a" * 15_000,
        f"/v1/leads/{ADDRESS}/" + "b" * 14_000,
        "/dashboard/leads/" + "%" * 15_000,
        "/" + "c" * 1_000_000,  # over h11's 16 KiB for a request head: refused before it is routed
    ]
    async with httpx.AsyncClient(base_url=served, timeout=60) as client:
        await client.get("/v1/health", headers=BEARER)
        attacks = asyncio.gather(*(client.get(path) for path in long_paths * 2), return_exceptions=True)
        waits = []
        for _ in range(20):
            started = time.perf_counter()
            assert (await client.get("/v1/health", headers=BEARER)).status_code == 200
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
        answers = await attacks
    assert max(waits) < 1.5, f"/v1/health took up to {max(waits):.2f} s beside long paths"
    assert statistics.median(waits) < 0.5
    statuses = {answer.status_code for answer in answers if isinstance(answer, httpx.Response)}
    assert statuses <= {400, 401, 404, 414}, statuses
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    long_lines = [line for line in lines if "more characters]" in line]
    assert len(long_lines) >= 6, lines
    assert all(len(line) < MAX_LOGGED_CHARS + 200 for line in lines)
    assert not [line for line in lines if "orsolya" in line]


# --- Row 7: a marketer's regular expression cannot be made to stall a worker ------------------------------

CATASTROPHIC = "/blog/(a+)+$"  # backtracking engines take exponential time on "/blog/aaaa…a!"


async def collect(client: httpx.AsyncClient, visitor: str, *urls: str) -> None:
    """Page views from the sample site's snippet: its public key, an allowed origin, no API key."""
    events = [
        {"id": f"{visitor}-{i}", "type": "page_viewed", "properties": {"url": url}}
        for i, url in enumerate(urls)
    ]
    body = {"site": SAMPLE_SITE_KEY, "anonymous_id": visitor, "events": events}
    answer = await client.post(
        "/t/collect",
        content=json.dumps(body),
        headers={"Content-Type": "text/plain", "Origin": "http://127.0.0.1:5000"},
    )
    assert answer.status_code == 202, answer.text


async def test_a_catastrophic_pattern_on_a_strangers_url_does_not_stall_scoring(
    runtime: Runtime, content_dir: Path, temporal: WorkflowEnvironment
) -> None:
    if runtime.db.dialect != "sqlite":
        pytest.skip("the regex engine is the same on both backends")
    scoring = content_dir / "scoring.yaml"
    scoring.write_text(scoring.read_text().replace("matches: '/blog/'", f"matches: '{CATASTROPHIC}'"))
    marketer = replace(
        runtime,
        settings=runtime.settings.model_copy(update={"content_dir": content_dir}),
        content=load_content(content_dir),
    )
    port = free_port()
    async with running_worker(temporal.client, marketer) as router:
        app = create_app(marketer, on_events_accepted=router.wake)
        async with serving(app, port), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            hostile = "/blog/" + "a" * 26 + "!"  # Python's re: 6 s a search on this machine
            await collect(client, "stranger-0001", hostile, hostile + "!", hostile + "!!", "/pricing")
            await collect(client, "visitor-00001", "/pricing", "/blog/aaa")
            started = time.monotonic()

            async def score(visitor: str) -> int | None:
                answer = await client.get(f"/v1/leads/{visitor}", headers=BEARER)
                total = answer.json()["score"]["total"] if answer.status_code == 200 else 0
                return total or None

            assert await eventually(lambda: score("visitor-00001"), timeout=20) == 16  # pricing 15 + blog 1
            assert await eventually(lambda: score("stranger-0001"), timeout=20) == 15  # the hostile URLs: 0
            assert time.monotonic() - started < 10


def test_check_refuses_patterns_re2_cannot_run(content_dir: Path) -> None:
    scoring = content_dir / "scoring.yaml"
    scoring.write_text(
        scoring.read_text()
        .replace("matches: '/pricing'", r"matches: '(/pricing)\1'")
        .replace("matches: '/blog/'", "matches: '(?<!/archive)/blog/'")
    )
    lines = scoring.read_text().splitlines()
    backreference = 1 + next(i for i, line in enumerate(lines) if "(/pricing)" in line)
    lookbehind = 1 + next(i for i, line in enumerate(lines) if "(?<!" in line)
    leadflow = Path(sys.executable).with_name("leadflow")
    checked = subprocess.run(
        [str(leadflow), "check", str(content_dir)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    reported = (checked.stdout + checked.stderr).splitlines()
    assert any(
        line.startswith(f"{scoring}:{backreference}: ") and "invalid escape sequence: \\1" in line
        for line in reported
    ), reported
    assert any(
        line.startswith(f"{scoring}:{lookbehind}: ") and "invalid perl operator: (?<!" in line
        for line in reported
    ), reported
    assert "Traceback" not in checked.stdout + checked.stderr


# --- Row 6: the dashboard's sign-in, forms and headers ---------------------------------------------------


async def post_form(client: httpx.AsyncClient, path: str, **fields: str) -> httpx.Response:
    return await client.post(path, data=fields, headers=FORM)


async def test_a_key_in_the_dashboards_address_neither_signs_in_nor_reaches_the_log(
    served: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient(base_url=served) as browser:
        answer = await browser.get(f"/dashboard?since=7d&key={API_KEY}")
        assert answer.status_code == 401 and "not accepted in the address" in answer.text
        assert COOKIE not in answer.headers.get("set-cookie", "")
        assert 'name="next" value="/dashboard?since=7d"' in answer.text  # the key is not carried on
        assert (await browser.get("/dashboard")).status_code == 401
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert any("/dashboard?since=7d&key=[redacted]" in line for line in lines), lines
    assert not [line for line in lines if API_KEY in line]


async def test_dashboard_forms_are_refused_without_a_valid_csrf_token(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as browser, httpx.AsyncClient(base_url=served) as attacker:
        # A page elsewhere posting the sign-in form (login CSRF): no token, or the attacker's own token.
        assert (await post_form(browser, "/dashboard/login", key=API_KEY)).status_code == 403
        stolen = await csrf_token(attacker)  # valid, but for the attacker's cookie, not the browser's
        await browser.get("/dashboard/login")
        forged = await post_form(browser, "/dashboard/login", key=API_KEY, csrf_token=stolen)
        assert forged.status_code == 403 and COOKIE not in forged.headers.get("set-cookie", "")
        tampered = (await csrf_token(browser))[:-2] + "AA"
        assert (
            await post_form(browser, "/dashboard/login", key=API_KEY, csrf_token=tampered)
        ).status_code == 403
        assert (await browser.get("/dashboard")).status_code == 401

        signed_in = await post_form(
            browser, "/dashboard/login", key=API_KEY, csrf_token=await csrf_token(browser)
        )
        assert signed_in.status_code == 303 and (await browser.get("/dashboard")).status_code == 200
        # A page elsewhere signing the user out: refused, the session stays.
        assert (await post_form(browser, "/dashboard/logout")).status_code == 403
        assert (await post_form(browser, "/dashboard/logout", csrf_token=stolen)).status_code == 403
        assert (await browser.get("/dashboard")).status_code == 200
        signed_out = await post_form(
            browser, "/dashboard/logout", csrf_token=await csrf_token(browser, "/dashboard")
        )
        assert signed_out.status_code == 303 and (await browser.get("/dashboard")).status_code == 401


async def test_sign_in_attempts_are_limited_per_client(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as guesser:
        token = await csrf_token(guesser)
        for attempt in range(SIGN_IN_ATTEMPTS.burst):
            wrong = await post_form(guesser, "/dashboard/login", key=f"lf_guess{attempt}", csrf_token=token)
            assert wrong.status_code == 401, attempt
        limited = await post_form(guesser, "/dashboard/login", key=API_KEY, csrf_token=token)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "Too many sign-in attempts" in limited.text and COOKIE not in limited.headers.get(
            "set-cookie", ""
        )
    # Another address signs in meanwhile (all of 127/8 is this machine).
    other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=served, transport=other) as colleague:
        token = await csrf_token(colleague)
        assert (
            await post_form(colleague, "/dashboard/login", key=API_KEY, csrf_token=token)
        ).status_code == 303


async def test_cookies_are_secure_when_the_public_address_is_https(runtime: Runtime) -> None:
    if runtime.db.dialect != "sqlite":
        pytest.skip("the web front is the same on both backends")
    behind_tls = replace(
        runtime, settings=runtime.settings.model_copy(update={"public_url": "https://leadflow.example"})
    )
    port = free_port()
    # TLS ends at the proxy: the API itself is spoken to in plain HTTP.
    async with (
        serving(create_app(behind_tls), port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as proxy,
    ):
        page = await proxy.get("/dashboard/login")
        nonce = page.cookies[CSRF_COOKIE]
        answer = await proxy.post(
            "/dashboard/login",
            data={"key": API_KEY, "csrf_token": form_token(page.text)},
            headers={**FORM, "Cookie": f"{CSRF_COOKIE}={nonce}"},
        )
    assert answer.status_code == 303
    for cookie in [*page.headers.get_list("set-cookie"), *answer.headers.get_list("set-cookie")]:
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"secure", "httponly"} <= attributes, cookie
        assert "samesite=lax" in cookie.lower(), cookie
    assert any(cookie.startswith(f"{COOKIE}=") for cookie in answer.headers.get_list("set-cookie"))


async def test_pages_carry_security_headers_and_every_answer_nosniff(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as client:
        pages = {
            "/dashboard/login": await client.get("/dashboard/login"),
            "/dashboard": await client.get("/dashboard", headers=BEARER),
            "/dashboard/preview": await client.get(
                "/dashboard/preview?template=ebook_delivery&lead=1", headers=BEARER
            ),
            "/u/forged-token": await client.get("/u/forged-token"),
            "/docs": await client.get("/docs"),
            "/sample/index.html": await client.get("/sample/index.html"),
        }
        others = {
            "/v1/health": await client.get("/v1/health", headers=BEARER),
            "/v1/leads/1 (401)": await client.get("/v1/leads/1"),
            "/t/leadflow.js": await client.get(f"/t/leadflow.js?site={SAMPLE_SITE_KEY}"),
            "/openapi.json": await client.get("/openapi.json"),
        }
    for path, answer in pages.items():
        assert answer.headers["content-type"].startswith("text/html"), path
        assert answer.headers.get("x-frame-options") == "DENY", path
        assert answer.headers.get("x-content-type-options") == "nosniff", path
        assert answer.headers.get("referrer-policy") == "no-referrer", path
        assert "frame-ancestors 'none'" in answer.headers.get("content-security-policy", ""), path
    for path in ("/dashboard/login", "/dashboard", "/dashboard/preview"):
        policy = pages[path].headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy, path  # no script runs
        assert "form-action 'self'" in policy and "base-uri 'none'" in policy, path
        assert "<script" not in pages[path].text and " on" + "change=" not in pages[path].text, path
    for path, answer in others.items():
        assert answer.headers.get("x-content-type-options") == "nosniff", path
        assert "x-frame-options" not in answer.headers, path


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed")
async def test_the_dashboard_and_the_sample_site_work_under_their_policies_in_chromium(
    served: str, runtime: Runtime, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as driver, chromium(driver, tmp_path / "profile") as browser:
        page = await browser.new_page()
        refused: list[str] = []
        page.on(
            "console",
            lambda message: (
                refused.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        await page.goto(f"{served}/dashboard/preview")
        await page.fill("input[name=key]", API_KEY)
        await page.click("button[type=submit] >> text=Sign in")
        await page.wait_for_selector("select[name=template]")
        # The policy is enforced: a handler slipped into the page is refused (and reported on the console).
        await page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=alert(1)>')")
        await eventually(lambda: refused, timeout=5, message="an inline handler ran on the dashboard")
        refused.clear()
        async with httpx.AsyncClient(base_url=served, headers=BEARER) as api:
            lead = await api.post(
                "/v1/leads", json={"email": "ada@acme.test", "properties": {"first_name": "Ada"}}
            )
        await page.goto(f"{served}/dashboard/preview?template=ebook_delivery&lead={lead.json()['id']}")
        await page.wait_for_selector("#subject")
        assert await page.frame_locator("#rendered iframe").locator("body").count() == 1
        await page.goto(f"{served}/dashboard?since=7d")
        await page.select_option("select[name=since]", "90d")
        await page.click("button >> text=Show")
        await page.wait_for_url(f"{served}/dashboard?since=90d")
        await page.click("button >> text=Sign out")
        await page.wait_for_selector("input[name=key]")
        # The sample site under the API's headers: its inline stub and the snippet run, events arrive.
        await page.goto(f"{served}/sample/index.html")

        def page_views() -> int:
            with runtime.db.read() as session:
                return session.scalar(select(func.count(Event.id)).where(Event.type == "page_viewed")) or 0

        await page.goto(f"{served}/sample/pricing.html")  # leaving a page sends what waits in the browser
        await eventually(page_views, timeout=20, message="the sample site's snippet sent no page view")
        assert not refused, refused
