"""Scoring fitted from history: a points model learned from past outcomes, in the format marketers edit,
and its evaluation. Needs the optional `learn` extra (scikit-learn)."""

from leadflow.scoring.fit.fitting import FitOptions, FitResult, Report, evaluate_history, fit_history
from leadflow.scoring.fit.history import History, HistoryError, read_history
from leadflow.scoring.fit.points import VolumeTargets

__all__ = [
    "FitOptions",
    "FitResult",
    "History",
    "HistoryError",
    "Report",
    "VolumeTargets",
    "evaluate_history",
    "fit_history",
    "read_history",
]
