"""Scoring: a pure function of (model, lead properties, events, now). No database, no Temporal.

Score = fit (who the lead is) + behavior (what the lead did, decayed with age, capped per rule and per
group) + account signal (several colleagues engaged at once). Every point is a `Contribution` naming its
rule and, for behavior, its event with the points before and after decay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from leadflow.content.conditions import filter_holds
from leadflow.leads.lifecycle import QUALIFIABLE, Stage
from leadflow.platform.clock import on_the_minute
from leadflow.scoring.model import BehaviorRule, Decay, HandOffNow, ScoringModel, Thresholds
from leadflow.scoring.temperature import temperature

NEGLIGIBLE = 0.05  # decayed points below this are shown as 0 and no longer worth a cooling rescore


@dataclass(frozen=True)
class EventFact:
    id: int
    type: str
    occurred_at: datetime
    properties: dict[str, Any]


@dataclass(frozen=True)
class AccountActivity:
    """The lead's account and when each *other* contact of it last engaged (as of their last rescore)."""

    domain: str
    colleagues_engaged_at: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class Contribution:
    kind: str  # "fit", "behavior" or "account"
    rule: str
    points: float  # what it adds to the score now: after decay and caps
    event_id: int | None = None
    event_type: str | None = None
    occurred_at: datetime | None = None
    note: str = ""
    before_decay: float | None = None  # behavior: the rule's points for this event, before decay and caps
    group: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rule": self.rule,
            "group": self.group,
            "points": tidy(self.points),
            "points_before_decay": tidy(self.before_decay if self.before_decay is not None else self.points),
            "event_id": self.event_id,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            "note": self.note,
        }


def tidy(points: float) -> float | int:
    """Points as a person reads them: one decimal, and whole numbers without one."""
    rounded = round(points, 1)
    return int(rounded) if rounded == int(rounded) else rounded


@dataclass(frozen=True)
class ScoreResult:
    fit: int
    behavior: float
    contributions: tuple[Contribution, ...]
    account: int = 0
    grade: str = "D"
    temperature: str = "cold"
    engaged_at: datetime | None = None  # the newest event that earned points (what "active" means)
    account_hot: bool = False
    next_change_at: datetime | None = None  # when the score or temperature next moves with no new event

    @property
    def score(self) -> int:
        return math.floor(self.fit + self.behavior + self.account + 0.5)

    @property
    def behavior_points(self) -> int:
        """Behavior as a whole number, so that fit + behavior + account is the score exactly."""
        return self.score - self.fit - self.account

    def figures(self, score_key: str = "score") -> dict[str, Any]:
        """The score with its parts, grade, temperature and breakdown: what the ledger, the API and the CLI
        show of one result (the API names the score `total`)."""
        return {
            score_key: self.score,
            "fit": self.fit,
            "behavior": self.behavior_points,
            "account": self.account,
            "grade": self.grade,
            "temperature": self.temperature,
            "breakdown": [contribution.as_json() for contribution in self.contributions],
        }

    def top_reasons(self, limit: int = 5) -> list[tuple[str, float | int]]:
        """Rules by the points they added, largest first: what a salesperson reads first."""
        totals: dict[str, float] = {}
        for contribution in self.contributions:
            totals[contribution.rule] = totals.get(contribution.rule, 0) + contribution.points
        ranked = sorted(totals.items(), key=lambda item: -abs(item[1]))
        return [(rule, tidy(points)) for rule, points in ranked if tidy(points)][:limit]


def score_lead(
    model: ScoringModel,
    properties: dict[str, Any],
    events: Iterable[EventFact],
    now: datetime,
    account: AccountActivity | None = None,
    since: datetime | None = None,
) -> ScoreResult:
    """The lead's score at `now`. Events after `now` do not count yet; with `since` (a recycled lead),
    behavior before it does not count either."""
    # Events in time order, so a capped rule keeps its earliest contributions whatever the arrival order.
    ordered = sorted(
        (e for e in events if e.occurred_at <= now and (since is None or e.occurred_at >= since)),
        key=lambda e: (e.occurred_at, e.id),
    )
    by_type: dict[str, list[EventFact]] = {}
    for event in ordered:
        by_type.setdefault(event.type, []).append(event)
    behavior: list[Contribution] = []
    engaged_at: datetime | None = None
    for rule in model.behavior:
        matched = [e for e in by_type.get(rule.event, ()) if rule.matches(e.properties)]
        if matched and rule.rewards:
            engaged_at = max(engaged_at or matched[-1].occurred_at, matched[-1].occurred_at)
        behavior.extend(_rule_contributions(model, rule, matched, now))
    behavior = cap_groups(model, behavior)
    return finish_score(model, fit_contributions(model, properties), behavior, engaged_at, now, account)


def fit_contributions(model: ScoringModel, properties: dict[str, Any]) -> list[Contribution]:
    return [
        Contribution(
            "fit", rule.rule, rule.points, note=f"{rule.property} = {properties.get(rule.property)!r}"
        )
        for rule in model.fit
        if rule.holds(properties.get(rule.property))
    ]


def finish_score(
    model: ScoringModel,
    fit_contributions: list[Contribution],
    behavior: list[Contribution],
    engaged_at: datetime | None,
    now: datetime,
    account: AccountActivity | None,
) -> ScoreResult:
    """The result from the fit and (capped) behavior contributions: account signal, grade, temperature and
    the next change. Shared by `score_lead` and the incremental `leadflow.scoring.state`."""
    fit = sum(c.points for c in fit_contributions)
    account_contribution, account_hot, account_until = _account_signal(model, account, engaged_at, now)
    result = ScoreResult(
        fit=int(fit),
        behavior=sum(c.points for c in behavior),
        contributions=tuple(fit_contributions + behavior + account_contribution),
        account=int(sum(c.points for c in account_contribution)),
        grade=model.grades.of(int(fit)),
        engaged_at=engaged_at,
        account_hot=account_hot,
    )
    result = replace(result, temperature=temperature(model, result.score, engaged_at, now))
    return replace(result, next_change_at=_next_change(model, result, now, account_until))


def _rule_contributions(
    model: ScoringModel, rule: BehaviorRule, matched: list[EventFact], now: datetime
) -> list[Contribution]:
    decay = decay_of(model, rule)
    contributions, total = [], 0.0
    for count, event in enumerate(matched, start=1):
        raw = rule.points_for(count) - rule.points_for(count - 1)  # bands: what this event added
        factor = decay.factor(now - event.occurred_at) if decay else 1.0
        notes = [decay_note(decay, factor)] if decay and raw else []
        line = behavior_line(
            rule, raw, raw * factor, notes, total, count, event.id, event.type, event.occurred_at
        )
        total += line.points
        contributions.append(line)
    return contributions


def behavior_line(
    rule: BehaviorRule,
    raw: float,
    points: float,
    notes: list[str],
    total: float,
    rank: int | None,
    event_id: int,
    event_type: str,
    occurred_at: datetime,
) -> Contribution:
    """One ledger line of a behavior rule: its decayed `points` held to the rule's cap given the `total` before
    it, and its notes (`rank` is the event's count, for bands; None for a line standing for several events).
    Shared by `score_lead` and the incremental `leadflow.scoring.state`."""
    if rule.max is not None:
        allowed = within_cap(points, total, rule.max)
        if allowed != points:
            notes.append(f"rule capped at {rule.max}")
        points = allowed
    if rule.bands is not None and rank is not None:
        notes.insert(0, f"{rank} {rule.event} so far")
    return Contribution(
        "behavior",
        rule.rule,
        points,
        event_id,
        event_type,
        occurred_at,
        "; ".join(notes),
        before_decay=raw,
        group=rule.group,
    )


def within_cap(points: float, total: float, cap: int) -> float:
    room = max(cap - abs(total), 0.0)
    return max(min(points, room), -room)


def cap_groups(model: ScoringModel, behavior: list[Contribution]) -> list[Contribution]:
    """Each group's cap over its rules together, filled in time order like a rule's own cap."""
    capped = list(behavior)
    for name, group in model.groups.items():
        if group.max is None:
            continue
        members = sorted(
            (i for i, c in enumerate(capped) if c.group == name),
            key=lambda i: (capped[i].occurred_at, capped[i].event_id, i),
        )
        total = 0.0
        for index in members:
            contribution = capped[index]
            allowed = within_cap(contribution.points, total, group.max)
            if allowed != contribution.points:
                note = "; ".join(filter(None, [contribution.note, f"group {name} capped at {group.max}"]))
                capped[index] = replace(contribution, points=allowed, note=note)
            total += allowed
    return capped


def decay_of(model: ScoringModel, rule: BehaviorRule) -> Decay | None:
    return model.groups[rule.group].decay if rule.group in model.groups else None


def decay_note(decay: Decay, factor: float) -> str:
    how = f"half-life {_days(decay.half_life)}" if decay.half_life else "age windows"
    return f"{how}: {factor:.0%} kept"


def _days(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    days = delta / timedelta(days=1)
    return f"{days:g}d" if days >= 1 else f"{delta / timedelta(hours=1):g}h"


def _account_signal(
    model: ScoringModel, account: AccountActivity | None, engaged_at: datetime | None, now: datetime
) -> tuple[list[Contribution], bool, datetime | None]:
    """Whether the account is hot (enough of its contacts engaged within the window), the contribution
    when this lead is one of them, and when the signal ends for this lead."""
    signal = model.account
    if signal is None or account is None:
        return [], False, None
    start = now - signal.within
    active = [t for t in account.colleagues_engaged_at if start < t <= now]
    own_active = engaged_at is not None and start < engaged_at <= now
    if own_active:
        active.append(engaged_at)  # type: ignore[arg-type]
    if len(active) < signal.contacts:
        return [], False, None
    if not own_active:
        return [], True, None
    engaged = sorted(active, reverse=True)
    until = engaged[signal.contacts - 1] + signal.within  # when fewer than `contacts` remain active
    note = f"{len(engaged)} contacts of {account.domain} active within {_days(signal.within)}"
    return [Contribution("account", signal.rule, signal.points, note=note)], True, until


def _next_change(
    model: ScoringModel, result: ScoreResult, now: datetime, account_until: datetime | None
) -> datetime | None:
    """When a quiet lead must be rescored: a decay window or the account window ends, the lead leaves a
    temperature's activity window, or (half-life decay) the next regular cool-down."""
    moments: list[datetime] = [account_until] if account_until else []
    if result.engaged_at is not None and result.temperature != "cold":
        levels = ("hot", "warm") if result.temperature == "hot" else ("warm",)
        moments += [result.engaged_at + getattr(model.temperature, name).active_within for name in levels]
    for contribution in result.contributions:
        if contribution.kind != "behavior" or abs(contribution.points) < NEGLIGIBLE:
            continue
        group = model.groups.get(contribution.group or "")
        decay = group.decay if group else None
        if decay is None or contribution.occurred_at is None:
            continue
        for window in decay.windows or []:
            moments.append(contribution.occurred_at + window.within)
    fade = _next_noticeable_fade(model, result, now)
    later = [on_the_minute(moment) for moment in [*moments, *([fade] if fade else [])] if moment > now]
    return min(later) if later else None


QUIET_COOL_DOWNS = 7  # a change too small to notice is still refreshed after this many cool-downs
COOL_DOWNS_LOOKED_AHEAD = 400


def _next_noticeable_fade(model: ScoringModel, result: ScoreResult, now: datetime) -> datetime | None:
    """The first cool-down at which half-life decay has visibly moved the score (by `cool_down_points`, or
    across a temperature's score), or, for a smaller change, not before QUIET_COOL_DOWNS: a quiet lead is
    not rescored (a workflow task and a write) for every point it loses. Caps are ignored here, so this
    errs towards too early, which costs a rescore and nothing else."""
    by_half_life: dict[timedelta, float] = {}
    for contribution in result.contributions:
        group = model.groups.get(contribution.group or "") if contribution.kind == "behavior" else None
        half_life = group.decay.half_life if group and group.decay else None
        if half_life is not None:
            by_half_life[half_life] = by_half_life.get(half_life, 0.0) + contribution.points
    # Totals per half-life, not per event: the same whether the events are listed one by one or, in the
    # incremental state (leadflow.scoring.state), partly as one sum.
    fading = [(points, half_life) for half_life, points in by_half_life.items() if abs(points) >= NEGLIGIBLE]
    watched = (model.temperature.hot.score, model.temperature.warm.score)
    total, score = result.fit + result.behavior + result.account, result.score
    for step in range(1, COOL_DOWNS_LOOKED_AHEAD + 1) if fading else ():
        elapsed = step * model.cool_down_every
        lost = sum(points * (1 - 0.5 ** (elapsed / half_life)) for points, half_life in fading)
        then = math.floor(total - lost + 0.5)
        crossed = any(min(score, then) < level <= max(score, then) for level in watched)
        visible = abs(score - then) >= model.cool_down_points or crossed
        if visible or (then != score and step >= QUIET_COOL_DOWNS):
            return now + elapsed
    return None  # what is left fades below a whole point: nothing to refresh


def stages_reached(stage: str, score: int, thresholds: Thresholds) -> list[str]:
    """The stages a lead moves through for this score, in order; never backwards."""
    if stage not in QUALIFIABLE and stage != Stage.MQL:
        return []
    reached: list[str] = []
    if stage != Stage.MQL and score >= thresholds.mql:
        reached.append(Stage.MQL)
    if score >= thresholds.sql:
        reached.append(Stage.SQL)
    return reached


def hand_off_now_rule(
    model: ScoringModel, events: Iterable[EventFact], now: datetime, since: datetime | None = None
) -> HandOffNow | None:
    """The first "hand off now" rule an event of the lead matches (a demo request), whatever the score.
    Events before `since` (a recycled lead) no longer count, so a hand-back is not undone by old events."""
    for rule in model.hand_off_now:
        for event in events:
            counts = event.occurred_at <= now and (since is None or event.occurred_at >= since)
            if counts and event.type == rule.event and filter_holds(rule.where, event.properties):
                return rule
    return None
