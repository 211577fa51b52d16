"""The public tracking endpoint: a site key can only send events, from its own origins, within its limits."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.http.ratelimit import RateLimiter
from leadflow.intake.tracking.model import RateLimit, Site
from leadflow.platform.settings import PROJECT_ROOT
from leadflow.platform.store.models import Event, Lead
from tests.support.helpers import Stack, eventually
from tests.support.proofs import EMAIL_LINK_ORIGIN, emailed_link, proof_from_click

ORIGIN = "https://www.acme-growth.test"
KEY = "pk_test_acme_growth"
ADA = "ada@acme-robotics.test"


def use_site(stack: Stack, **overrides: Any) -> Site:
    base = {"id": "acme", "key": KEY, "origins": [ORIGIN, "https://*.acme-growth.test"]}
    site = Site.model_validate({**base, "events": ["ebook_downloaded"], **overrides})
    stack.runtime.content = dataclasses.replace(stack.runtime.content, sites={site.key: site})
    return site


def visit(anonymous_id: str = "visitor-0001", *events: dict[str, Any], **extra: Any) -> dict[str, Any]:
    events = events or (
        {"id": "event-0001", "type": "page_viewed", "properties": {"url": f"{ORIGIN}/pricing"}},
    )
    return {"site": KEY, "anonymous_id": anonymous_id, "events": list(events), **extra}


async def collect(stack: Stack, body: Any, origin: str | None = ORIGIN, **headers: str) -> httpx.Response:
    if origin is not None:
        headers["Origin"] = origin
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    # The snippet sends text/plain (a "simple" request: no CORS preflight) and no API key.
    return await stack.api.post(
        "/t/collect",
        content=content,
        headers={"Content-Type": "text/plain", "Authorization": "", **headers},
    )


def stored_events(stack: Stack) -> int:
    with stack.runtime.db.read() as session:
        return session.scalar(select(func.count(Event.id))) or 0


async def test_the_snippet_is_served_with_the_sites_settings_and_gzipped(stack: Stack) -> None:
    use_site(stack, consent="required", flush_seconds=2)
    response = await stack.api.get(f"/t/leadflow.js?site={KEY}", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["content-encoding"] == "gzip"
    assert "max-age=" in response.headers["cache-control"]
    source = response.text  # httpx decodes gzip
    assert (
        f'"site": "{KEY}"' in source
        and '"consent": "required"' in source
        and '"flush_seconds": 2.0' in source
    )
    assert len(gzip.compress(source.encode())) < 6_000
    unknown = await stack.api.get("/t/leadflow.js?site=pk_nobody_here")
    assert unknown.status_code == 404 and "unknown site key" in unknown.text


async def test_events_from_an_allowed_origin_reach_the_lead(stack: Stack) -> None:
    use_site(stack)
    response = await collect(
        stack,
        visit(
            "visitor-0001",
            {
                "id": "pv-000001",
                "type": "page_viewed",
                "age_ms": 4000,
                "properties": {"url": f"{ORIGIN}/pricing"},
            },
            {"id": "dl-000001", "type": "ebook_downloaded", "properties": {"title": "The Nurture Playbook"}},
        ),
        origin="https://blog.acme-growth.test",
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0}
    assert response.headers["access-control-allow-origin"] == "https://blog.acme-growth.test"
    lead = await eventually(lambda: scored(stack, "visitor-0001"))
    assert lead["score"]["total"] == 25  # pricing 15 + ebook 10
    assert [item["id"] for item in lead["timeline"] if item["kind"] == "event"] == [
        "web:acme:dl-000001",
        "web:acme:pv-000001",  # four seconds older than the download: age_ms dates it in the server's clock
    ]
    again = await collect(stack, visit("visitor-0001", {"id": "pv-000001", "type": "page_viewed"}))
    assert again.json() == {"accepted": 0, "duplicates": 1}


@pytest.mark.parametrize(
    ("origin", "reason"),
    [
        ("https://evil.test", "may not send events"),
        ("https://www.acme-growth.test.evil.test", "may not send events"),
        (None, "may not send events"),
    ],
)
async def test_an_origin_not_allowed_is_refused(stack: Stack, origin: str | None, reason: str) -> None:
    use_site(stack)
    response = await collect(stack, visit(), origin=origin)
    assert response.status_code == 403 and reason in response.json()["detail"]
    assert "access-control-allow-origin" not in response.headers  # the page's script cannot even read why
    assert stored_events(stack) == 0


async def test_a_preflight_is_answered_only_for_allowed_origins(stack: Stack) -> None:
    use_site(stack)
    headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = await stack.api.options("/t/collect", headers={"Origin": ORIGIN, **headers})
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == ORIGIN
    refused = await stack.api.options("/t/collect", headers={"Origin": "https://evil.test", **headers})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (visit(site="pk_not_a_site"), 403, None),
        (visit("visitor-0001", {"id": "x-00000001", "type": "demo_requested"}), 422, "events.0.type"),
        (
            visit("visitor-0001", {"id": "x-00000001", "type": "page_viewed", "email": "a@b.test"}),
            422,
            "events.0.email",
        ),
        (visit("no"), 422, "anonymous_id"),
        (
            visit("visitor-0001", *[{"id": f"event-{i:04}", "type": "page_viewed"} for i in range(51)]),
            413,
            None,
        ),
        (visit("visitor-0001", identify={"email": "not an email"}), 422, "identify.email"),
        ({"site": KEY, "anonymous_id": "visitor-0001", "events": []}, 422, "body"),
        (b"{not json", 400, None),
        (b"x" * 40_000, 413, None),
    ],
)
async def test_bad_or_oversized_requests_are_refused_whole(
    stack: Stack, body: Any, status: int, field: str | None
) -> None:
    use_site(stack)
    response = await collect(stack, body)
    assert response.status_code == status, response.text
    if field:
        assert field in [problem["field"] for problem in response.json()["detail"]], response.json()
    assert stored_events(stack) == 0


async def test_rate_limits_per_address_and_per_key(stack: Stack) -> None:
    use_site(stack, per_ip=RateLimit(per_minute=60, burst=3))
    answers = [(await collect(stack, visit(f"visitor-{n:04}"))).status_code for n in range(4)]
    assert answers == [202, 202, 202, 429]
    limited = await collect(stack, visit("visitor-0009"))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert "this address" in limited.json()["detail"]
    # A key's own bucket runs dry whatever addresses the requests come from.
    use_site(stack, key="pk_test_second_site", per_key=RateLimit(per_minute=60, burst=2))
    answers = [(await collect(stack, visit(site="pk_test_second_site"))).status_code for _ in range(3)]
    assert answers == [202, 202, 429]


async def test_do_not_track_and_missing_consent_store_nothing(stack: Stack) -> None:
    use_site(stack)
    dnt = await collect(stack, visit(), DNT="1")
    assert dnt.status_code == 204
    use_site(stack, consent="required")
    refused = await collect(stack, visit())
    assert refused.status_code == 403 and "consent" in refused.json()["detail"]
    assert stored_events(stack) == 0
    accepted = await collect(stack, visit(consent=True))
    assert accepted.status_code == 202


async def test_a_site_key_can_never_read_or_use_the_api(stack: Stack) -> None:
    use_site(stack)
    await collect(stack, visit())
    stack.api.headers["Authorization"] = f"Bearer {KEY}"
    assert (await stack.api.get("/v1/leads/visitor-0001")).status_code == 401
    assert (
        await stack.api.post("/v1/events", json={"id": "e", "type": "x", "email": "a@b.test"})
    ).status_code == 401


async def test_an_identify_of_a_known_address_is_a_claim_until_the_browser_proves_it(stack: Stack) -> None:
    use_site(stack, origins=[ORIGIN, EMAIL_LINK_ORIGIN])
    saved = await stack.api.post(
        "/v1/leads", json={"email": "ada@acme-robotics.test", "properties": {"first_name": "Ada"}}
    )
    ada = saved.json()["id"]
    await collect(
        stack,
        visit(
            "visitor-0002",
            {
                "id": "pv-000002",
                "type": "page_viewed",
                "properties": {"url": f"{ORIGIN}/pricing?utm_source=newsletter", "utm_source": "newsletter"},
            },
        ),
    )
    response = await collect(
        stack,
        visit(
            "visitor-0002",
            {"id": "dl-000002", "type": "ebook_downloaded"},
            identify={
                "email": "Ada@Acme-Robotics.test",
                "properties": {"first_name": "Mallory", "job_title": "CTO"},
            },
        ),
    )
    assert response.status_code == 202
    assert "lead" not in response.text  # a public key learns nothing about leads

    # Anybody can type Ada's address: the browser keeps its own lead, Ada's is untouched (no blank filled).
    visitor = await eventually(lambda: scored(stack, "visitor-0002", at_least=25))
    assert visitor["id"] != ada and visitor["email"] is None
    assert "identify_claimed" in {item["type"] for item in visitor["timeline"]}
    unclaimed = (await stack.api.get(f"/v1/leads/{ada}")).json()
    assert unclaimed["properties"] == {"first_name": "Ada"} and unclaimed["merged_leads"] == []

    # Ada follows a link in an email we sent her, in this browser: now it is hers, with all it did.
    proof = await proof_from_click(stack.api, await emailed_link(stack.runtime, stack.inbox, ada, ADA))
    assert (
        await collect(stack, {"site": KEY, "anonymous_id": "visitor-0002", "proof": proof})
    ).status_code == 202
    lead = await eventually(lambda: scored(stack, "visitor-0002", at_least=30))
    assert lead["id"] == ada
    assert lead["properties"] == {"first_name": "Ada"}  # an unproven claim's properties are not kept
    assert lead["score"]["total"] == 15 + 10 + 5  # pricing, ebook, the click
    assert lead["source"]["first_touch"]["source"] == "newsletter"
    [merge] = lead["merged_leads"]
    assert merge["id"] == visitor["id"] and merge["anonymous_id"] == "visitor-0002"
    assert merge["events_moved"] == 3  # the page view, the download, the claim
    with stack.runtime.db.read() as session:
        assert session.get_one(Lead, merge["id"]).merged_into_id == ada
    # The merged-away lead's workflow received `lead_merged` and ended; Ada's carries on.
    workflow_of = stack.runtime.settings.lead_workflow_id
    merged_workflow = stack.client.get_workflow_handle(workflow_of(merge["id"]))
    await eventually(lambda: status_of(merged_workflow, WorkflowExecutionStatus.COMPLETED))
    assert await status_of(
        stack.client.get_workflow_handle(workflow_of(ada)), WorkflowExecutionStatus.RUNNING
    )


async def status_of(handle: WorkflowHandle, wanted: WorkflowExecutionStatus) -> bool:
    return (await handle.describe()).status == wanted


async def scored(stack: Stack, reference: str, at_least: int = 1) -> dict | None:
    response = await stack.api.get(f"/v1/leads/{reference}")
    if response.status_code != 200 or response.json()["score"]["total"] < at_least:
        return None
    return response.json()


def test_a_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(lambda: now[0])
    limit = RateLimit(per_minute=60, burst=2)
    assert [limiter.retry_after("ip:a", limit) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert limiter.retry_after("ip:b", limit) == 0.0  # another address has its own bucket
    now[0] = 0.5
    assert limiter.retry_after("ip:a", limit) == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.retry_after("ip:a", limit) == 0.0


def test_mistakes_in_sites_yaml_are_reported_with_file_and_line(tmp_path: Path) -> None:
    for part in ("scoring.yaml", "sales.yaml", "segments", "templates"):
        source = PROJECT_ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / part)
    (tmp_path / "sites.yaml").write_text(
        "sites:\n"
        "  - id: shop\n"
        "    key: pk_shop_key_1\n"
        "    origins: ['https://shop.test/path']\n"
        "  - id: blog\n"
        "    key: pk_shop_key_1\n"
        "    origins: ['https://blog.test']\n"
        "    consent: maybe\n"
    )
    result = CliRunner().invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "sites.yaml:4: sites.0.origins.0: origin 'https://shop.test/path' is not like" in output
    assert "sites.yaml:8: sites.1.consent" in output
