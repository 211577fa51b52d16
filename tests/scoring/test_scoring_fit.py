"""A marketer learns a points model from past outcomes (`leadflow scoring fit`), reads and edits it like a
hand-written scoring.yaml, and compares models on the same history (`leadflow scoring evaluate`)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from typer.testing import CliRunner, Result

from leadflow.cli import app
from leadflow.content.loader import load_content
from leadflow.content.yamlfile import YamlFile
from leadflow.platform.settings import PROJECT_ROOT
from leadflow.scoring.fit import olist
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.score import score_lead

NOW = datetime(2026, 11, 24, tzinfo=UTC)
runner = CliRunner()


def scoring(command: str, history: Path, target: str, *options: str | Path) -> Result:
    """`leadflow scoring COMMAND --history HISTORY --target TARGET OPTIONS...`, as a user types it."""
    arguments = ["scoring", command, "--history", str(history), "--target", target, *map(str, options)]
    return runner.invoke(app, arguments)


# --- a history with a known generating model ---------------------------------------------------------

INDUSTRY_EFFECT = {"software": 1.0, "retail": 0.0, "manufacturing": -0.8}
RARE_INDUSTRIES = [f"niche {n}" for n in range(30)]  # each ~0.2 % of leads: grouped as "another value"
EMPLOYEES_PER_DECADE = 0.9  # log-odds per tenfold company size
EMPLOYEES_MISSING = 2.0  # leads that hide their size are large accounts
PAGE_VIEW = 0.25  # per page viewed, up to 10
JOB_TITLE_MISSING = -0.7


def _true_logit(row: dict[str, Any]) -> float:
    employees = row["employees"]
    size = EMPLOYEES_MISSING if employees is None else EMPLOYEES_PER_DECADE * math.log10(employees)
    return (
        -4.3
        + INDUSTRY_EFFECT.get(row["industry"], 0.0)
        + size
        + PAGE_VIEW * min(row["pages_viewed"], 10)
        + (JOB_TITLE_MISSING if row["job_title"] is None else 0.0)
    )


def _write_synthetic_history(path: Path, rows: int = 5000, seed: int = 7) -> np.ndarray:
    """Past leads drawn from the model above; returns the true log-odds of each row."""
    rng = np.random.default_rng(seed)
    industries = np.array([*INDUSTRY_EFFECT, *RARE_INDUSTRIES])
    weights = np.array([0.35, 0.35, 0.24, *[0.06 / len(RARE_INDUSTRIES)] * len(RARE_INDUSTRIES)])
    logits = []
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = [
            "lead_ref",
            "industry",
            "employees",
            "pages_viewed",
            "job_title",
            "colour",
            "deal_value",
            "won",
        ]
        writer.writerow(header)
        for number in range(rows):
            row = {
                "industry": str(rng.choice(industries, p=weights)),
                "employees": None if rng.random() < 0.1 else int(10 ** rng.uniform(0.5, 3.5)),
                "pages_viewed": int(rng.poisson(3)),
                "job_title": None
                if rng.random() < 0.15
                else str(rng.choice(["Manager", "Director", "Analyst"])),
                "colour": str(rng.choice(["red", "green", "blue", "black"])),  # noise
            }
            logit = _true_logit(row)
            logits.append(logit)
            won = rng.random() < 1 / (1 + math.exp(-logit))
            deal_value = f"{rng.integers(1000, 90000)}" if won else ""  # known only once won: a leak
            writer.writerow(
                [
                    f"L-{number:05d}-{rng.integers(1e9)}",
                    row["industry"].title() if rng.random() < 0.1 else row["industry"],  # case varies
                    "" if row["employees"] is None else row["employees"],
                    row["pages_viewed"],
                    row["job_title"] or "",
                    row["colour"],
                    deal_value,
                    "Yes" if won else "No",
                ]
            )
    return np.array(logits)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The synthetic history fitted once with the CLI: its files and the true log-odds per row."""
    directory = tmp_path_factory.mktemp("synthetic")
    history = directory / "history.csv"
    logits = _write_synthetic_history(history)
    result = scoring("fit", history, "won", "--out", directory / "fitted.yaml")
    assert result.exit_code == 0, result.output
    return {
        "history": history,
        "logits": logits,
        "model_path": directory / "fitted.yaml",
        "model": YamlFile(directory / "fitted.yaml").parse(ScoringModel),
        "report": json.loads((directory / "fitted.report.json").read_text()),
        "html": (directory / "fitted.report.html").read_text(),
        "output": result.output,
    }


def _score(model: ScoringModel, **properties: Any) -> int:
    base = {
        "industry": "retail",
        "employees": 100,
        "pages_viewed": 3,
        "job_title": "Manager",
        "colour": "red",
    }
    lead = {name: value for name, value in {**base, **properties}.items() if value is not None}
    return score_lead(model, lead, [], NOW).score


def test_the_fit_recovers_the_sign_and_order_of_the_true_effects(synthetic: dict[str, Any]) -> None:
    model = synthetic["model"]
    software, retail, manufacturing = (_score(model, industry=name) for name in INDUSTRY_EFFECT)
    assert software > retail > manufacturing
    assert _score(model, industry="Software") == software  # values compare case-insensitively
    sizes = [_score(model, employees=size) for size in (4, 30, 300, 3000)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    # Missing is a level of its own, learned where the truth puts it: between 30 and 3,000 employees.
    assert _score(model, employees=30) < _score(model, employees=None) < _score(model, employees=3000)
    pages = [_score(model, pages_viewed=count) for count in (0, 2, 4, 8)]
    assert pages == sorted(pages) and pages[0] < pages[-1]
    assert _score(model, job_title=None) < _score(model, job_title="Director")
    # Noise moves a lead less than the weakest true effect does.
    colours = [_score(model, colour=colour) for colour in ("red", "green", "blue", "black")]
    assert max(colours) - min(colours) < min(
        retail - manufacturing, _score(model, job_title="Analyst") - _score(model, job_title=None)
    )


def test_the_fitted_model_is_a_scoring_yaml_of_readable_rules(
    synthetic: dict[str, Any], tmp_path: Path
) -> None:
    model: ScoringModel = synthetic["model"]
    tests = {
        (rule.property, frozenset(rule.model_fields_set - {"rule", "property", "points"}))
        for rule in model.fit
    }
    assert ("employees", frozenset({"exists"})) in tests  # missing as its own level
    assert any(prop == "employees" and {"gte", "lt"} & fields for prop, fields in tests)  # numeric bands
    assert ("industry", frozenset({"exists", "not_in"})) in tests  # rare industries grouped
    assert all(rule.points > 0 for rule in model.fit)  # the lowest level of each column needs no rule
    assert model.thresholds.sql > model.thresholds.mql
    # It drops into a content directory as is.
    content = tmp_path / "content"
    shutil.copytree(PROJECT_ROOT / "segments", content / "segments")
    shutil.copytree(PROJECT_ROOT / "templates", content / "templates")
    shutil.copy(PROJECT_ROOT / "sales.yaml", content / "sales.yaml")
    shutil.copy(synthetic["model_path"], content / "scoring.yaml")
    assert load_content(content).scoring.fit == model.fit


def test_identifiers_and_leaks_are_left_out_and_said(synthetic: dict[str, Any]) -> None:
    report = synthetic["report"]
    status = {column["column"]: column["status"] for column in report["columns"]}
    assert status["lead_ref"].startswith("identifier")
    assert status["deal_value"] == "leaks the outcome"
    assert any("'deal_value' leaks the outcome" in warning for warning in report["warnings"])
    assert "deal_value" in synthetic["output"]
    used = {rule.property for rule in synthetic["model"].fit}
    assert {"industry", "employees", "pages_viewed", "job_title"} <= used
    assert not used & {"lead_ref", "deal_value", "won"}


def test_the_integer_points_rank_as_well_as_the_model_and_close_to_the_truth(
    synthetic: dict[str, Any],
) -> None:
    report = synthetic["report"]
    cv = report["cross_validation"]
    assert abs(cv["mean_auc"] - cv["mean_model_auc"]) < 0.005
    assert abs(report["held_out"]["auc"] - report["held_out"]["model_auc"]) < 0.005
    outcome = np.array([row["won"] == "Yes" for row in csv.DictReader(synthetic["history"].open())])
    best_possible = roc_auc_score(outcome, synthetic["logits"])
    assert best_possible - 0.03 < cv["mean_auc"] <= best_possible + 0.01
    assert report["held_out"]["lift"]["top 10%"] > 1.5


def test_the_report_has_calibration_thresholds_and_rules(synthetic: dict[str, Any]) -> None:
    held_out = synthetic["report"]["held_out"]
    bands = held_out["calibration"]
    assert sum(band["leads"] for band in bands) == held_out["rows"]
    observed = [band["observed"] for band in bands]
    assert observed[-1] > 2 * observed[0]
    for band in bands:
        assert abs(band["predicted"] - band["observed"]) < 0.12
    mql, sql = held_out["thresholds"]
    assert (mql["stage"], sql["stage"]) == ("MQL", "SQL")
    assert mql["leads"] > sql["leads"] and sql["conversion"] > mql["conversion"] > held_out["conversion_rate"]
    assert 0.2 < mql["share_of_leads"] < 0.4 and 0.05 < sql["share_of_leads"] < 0.15
    top = synthetic["report"]["model"]["rules"][0]
    assert top["importance"] == max(rule["importance"] for rule in synthetic["report"]["model"]["rules"])
    html = synthetic["html"]
    assert html.count("<svg") == 2 and "Calibration by score band" in html
    assert "http" not in html and "<script" not in html and "src=" not in html  # self-contained


def test_evaluate_scores_a_hand_written_model_through_its_rules(
    synthetic: dict[str, Any], tmp_path: Path
) -> None:
    guess = tmp_path / "guess.yaml"
    reversed_guess = tmp_path / "reversed.yaml"
    rule = "  - {rule: Software, property: industry, in: [software], points: %d}\n"
    behavior = "behavior:\n  - {rule: Demo, event: demo_requested, points: 50}\n"
    guess.write_text("thresholds: {mql: 5, sql: 10}\nfit:\n" + rule % 10 + behavior)
    reversed_guess.write_text("thresholds: {mql: -5, sql: 0}\nfit:\n" + rule % -10)

    def evaluate(model: Path) -> dict[str, Any]:
        out = tmp_path / f"{model.stem}.json"
        result = scoring("evaluate", synthetic["history"], "won", "--model", model, "--report-json", out)
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    rows = list(csv.DictReader(synthetic["history"].open()))
    outcome = np.array([row["won"] == "Yes" for row in rows])
    is_software = np.array([row["industry"].casefold() == "software" for row in rows])
    report = evaluate(guess)
    assert report["model"]["auc"] == pytest.approx(roc_auc_score(outcome, is_software))
    assert report["model"]["model_auc"] is None
    assert any("behavior rule" in warning for warning in report["warnings"])
    (mql, sql) = report["model"]["thresholds"]
    assert mql["leads"] == sql["leads"] == is_software.sum()
    assert mql["conversion"] == pytest.approx(outcome[is_software].mean())
    assert evaluate(reversed_guess)["model"]["auc"] == pytest.approx(1 - report["model"]["auc"])
    # The fitted model beats the guess, and evaluate agrees with what fit measured on all rows.
    fitted = evaluate(synthetic["model_path"])
    assert fitted["model"]["auc"] == pytest.approx(synthetic["report"]["model"]["auc"])
    assert fitted["model"]["auc"] > report["model"]["auc"]


# --- the Olist funnel ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def olist_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MQLs joined with their closed deals, deal columns included (they leak the outcome)."""
    if not olist.olist_available():
        pytest.skip(f"the Olist data is not at {olist.olist_dir()} (set LEADFLOW_SHARED_DIR)")
    path = tmp_path_factory.mktemp("olist") / "history.csv"
    return olist.write_olist_history(path, [*olist.KNOWN_AT_FIRST_CONTACT, *olist.deal_columns()])


def test_olist_fit_ranks_deals_as_well_as_logistic_regression(olist_history: Path, tmp_path: Path) -> None:
    out = tmp_path / "scoring.yaml"
    result = scoring("fit", olist_history, "converted", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    model = YamlFile(out).parse(ScoringModel)

    # Every deal column is filled in only for won deals: all are caught, and mql_id names rows.
    status = {column["column"]: column["status"] for column in report["columns"]}
    assert status["mql_id"].startswith("identifier")
    for column in olist.deal_columns():
        assert status[column] != "used", column
    assert {rule.property for rule in model.fit} == set(olist.KNOWN_AT_FIRST_CONTACT)

    # The target: origin + landing page + first-contact month, cross-validated.
    rows = list(csv.DictReader(olist_history.open()))
    features = [[row[name] for name in olist.KNOWN_AT_FIRST_CONTACT] for row in rows]
    outcome = np.array([row["converted"] == "Yes" for row in rows])
    plain = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    plain_auc = cross_val_score(plain, features, outcome, cv=folds, scoring="roc_auc").mean()
    points_auc = report["cross_validation"]["mean_auc"]
    assert points_auc >= 0.70
    assert points_auc >= plain_auc - 0.01


# --- mistakes a user makes -----------------------------------------------------------------------------


def test_a_missing_or_unreadable_outcome_column_is_named(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text("email,source,won\na@x.test,ads,Yes\nb@x.test,seo,maybe\nc@x.test,seo,No\n")
    missing = scoring("fit", history, "converted", "--out", tmp_path / "m.yaml")
    assert missing.exit_code == 1
    assert "no column 'converted'" in missing.output and "email, source, won" in missing.output
    unreadable = scoring("fit", history, "won", "--out", tmp_path / "m.yaml")
    assert unreadable.exit_code == 1 and "'maybe' (1 rows)" in unreadable.output
    assert not (tmp_path / "m.yaml").exists()
    history.write_text(
        "email,source,won\n" + "".join(f"{n}@x.test,seo,{'Yes' if n % 2 else 'No'}\n" for n in range(6))
    )
    unknown = scoring("fit", history, "won", "--exclude", "sorce", "--out", tmp_path / "m.yaml")
    assert unknown.exit_code == 1 and "no column 'sorce'" in unknown.output


def test_evaluate_reports_a_broken_model_by_file_and_line(synthetic: dict[str, Any], tmp_path: Path) -> None:
    model = tmp_path / "scoring.yaml"
    model.write_text(
        "thresholds: {mql: 5, sql: 10}\nfit:\n  - rule: Size\n    property: employees\n    gte: lots\n    points: 5\n"
    )
    result = scoring("evaluate", synthetic["history"], "won", "--model", model)
    assert result.exit_code == 1
    assert f"{model}:5: fit.0.gte" in result.output
