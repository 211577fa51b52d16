"""Every command that reports takes `--format table|json`: with json, stdout is one JSON document and
nothing else (progress and warnings go to stderr), so a program can read it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT, get_settings
from leadflow.scoring.qualification import rescore
from tests.scoring.test_scoring_fit import _write_synthetic_history
from tests.support.helpers import copy_content

LEADFLOW = Path(sys.executable).parent / "leadflow"


def _run(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LEADFLOW), *map(str, arguments)], capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT
    )


def _json_only(stdout: str) -> Any:
    """The document on stdout; json.loads refuses anything printed around it."""
    return json.loads(stdout)


def test_check_as_json_lists_the_content_or_every_mistake(tmp_path: Path) -> None:
    good = _run("check", PROJECT_ROOT, "--format", "json")
    assert good.returncode == 0, good.stderr
    document = _json_only(good.stdout)
    assert document["ok"] is True and document["problems"] == []
    assert "ebook_follow_up" in document["sequences"] and document["salespeople"] == 3

    copy_content(tmp_path)
    (tmp_path / "templates/email/_footer.html.j2").write_text("{% if %}broken{% endfor %}")
    bad = _run("check", tmp_path, "--format", "json")
    assert bad.returncode == 1 and bad.stderr == ""
    problems = _json_only(bad.stdout)["problems"]
    assert problems == [
        {
            "file": str(tmp_path / "templates/email/_footer.html.j2"),
            "line": 1,
            "reason": "does not compile: Expected an expression, got 'end of statement block'",
        }
    ]
    wrong = _run("check", tmp_path, "--format", "xml")
    assert wrong.returncode == 2 and wrong.stdout == "" and "'xml' is not one of" in wrong.stderr


@pytest.fixture
def scored_lead(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A lead with a score in the ledger, in the store the CLI reads."""
    lead, _ = upsert_lead(runtime.db, LeadIn(email="ada@acme.test", properties={"job_title": "VP Sales"}))
    ingest_events(runtime.db, [EventIn(id="ada-demo", type="demo_requested", email=lead.email)])
    with runtime.db.transaction() as session:
        rescore(session, lead.id, runtime.content.scoring, clock.now())
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", runtime.db.url)
    get_settings.cache_clear()
    yield "ada@acme.test"
    get_settings.cache_clear()


def _invoke(*arguments: str | Path) -> Result:
    result = CliRunner().invoke(app, [str(argument) for argument in arguments])
    assert result.exit_code == 0, result.output
    return result


def test_leads_show_score_and_report_as_json(scored_lead: str) -> None:
    shown = _json_only(_invoke("leads", "show", scored_lead, "--format", "json").stdout)
    assert shown["email"] == scored_lead and shown["score"]["total"] > 0
    assert any(item["rule"] == "Demo requested" for item in shown["score"]["breakdown"])

    scored = _json_only(_invoke("leads", "score", scored_lead, "--format", "json").stdout)
    assert scored["score"] == shown["score"]["total"] and scored["model_version"]
    assert scored["ledger_entry"]["score"] == scored["score"]
    assert {item["rule"] for item in scored["breakdown"]} >= {"Demo requested"}

    report = _json_only(_invoke("report", "--since", "all", "--format", "json").stdout)
    assert report["funnel"]["stages"][0]["leads"] == 1


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "history.csv"
    _write_synthetic_history(path, rows=800)
    return path


def test_scoring_fit_and_evaluate_as_json(history: Path, tmp_path: Path) -> None:
    out = tmp_path / "fitted.yaml"
    fit = _invoke("scoring", "fit", "--history", history, "--target", "won", "--out", out, "--format", "json")
    fitted = _json_only(fit.stdout)
    assert fitted["model"] == str(out) and fitted["rules"] > 0 and out.exists()
    assert fitted["report_json"] == str(tmp_path / "fitted.report.json")  # the files are written as before
    assert fitted["report"] == json.loads((tmp_path / "fitted.report.json").read_text())
    assert "leaks the outcome" in fit.stderr  # warnings go to stderr (and are in the report)

    evaluated = _json_only(
        _invoke(
            "scoring", "evaluate", "--history", history, "--target", "won", "--model", out, "--format", "json"
        ).stdout
    )
    assert evaluated["model"] == str(out) and evaluated["report_json"] is None
    assert evaluated["report"]["command"] == "evaluate"
    assert evaluated["report"]["model"]["auc"] > 0.6  # the fitted model ranks the history it came from


def test_simulate_as_json_keeps_its_progress_on_stderr(tmp_path: Path) -> None:
    script = tmp_path / "events.yaml"
    script.write_text("events:\n  - {at: 0m, type: ebook_downloaded}\n")
    run = _run("simulate", "ebook_follow_up", "--events", script, "--leads", "2", "--format", "json")
    assert run.returncode == 0, run.stderr
    document = _json_only(run.stdout)
    assert document["sequence"] == "ebook_follow_up" and document["totals"]["leads"] == 2
    assert document["totals"]["messages"]["email ebook_delivery sent"] == 2
    first = document["leads"][0]
    assert first["timeline"][0]["offset_seconds"] >= 0
    assert any(entry["what"].startswith("email ebook_delivery sent") for entry in first["timeline"])
    assert "event(s) played" in run.stderr  # the progress
