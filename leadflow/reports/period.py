"""The period a report covers, and the names, stages and buckets every report shares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_
from sqlalchemy.sql.elements import ColumnElement

from leadflow.leads.lifecycle import FUNNEL as STAGE_ORDER
from leadflow.leads.lifecycle import Stage
from leadflow.scoring.temperature import Temperature

# The funnel a report follows; a lead that skipped a stage (straight to SQL) counts as having passed it.
FUNNEL = STAGE_ORDER[1:]  # from lead on: subscribers are not yet in the funnel
STAGE_NAMES = {
    Stage.LEAD: "Leads",
    Stage.MQL: "MQL",
    Stage.SQL: "SQL",
    Stage.OPPORTUNITY: "Opportunity",
    Stage.CUSTOMER: "Customer",
}
TEMPERATURES = tuple(Temperature)  # hot first, as the reports show them
GRADES = ("A", "B", "C", "D")
HANDED_TO_SALES = "handed to sales"
OPTED_OUT = "opted out"
BOUNCED_STATUSES = ("bounced", "failed")
UNDELIVERED = ("bounced", "failed", "undelivered", "complained")
# Time from creation to SQL, as the dashboard's histogram shows it: upper bounds in days.
CONVERT_BUCKETS = (1, 3, 7, 14, 30, 60)
SIGNIFICANCE = 0.05
EVERYONE = "all salespeople"


# --- the period ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @classmethod
    def last(cls, since: str, now: datetime) -> Period:
        """`since` as `30d`, `12w`, `48h` or `all` (from the beginning), ending now."""
        if since.strip().lower() == "all":
            return cls(datetime(1970, 1, 1, tzinfo=now.tzinfo), now)
        match = re.fullmatch(r"\s*(\d+)\s*([hdw])\s*", since.lower())
        if not match:
            raise ValueError(f"--since {since!r}: expected a number of hours, days or weeks (48h, 30d, 12w)")
        amount, unit = int(match[1]), match[2]
        length = {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}
        return cls(now - length[unit], now)

    def holds(self, column: Any) -> ColumnElement[bool]:
        return and_(column >= self.start, column < self.end)
