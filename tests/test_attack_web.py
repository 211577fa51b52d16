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
from temporalio.testing import WorkflowEnvironment

from leadflow.api import create_app
from leadflow.content.loader import load_content
from leadflow.logs import MAX_LOGGED_CHARS, RedactPersonalData, redact
from leadflow.runtime import Runtime
from leadflow.tracking.sample_site import SAMPLE_SITE_KEY
from tests.browser import serving
from tests.conftest import API_KEY, eventually, free_port
from worker import running_worker

BEARER = {"Authorization": f"Bearer {API_KEY}"}
ADDRESS = "orsolya.vantwerp@acme-robotics.test"


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[str]:
    """The API on a real port, its access log on (records propagate to the root, where caplog is)."""
    if runtime.db.dialect != "sqlite":
        pytest.skip("the web front is the same on both backends")
    port = free_port()
    async with serving(create_app(runtime), port, log_level="info", log_config=None, access_log=True):
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
