"""How well a points model ranks past leads: ROC AUC, lift, calibration by score band, conversion and
volume at the thresholds, and which rules carry the ranking. Any model is scored the same way, by
`leadflow.scoring.score.score_lead` over each history row taken as a lead's properties."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from leadflow.scoring.fit.encoding import encode_column
from leadflow.scoring.fit.history import History
from leadflow.scoring.fit.points import design_matrix
from leadflow.scoring.model import BehaviorRule, FitRule, ScoringModel
from leadflow.scoring.score import score_lead

# A history row has no events: score_lead needs a "now" only to ignore future events.
_SCORED_AT = datetime(2000, 1, 1, tzinfo=UTC)
LIFT_SHARES = (0.1, 0.2)
CALIBRATION_BANDS = 10
LEAK_AUC = 0.95  # one column alone ranking conversions this well is knowing the outcome, not predicting it
FILLED_ONLY_WHEN_CONVERTED = 0.99
MIN_FILLED = 20


@dataclass(frozen=True)
class ScoredHistory:
    scores: np.ndarray
    matched: dict[str, np.ndarray]  # rule name -> the rows it added points to


def score_history(model: ScoringModel, history: History) -> ScoredHistory:
    scores = np.zeros(len(history), dtype=np.int64)
    rules: list[FitRule | BehaviorRule] = [*model.fit, *model.behavior]
    matched = {rule.rule: np.zeros(len(history), dtype=bool) for rule in rules}
    for row in range(len(history)):
        result = score_lead(model, history.properties(row), (), _SCORED_AT)
        scores[row] = result.score
        for contribution in result.contributions:
            matched[contribution.rule][row] = True
    return ScoredHistory(scores, matched)


@dataclass(frozen=True)
class Band:
    low: int
    high: int
    leads: int
    observed: float
    predicted: float


@dataclass(frozen=True)
class ThresholdResult:
    stage: str
    score: int
    leads: int
    share_of_leads: float
    conversion: float
    share_of_conversions: float


@dataclass(frozen=True)
class RuleResult:
    rule: str
    points: int
    leads: int
    share_of_leads: float
    conversion_when_matched: float
    conversion_otherwise: float
    importance: float  # how much it moves the ranking (see rule_results)


@dataclass
class Evaluation:
    """One model on one table."""

    rows: int
    conversion_rate: float
    auc: float
    model_auc: float | None  # the model underneath the integer points, when there is one
    lift: dict[str, float]
    calibration: list[Band]
    calibration_source: str
    thresholds: list[ThresholdResult]
    rules: list[RuleResult] = field(default_factory=list)
    roc: list[tuple[float, float]] = field(default_factory=list)


def auc(outcome: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(outcome, scores))


def lift_at(outcome: np.ndarray, scores: np.ndarray, share: float) -> float:
    """Conversion among the top `share` of leads by score over the base rate; tied scores count pro rata
    (what a random tie-break would give on average), so lumpy integer scores are not flattered."""
    base = outcome.mean()
    if not base:
        return 0.0
    wanted = share * len(scores)
    taken, converted = 0.0, 0.0
    for score in np.unique(scores)[::-1]:
        tied = scores == score
        room = min(float(tied.sum()), wanted - taken)
        converted += room * outcome[tied].mean()
        taken += room
        if taken >= wanted:
            break
    return float(converted / taken / base) if taken else 0.0


def calibration(outcome: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> list[Band]:
    """Leads in up to ten score bands of about equal size; never splitting one score across two bands."""
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, CALIBRATION_BANDS + 1)[1:-1], method="lower"))
    band_of = np.searchsorted(edges, scores, side="right")
    bands = []
    for band in np.unique(band_of):
        rows = band_of == band
        bands.append(
            Band(
                low=int(scores[rows].min()),
                high=int(scores[rows].max()),
                leads=int(rows.sum()),
                observed=float(outcome[rows].mean()),
                predicted=float(predicted[rows].mean()),
            )
        )
    return bands


def logistic_calibration(outcome: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """For a model with no probabilities of its own (hand-written points): the conversion a logistic curve
    fitted to its scores gives each lead, so its bands can be compared with what happened."""
    column = np.asarray(scores, dtype=float).reshape(-1, 1)
    return LogisticRegression(C=1e6, max_iter=1000).fit(column, outcome).predict_proba(column)[:, 1]


def threshold_results(outcome: np.ndarray, scores: np.ndarray, mql: int, sql: int) -> list[ThresholdResult]:
    total = max(int(outcome.sum()), 1)
    results = []
    for stage, score in (("MQL", mql), ("SQL", sql)):
        rows = scores >= score
        results.append(
            ThresholdResult(
                stage=stage,
                score=score,
                leads=int(rows.sum()),
                share_of_leads=float(rows.mean()),
                conversion=float(outcome[rows].mean()) if rows.any() else 0.0,
                share_of_conversions=float(outcome[rows].sum() / total),
            )
        )
    return results


def rule_results(model: ScoringModel, outcome: np.ndarray, scored: ScoredHistory) -> list[RuleResult]:
    """Every rule with how often it fired and how those leads did, the ones that move the ranking most first.

    A rule's importance is how far it moves the leads it matches from the average points their property
    gives (times the square root of its share of leads): shifting all of a property's points by a constant
    changes no ranking, so it does not change importance either.
    """
    rules: list[FitRule | BehaviorRule] = [*model.fit, *model.behavior]
    subject = {rule.rule: rule.property if isinstance(rule, FitRule) else rule.event for rule in rules}
    # A banded behavior rule has no per-event points; a history table has no events, so it never fires here.
    points = {rule.rule: rule.points or 0 for rule in rules}
    average: dict[str, float] = {}
    for name, rows in scored.matched.items():
        average[subject[name]] = average.get(subject[name], 0.0) + points[name] * float(rows.mean())
    results = []
    for name, rows in scored.matched.items():
        share = float(rows.mean())
        results.append(
            RuleResult(
                rule=name,
                points=points[name],
                leads=int(rows.sum()),
                share_of_leads=share,
                conversion_when_matched=float(outcome[rows].mean()) if rows.any() else 0.0,
                conversion_otherwise=float(outcome[~rows].mean()) if (~rows).any() else 0.0,
                importance=abs(points[name] - average[subject[name]]) * float(np.sqrt(share)),
            )
        )
    return sorted(results, key=lambda result: -result.importance)


def evaluate_model(
    model: ScoringModel,
    history: History,
    probability_of: Callable[[np.ndarray], np.ndarray] | None = None,
    model_probability: np.ndarray | None = None,
) -> Evaluation:
    """`model` scored on `history`. `probability_of` maps scores to the model's own conversion estimate
    (a fitted model has one); without it the calibration is a logistic curve fitted to the scores here."""
    scored = score_history(model, history)
    outcome, scores = history.outcome, scored.scores
    if probability_of is not None:
        predicted, source = probability_of(scores), "the fitted model's probability for each score"
    else:
        predicted, source = logistic_calibration(outcome, scores), "a logistic curve fitted to these scores"
    false_positive, true_positive, _ = roc_curve(outcome, scores)
    return Evaluation(
        rows=len(history),
        conversion_rate=history.conversion_rate,
        auc=auc(outcome, scores),
        model_auc=auc(outcome, model_probability) if model_probability is not None else None,
        lift={f"top {share:.0%}": lift_at(outcome, scores, share) for share in LIFT_SHARES},
        calibration=calibration(outcome, scores, predicted),
        calibration_source=source,
        thresholds=threshold_results(outcome, scores, model.thresholds.mql, model.thresholds.sql),
        rules=rule_results(model, outcome, scored),
        roc=[(float(x), float(y)) for x, y in zip(false_positive, true_positive, strict=True)],
    )


# --- columns: how strongly each one alone ranks conversions ------------------------------------------


@dataclass(frozen=True)
class ColumnStrength:
    column: str
    kind: str  # "numeric" or "category"
    levels: int
    auc: float  # ranking by this column's levels alone (their conversion rate in this history)
    rows: int
    filled: int  # rows with a value
    filled_converted: int  # of which converted
    base_rate: float

    @property
    def leak(self) -> str | None:
        """Why this column looks like it records the outcome rather than predicts it, if it does."""
        if self.auc >= LEAK_AUC:
            return f"alone it ranks conversions at AUC {self.auc:.3f} (≥ {LEAK_AUC})"
        missing = self.filled < self.rows
        share = self.filled_converted / self.filled if self.filled else 0.0
        # Filled in (almost) only once a lead has converted: a deal's fields, a won date, a contract value.
        if (
            missing
            and self.filled >= MIN_FILLED
            and share >= FILLED_ONLY_WHEN_CONVERTED
            and share - self.base_rate > 0.5
        ):
            return f"it has a value almost only for converted leads ({self.filled_converted:,} of {self.filled:,})"
        return None


def column_strengths(history: History, columns: list[str], bins: int) -> list[ColumnStrength]:
    strengths = []
    for name in columns:
        encoding = encode_column(name, history.columns[name], bins)
        design = design_matrix([encoding], history)
        counts = np.asarray(design.sum(axis=0)).ravel()
        rates = np.asarray(design.T @ history.outcome).ravel() / np.maximum(counts, 1)
        filled = np.array([value is not None for value in history.columns[name]])
        strengths.append(
            ColumnStrength(
                column=name,
                kind="numeric" if encoding.numeric else "category",
                levels=len(encoding.levels),
                auc=auc(history.outcome, design @ rates),
                rows=len(history),
                filled=int(filled.sum()),
                filled_converted=int(history.outcome[filled].sum()),
                base_rate=history.conversion_rate,
            )
        )
    return strengths
