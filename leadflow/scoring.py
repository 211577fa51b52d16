"""Scoring: a pure function of (model, lead properties, events, now). No database, no Temporal."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from leadflow.content.conditions import filter_holds
from leadflow.content.models import ScoringModel, Thresholds

# Lifecycle stages in funnel order; recycled leads can qualify again, disqualified ones cannot.
FUNNEL = ("subscriber", "lead", "mql", "sql", "opportunity", "customer")
QUALIFIABLE = {"subscriber", "lead", "recycled"}


@dataclass(frozen=True)
class EventFact:
    id: int
    type: str
    occurred_at: datetime
    properties: dict[str, Any]


@dataclass(frozen=True)
class Contribution:
    kind: str  # "fit" or "behavior"
    rule: str
    points: int
    event_id: int | None = None
    event_type: str | None = None
    occurred_at: datetime | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rule": self.rule,
            "points": self.points,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            "note": self.note,
        }


@dataclass(frozen=True)
class ScoreResult:
    fit: int
    behavior: int
    contributions: tuple[Contribution, ...]

    @property
    def score(self) -> int:
        return self.fit + self.behavior

    def top_reasons(self, limit: int = 5) -> list[tuple[str, int]]:
        """Rules by the points they added, largest first: what a salesperson reads first."""
        totals: dict[str, int] = {}
        for contribution in self.contributions:
            totals[contribution.rule] = totals.get(contribution.rule, 0) + contribution.points
        ranked = sorted(totals.items(), key=lambda item: -abs(item[1]))
        return [(rule, points) for rule, points in ranked if points][:limit]


def score_lead(
    model: ScoringModel, properties: dict[str, Any], events: Iterable[EventFact], now: datetime
) -> ScoreResult:
    contributions = [
        Contribution(
            "fit", rule.rule, rule.points, note=f"{rule.property} = {properties.get(rule.property)!r}"
        )
        for rule in model.fit
        if rule.holds(properties.get(rule.property))
    ]
    # Events in time order, so a capped rule keeps its earliest contributions whatever the arrival order.
    ordered = sorted(
        (event for event in events if event.occurred_at <= now), key=lambda e: (e.occurred_at, e.id)
    )
    for rule in model.behavior:
        total = 0
        for event in ordered:
            if event.type != rule.event or not filter_holds(rule.where, event.properties):
                continue
            points = rule.points
            if rule.max is not None:
                room = max(abs(rule.max) - abs(total), 0)
                points = max(min(points, room), -room)
            total += points
            note = "" if points == rule.points else f"capped at {rule.max}"
            contributions.append(
                Contribution("behavior", rule.rule, points, event.id, event.type, event.occurred_at, note)
            )
    fit = sum(c.points for c in contributions if c.kind == "fit")
    behavior = sum(c.points for c in contributions if c.kind == "behavior")
    return ScoreResult(fit=fit, behavior=behavior, contributions=tuple(contributions))


def stages_reached(stage: str, score: int, thresholds: Thresholds) -> list[str]:
    """The stages a lead moves through for this score, in order; never backwards."""
    if stage not in QUALIFIABLE and stage != "mql":
        return []
    reached = []
    if stage != "mql" and score >= thresholds.mql:
        reached.append("mql")
    if score >= thresholds.sql:
        reached.append("sql")
    return reached
