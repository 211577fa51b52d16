"""`leadflow scoring fit` and `evaluate`: from a history table to a points model and its report."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from leadflow.scoring.fit.encoding import choose_columns
from leadflow.scoring.fit.evaluation import (
    ColumnStrength,
    Evaluation,
    auc,
    column_strengths,
    evaluate_model,
    lift_at,
    score_history,
)
from leadflow.scoring.fit.history import History, HistoryError
from leadflow.scoring.fit.points import PointsModel, VolumeTargets, learn_points, parse_model, render_yaml
from leadflow.scoring.model import ScoringModel

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FitOptions:
    folds: int = 5
    holdout: float = 0.25
    bins: int = 5
    targets: VolumeTargets = field(default_factory=VolumeTargets)
    seed: int = 0


@dataclass(frozen=True)
class ColumnReport:
    column: str
    kind: str
    levels: int
    auc: float | None  # alone, in this history
    status: str  # "used" or why not


@dataclass(frozen=True)
class CrossValidation:
    folds: int
    auc: list[float]  # integer points, per fold
    model_auc: list[float]  # the logistic regression underneath, per fold
    lift_top_10: list[float]

    @property
    def mean_auc(self) -> float:
        return statistics.fmean(self.auc)

    @property
    def mean_model_auc(self) -> float:
        return statistics.fmean(self.model_auc)


@dataclass
class Report:
    command: str  # "fit" or "evaluate"
    history: str
    target: str
    rows: int
    conversion_rate: float
    columns: list[ColumnReport]
    warnings: list[str]
    model: Evaluation  # the written (or given) model on the whole table
    held_out: Evaluation | None = None
    cross_validation: CrossValidation | None = None
    points_to_double_odds: float | None = None


@dataclass
class FitResult:
    yaml_text: str
    model: ScoringModel
    report: Report


def fit_history(
    history: History,
    id_column: str | None = None,
    exclude: list[str] | None = None,
    options: FitOptions | None = None,
    progress: Progress = lambda message: None,
) -> FitResult:
    options = options or FitOptions()
    choice = choose_columns(history, id_column, exclude or [])
    progress(f"checking {len(choice.used)} columns for leaks")
    strengths = column_strengths(history, choice.used, options.bins)
    warnings = list(history.notes) + _leak_warnings(strengths, "so it is left out of the model")
    used = [strength.column for strength in strengths if not strength.leak]
    if not used:
        raise HistoryError(
            f"{history.path}: no column left to learn from ({_excluded_summary(choice.excluded)})"
        )
    columns = _column_reports(strengths, choice.excluded)

    progress(f"held-out split: learning on {1 - options.holdout:.0%}, testing on {options.holdout:.0%}")
    train, test = train_test_split(
        np.arange(len(history)),
        test_size=options.holdout,
        stratify=history.outcome,
        random_state=options.seed,
    )
    held_out = _held_out(history, used, options, train, test)
    cross_validation = _cross_validate(history, used, options, progress)

    progress(f"learning the model on all {len(history):,} rows")
    final = learn_points(history, used, options.bins, options.targets)
    text = render_yaml(final, history, _header(history, final, held_out, cross_validation, options, columns))
    model = parse_model(text)  # what is evaluated is what was written
    evaluation = evaluate_model(model, history, final.probability_of, final.underlying_probability(history))
    report = _report("fit", history, columns, warnings, evaluation)
    report.held_out, report.cross_validation = held_out, cross_validation
    report.points_to_double_odds = final.points_to_double_odds
    return FitResult(text, model, report)


def _learn(
    history: History, columns: list[str], options: FitOptions, rows: np.ndarray
) -> tuple[PointsModel, ScoringModel]:
    """Learn on `rows` and write the model out: it is then scored like any model, through its rules."""
    training = history.subset(rows)
    learned = learn_points(training, columns, options.bins, options.targets)
    return learned, parse_model(render_yaml(learned, training, []))


def _held_out(
    history: History, columns: list[str], options: FitOptions, train: np.ndarray, test: np.ndarray
) -> Evaluation:
    learned, model = _learn(history, columns, options, train)
    tested = history.subset(test)
    return evaluate_model(model, tested, learned.probability_of, learned.underlying_probability(tested))


def _cross_validate(
    history: History, columns: list[str], options: FitOptions, progress: Progress
) -> CrossValidation:
    folds = StratifiedKFold(options.folds, shuffle=True, random_state=options.seed)
    result = CrossValidation(options.folds, [], [], [])
    for number, (train, test) in enumerate(folds.split(np.zeros(len(history)), history.outcome), 1):
        progress(f"cross-validation: fold {number} of {options.folds}")
        learned, model = _learn(history, columns, options, train)
        tested = history.subset(test)
        scores = score_history(model, tested).scores  # only the ranking figures: no calibration per fold
        result.auc.append(auc(tested.outcome, scores))
        result.model_auc.append(auc(tested.outcome, learned.underlying_probability(tested)))
        result.lift_top_10.append(lift_at(tested.outcome, scores, 0.1))
    return result


def evaluate_history(
    model: ScoringModel, history: History, progress: Progress = lambda message: None
) -> Report:
    """A model (hand-written or fitted) on a history table: the same report `fit` gives."""
    progress(f"scoring {len(history):,} rows")
    evaluation = evaluate_model(model, history)
    choice = choose_columns(history, None, [])
    strengths = column_strengths(history, choice.used, bins=5)
    used_by_model = {rule.property for rule in model.fit}
    warnings = list(history.notes) + _leak_warnings(
        [strength for strength in strengths if strength.column in used_by_model],
        "so the model's figures on this table are not to be trusted",
    )
    if model.behavior:
        warnings.append(
            f"the model's {len(model.behavior)} behavior rule(s) score events; a history table has none, "
            "so only its fit rules are evaluated"
        )
    if unknown := sorted(used_by_model - set(history.columns)):
        warnings.append(f"fit rules refer to properties the table does not have: {', '.join(unknown)}")
    columns = [
        ColumnReport(
            s.column,
            s.kind,
            s.levels,
            s.auc,
            "used by the model" if s.column in used_by_model else "not used",
        )
        for s in strengths
    ] + [ColumnReport(name, "", 0, None, reason) for name, reason in choice.excluded.items()]
    return _report("evaluate", history, columns, warnings, evaluation)


def _report(
    command: str, history: History, columns: list[ColumnReport], warnings: list[str], evaluation: Evaluation
) -> Report:
    return Report(
        command=command,
        history=str(history.path),
        target=history.target,
        rows=len(history),
        conversion_rate=history.conversion_rate,
        columns=columns,
        warnings=warnings,
        model=evaluation,
    )


def _leak_warnings(strengths: list[ColumnStrength], consequence: str) -> list[str]:
    return [
        f"column {s.column!r} leaks the outcome: {s.leak}; it most likely records the outcome rather than "
        f"predicts it, {consequence}"
        for s in strengths
        if s.leak
    ]


def _column_reports(strengths: list[ColumnStrength], excluded: dict[str, str]) -> list[ColumnReport]:
    reports = [
        ColumnReport(s.column, s.kind, s.levels, s.auc, "leaks the outcome" if s.leak else "used")
        for s in strengths
    ]
    return reports + [ColumnReport(name, "", 0, None, reason) for name, reason in excluded.items()]


def _excluded_summary(excluded: dict[str, str]) -> str:
    return "; ".join(f"{name}: {reason}" for name, reason in excluded.items()) or "the table has no columns"


def _header(
    history: History,
    model: PointsModel,
    held_out: Evaluation,
    cv: CrossValidation,
    options: FitOptions,
    columns: list[ColumnReport],
) -> list[str]:
    name = Path(history.path).name
    left_out = [f"  {column.column}: {column.status}" for column in columns if column.status != "used"]
    return [
        f"Fitted by `leadflow scoring fit` from {name} ({len(history):,} past leads, "
        f"{history.conversion_rate:.1%} converted; outcome column {history.target!r}).",
        "Each rule is one property value, or a band of values, and what it is worth; a lead in the lowest",
        f"level of a column gets no points for it. About {model.points_to_double_odds:.0f} points double "
        "a lead's odds of converting.",
        f"Ranking: AUC {cv.mean_auc:.3f} in {options.folds}-fold cross-validation, "
        f"{held_out.auc:.3f} on a held-out {options.holdout:.0%}.",
        f"Thresholds: MQL at the top {options.targets.mql:.0%} of past leads by score, "
        f"SQL at the top {options.targets.sql:.0%}.",
        "Edit it like a hand-written model. Behavior rules may be added; the thresholds do not count them yet.",
        *(["Columns not learned from:", *left_out] if left_out else []),
        "",
    ]
