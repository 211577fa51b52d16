"""Every report at once for one period, and its JSON form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from leadflow.reports.funnel_report import Funnel, funnel
from leadflow.reports.handoff_report import Handoffs, handoffs
from leadflow.reports.period import Period
from leadflow.reports.scoring_report import HotLead, ScoringHealth, hot_leads, scoring_health
from leadflow.reports.sequence_report import Sequences, sequences


@dataclass
class Report:
    period: Period
    funnel: Funnel
    sequences: Sequences
    handoffs: Handoffs
    scoring: ScoringHealth
    hot_leads: list[HotLead] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def build_report(session: Session, period: Period) -> Report:
    return Report(
        period=period,
        funnel=funnel(session, period),
        sequences=sequences(session, period),
        handoffs=handoffs(session, period),
        scoring=scoring_health(session, period),
        hot_leads=hot_leads(session),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value
