"""Temperature (cold, warm, hot): how ready a lead is to talk to sales now, in one place.

Scoring gives a lead its temperature (`temperature`): hot or warm needs both the score and engagement within
the level's window of `scoring.yaml`. Segment rules, branches and templates read it back (`lead_temperature`);
a lead scored before temperatures existed gets one from its score alone (`temperature_of`: hot at the SQL
threshold, warm at the MQL threshold).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from leadflow.scoring.model import ScoringModel, Thresholds
from leadflow.segments.rules import TEMPERATURES

if TYPE_CHECKING:  # the pure scoring imports this module: no store at run time
    from leadflow.platform.store.models import Lead


class Temperature(StrEnum):
    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


def temperature(model: ScoringModel, score: int, engaged_at: datetime | None, now: datetime) -> str:
    """Hot or warm needs both the score and recent engagement; anything else is cold."""
    for level_name in (Temperature.HOT, Temperature.WARM):
        level = getattr(model.temperature, level_name)
        if score >= level.score and engaged_at is not None and now - engaged_at < level.active_within:
            return level_name
    return Temperature.COLD


def temperature_of(known: Any, score: int, thresholds: Thresholds) -> str:
    """The lead's temperature: the one the scoring gave it when there is one, else from the score alone
    (hot at the SQL threshold, warm at the MQL threshold, cold below)."""
    if isinstance(known, str) and known.lower() in TEMPERATURES:
        return known.lower()
    if score >= thresholds.sql:
        return Temperature.HOT
    return Temperature.WARM if score >= thresholds.mql else Temperature.COLD


def lead_temperature(lead: Lead, thresholds: Thresholds) -> str:
    """The lead's temperature as scoring recorded it (a column or a property), else derived from its score."""
    known = getattr(lead, "temperature", None) or lead.properties.get("temperature")
    return temperature_of(known, lead.score, thresholds)
