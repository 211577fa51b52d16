"""Benchmark: scoring fitted from history, on the Olist funnel (origin + landing page + first-contact month).

Prints JSON: the cross-validated ROC AUC of the integer points model, of the logistic regression underneath
it, and of a plain logistic regression (one-hot of the raw columns, scikit-learn defaults) on the same
folds, their ratio; and the wall time of a whole `fit` (held-out split, k-fold cross-validation, final model,
report) on 10,000 rows: the Olist rows resampled (for timing only: repeated rows flatter its AUC), and a
synthetic table of mixed columns. The first fit also pays one-time imports. Progress goes to stderr. The Olist data is looked up under LEADFLOW_SHARED_DIR (default: `shared/` beside the repository).

    LEADFLOW_SHARED_DIR=/work/shared .venv/bin/python bench/scoring_fit.py > result.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from leadflow.scoring.fit import FitOptions, fit_history, olist, read_history


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plain_logistic_auc(path: Path, columns: list[str], folds: int, seed: int) -> float:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = [[row[name] for name in columns] for row in rows]
    outcome = np.array([row["converted"] == "Yes" for row in rows])
    plain = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=1000))
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(plain, features, outcome, cv=splits, scoring="roc_auc").mean())


def timed_fit(path: Path, target: str, id_column: str, options: FitOptions) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    history = read_history(path, target)
    result = fit_history(history, id_column, [], options, log)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    cv = result.report.cross_validation
    assert cv is not None
    return {
        "rows": len(history),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # wall time depends on what else runs on the cores
        "rules": len(result.model.fit),
        "cv_auc_points": round(cv.mean_auc, 4),
        "cv_auc_model": round(cv.mean_model_auc, 4),
    }


def resampled(source: Path, destination: Path, rows: int, seed: int) -> Path:
    with source.open(newline="") as handle:
        reader = csv.reader(handle)
        header, body = next(reader), list(reader)
    picks = np.random.default_rng(seed).integers(len(body), size=rows)
    with destination.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for number, pick in enumerate(picks):
            writer.writerow([f"row-{number}", *body[pick][1:]])  # a fresh id: one row per lead
    return destination


def synthetic(destination: Path, rows: int, seed: int) -> Path:
    """Mixed columns: two categories (one with 300 values), three numbers with gaps, a Yes/No outcome."""
    rng = np.random.default_rng(seed)
    with destination.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "industry", "campaign", "employees", "pages_viewed", "minutes_on_site", "won"])
        for number in range(rows):
            industry = rng.choice(["software", "retail", "finance", "health", "education", "other"])
            campaign = f"campaign-{int(rng.zipf(1.5)) % 300}"
            employees = int(10 ** rng.uniform(0, 4))
            pages = int(rng.poisson(4))
            minutes = round(float(rng.exponential(6)), 1)
            logit = -3 + (industry == "software") + 0.5 * np.log10(employees) + 0.15 * min(pages, 10)
            won = rng.random() < 1 / (1 + np.exp(-logit))
            writer.writerow(
                [
                    f"id-{number}",
                    industry,
                    campaign,
                    "" if rng.random() < 0.1 else employees,
                    pages,
                    "" if rng.random() < 0.2 else minutes,
                    "Yes" if won else "No",
                ]
            )
    return destination


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the timed fits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not olist.olist_available():
        sys.exit(f"the Olist data is not at {olist.olist_dir()}: set LEADFLOW_SHARED_DIR")
    options = FitOptions(folds=args.folds, seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        history = olist.write_olist_history(Path(scratch) / "olist.csv")
        log("Olist: fitting (origin + landing page + first-contact month)")
        fitted = timed_fit(history, "converted", "mql_id", options)
        log("Olist: plain logistic regression on the same folds")
        plain = plain_logistic_auc(history, olist.KNOWN_AT_FIRST_CONTACT, args.folds, args.seed)
        log(f"timing a fit of {args.rows:,} resampled Olist rows")
        olist_timed = timed_fit(
            resampled(history, Path(scratch) / "big.csv", args.rows, args.seed),
            "converted",
            "mql_id",
            options,
        )
        log(f"timing a fit of {args.rows:,} synthetic mixed rows")
        mixed_timed = timed_fit(
            synthetic(Path(scratch) / "mixed.csv", args.rows, args.seed), "won", "id", options
        )
    print(
        json.dumps(
            {
                "olist": {
                    **fitted,
                    "columns": olist.KNOWN_AT_FIRST_CONTACT,
                    "cv_auc_plain_logistic_regression": round(plain, 4),
                    "ratio_points_to_plain": round(fitted["cv_auc_points"] / plain, 4),
                    "difference_points_minus_plain": round(fitted["cv_auc_points"] - plain, 4),
                },
                "fit_time": {"olist_resampled": olist_timed, "synthetic_mixed": mixed_timed},
                "folds": args.folds,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "scikit_learn": sklearn.__version__,
                    "load_average_1m": round(os.getloadavg()[0], 2),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
