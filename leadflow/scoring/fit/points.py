"""Learning a points model: logistic regression on the levels of each column, its weights turned into
integer points per level, and the result written as scoring.yaml fit rules a marketer can read and edit."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from leadflow.scoring.fit.encoding import ColumnEncoding, Level, encode_column, merge_label, merge_test
from leadflow.scoring.fit.history import History
from leadflow.scoring.model import ScoringModel

POINTS_FOR_THE_BEST_LEAD = 100  # the scale marketers expect: a perfect fit scores about 100
MIN_POINTS_PER_LOGIT = 20  # finer than this and rounding to whole points starts to blur the ranking
REGULARIZATION = 1.0  # scikit-learn's C: shrinks the weight of a level seen in few rows


@dataclass(frozen=True)
class VolumeTargets:
    """Thresholds are chosen from the data: the score above which this share of past leads falls."""

    mql: float = 0.30
    sql: float = 0.10


@dataclass(frozen=True)
class LearnedRule:
    column: str
    name: str
    points: int
    weight: float  # the underlying model's log-odds for these levels, relative to the column's lowest
    test: dict[str, Any]
    design_columns: tuple[int, ...]  # the one-hot levels it stands for


@dataclass
class PointsModel:
    """The learned model twice: the logistic regression behind it and the integer points written out."""

    encodings: list[ColumnEncoding]
    estimator: LogisticRegression
    rules: list[LearnedRule]
    level_points: np.ndarray  # points of every one-hot level, in design-matrix order
    intercept: float  # log-odds of a lead scoring 0 points
    points_per_logit: float
    thresholds: tuple[int, int]

    def design(self, history: History) -> sparse.csr_matrix:
        return design_matrix(self.encodings, history)

    def underlying_probability(self, history: History) -> np.ndarray:
        return self.estimator.predict_proba(self.design(history))[:, 1]

    def probability_of(self, scores: np.ndarray) -> np.ndarray:
        """The conversion probability the model gives a score (its calibration curve)."""
        return 1.0 / (
            1.0 + np.exp(-(self.intercept + np.asarray(scores, dtype=float) / self.points_per_logit))
        )

    @property
    def points_to_double_odds(self) -> float:
        return self.points_per_logit * math.log(2)


def design_matrix(encodings: Sequence[ColumnEncoding], history: History) -> sparse.csr_matrix:
    """One 0/1 column per level of every encoded column: the rows a rule would match."""
    rows, cols = [], []
    offset = 0
    for encoding in encodings:
        levels = encoding.assign(history.columns[encoding.column])
        matched = np.flatnonzero(levels >= 0)
        rows.append(matched)
        cols.append(levels[matched] + offset)
        offset += len(encoding.levels)
    row_index, col_index = np.concatenate(rows), np.concatenate(cols)
    data = np.ones(len(row_index), dtype=float)
    return sparse.csr_matrix((data, (row_index, col_index)), shape=(len(history), offset))


def learn_points(
    history: History, columns: list[str], bins: int = 5, targets: VolumeTargets | None = None
) -> PointsModel:
    encodings = [encode_column(name, history.columns[name], bins) for name in columns]
    design = design_matrix(encodings, history)
    # Newton-Cholesky: few columns, many rows, one-hot levels (some rare): what it is made for.
    estimator = LogisticRegression(C=REGULARIZATION, solver="newton-cholesky", max_iter=200)
    estimator.fit(design, history.outcome)
    weights = estimator.coef_[0]

    spans = _column_slices(encodings)
    lowest = [float(weights[span].min()) for span in spans]
    total_range = sum(float(weights[span].max()) - low for span, low in zip(spans, lowest, strict=True))
    points_per_logit = max(POINTS_FOR_THE_BEST_LEAD / total_range if total_range else 0, MIN_POINTS_PER_LOGIT)
    level_points = np.zeros(len(weights), dtype=np.int64)
    for span, low in zip(spans, lowest, strict=True):
        level_points[span] = np.rint((weights[span] - low) * points_per_logit)

    relative = weights - np.repeat(lowest, [span.stop - span.start for span in spans])
    scores = design @ level_points
    return PointsModel(
        encodings=encodings,
        estimator=estimator,
        rules=_rules(encodings, spans, relative, level_points),
        level_points=level_points,
        intercept=float(estimator.intercept_[0]) + sum(lowest),
        points_per_logit=points_per_logit,
        thresholds=choose_thresholds(scores, targets or VolumeTargets()),
    )


def _column_slices(encodings: Sequence[ColumnEncoding]) -> list[slice]:
    slices, offset = [], 0
    for encoding in encodings:
        slices.append(slice(offset, offset + len(encoding.levels)))
        offset += len(encoding.levels)
    return slices


def _rules(
    encodings: Sequence[ColumnEncoding], spans: list[slice], weights: np.ndarray, points: np.ndarray
) -> list[LearnedRule]:
    """One rule per group of a column's levels worth the same points; the lowest-scoring levels need none."""
    rules: list[LearnedRule] = []
    for encoding, span in zip(encodings, spans, strict=True):
        groups = _equal_point_groups(encoding.levels, [int(p) for p in points[span]])
        for worth, members in sorted(groups, key=lambda group: -group[0]):
            if worth == 0:
                continue
            levels = [encoding.levels[i] for i in members]
            rules.append(
                LearnedRule(
                    column=encoding.column,
                    name=f"{_pretty(encoding.column)}: {merge_label(levels, encoding.integers)}",
                    points=worth,
                    weight=max(float(weights[span.start + i]) for i in members),
                    test=merge_test(levels),
                    design_columns=tuple(span.start + i for i in members),
                )
            )
    return _unique_names(rules)


def _equal_point_groups(levels: Sequence[Level], points: list[int]) -> list[tuple[int, list[int]]]:
    """Level indices grouped by points: category values with equal points share a rule (`in: [...]`),
    bands only when adjacent (one `gte`/`lt` range); "missing" and "another value" stand alone."""
    groups: list[tuple[int, list[int]]] = []
    by_points: dict[int, list[int]] = {}
    for index, (level, worth) in enumerate(zip(levels, points, strict=True)):
        previous = groups[-1] if groups else None
        if level.kind == "values":
            if worth not in by_points:
                by_points[worth] = []
                groups.append((worth, by_points[worth]))
            by_points[worth].append(index)
        elif (
            level.kind == "band"
            and previous
            and previous[0] == worth
            and levels[previous[1][-1]].kind == "band"
        ):
            previous[1].append(index)
        else:
            groups.append((worth, [index]))
    return groups


def _unique_names(rules: list[LearnedRule]) -> list[LearnedRule]:
    seen: dict[str, int] = {}
    unique = []
    for rule in rules:
        seen[rule.name] = seen.get(rule.name, 0) + 1
        if seen[rule.name] > 1:
            rule = dataclasses.replace(rule, name=f"{rule.name} ({seen[rule.name]})")
        unique.append(rule)
    return unique


def _pretty(column: str) -> str:
    words = column.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def choose_thresholds(scores: np.ndarray, targets: VolumeTargets) -> tuple[int, int]:
    """MQL and SQL: the scores whose share of leads at or above is closest to the targets (SQL > MQL)."""
    distinct = np.unique(scores)
    share_at_or_above = np.array([(scores >= s).mean() for s in distinct])

    def closest(share: float) -> int:
        return int(np.argmin(np.abs(share_at_or_above - share)))

    mql, sql = closest(targets.mql), closest(targets.sql)
    if sql <= mql:
        sql = mql + 1
    if sql >= len(distinct):  # scores too few to tell MQL from SQL: SQL is the top score and one more
        return int(distinct[min(mql, len(distinct) - 1)]), int(distinct[-1]) + 1
    return int(distinct[mql]), int(distinct[sql])


# --- writing it as scoring.yaml --------------------------------------------------------------------


def render_yaml(model: PointsModel, history: History, header: list[str]) -> str:
    """The model in the content format marketers edit, each rule with what the history says about it."""
    lines = [f"# {line}" if line else "#" for line in header]
    mql, sql = model.thresholds
    lines += ["thresholds:", f"  mql: {mql}", f"  sql: {sql}", ""]
    lines.append("fit:" if model.rules else "fit: []")
    base = history.conversion_rate
    design = model.design(history)
    leads = np.asarray(design.sum(axis=0)).ravel()  # per level; a column's levels never overlap
    converted = np.asarray(design.T @ history.outcome).ravel()
    for rule in model.rules:
        matched = int(leads[list(rule.design_columns)].sum())
        rate = converted[list(rule.design_columns)].sum() / matched if matched else 0.0
        lines.append(
            f"  # {matched:,} past leads, {rate:.1%} converted (all leads: {base:.1%}); "
            f"log-odds {rule.weight:+.2f}"
        )
        body = {"rule": rule.name, "property": rule.column, **rule.test, "points": rule.points}
        dumped = yaml.dump(body, Dumper=_RuleDumper, sort_keys=False, width=110, allow_unicode=True)
        lines += [f"  {'- ' if i == 0 else '  '}{line}" for i, line in enumerate(dumped.splitlines())]
    lines += ["", "behavior: []", ""]
    return "\n".join(lines)


class _RuleDumper(yaml.SafeDumper):
    """A rule as a block mapping with its value lists on one line: `in: [paid search, social]`."""


_RuleDumper.add_representer(
    list, lambda dumper, items: dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=True)
)


def parse_model(text: str) -> ScoringModel:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it
    return ScoringModel.model_validate(yaml.load(text, Loader=loader))
