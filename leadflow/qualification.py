"""Qualification in the store: rescore a lead with the pure scoring function, keep the score ledger, stamp
lifecycle stages (never silently reversed), mark accounts hot, recycle leads handed back by sales, and
recompute a score at a past time from the ledger.

The same `rescore` runs in the lead workflow's activity, in `leadflow rescore` and after a recycle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml
from sqlalchemy import BindParameter, bindparam, func, insert, select
from sqlalchemy.orm import Session

from leadflow.content.models import HandOffNow, ScoringModel
from leadflow.scoring import (
    QUALIFIABLE,
    RECYCLABLE,
    AccountActivity,
    EventFact,
    ScoreResult,
    hand_off_now_rule,
    score_lead,
    stages_reached,
)
from leadflow.store.models import (
    Account,
    Event,
    Lead,
    ScoreSnapshot,
    ScoringModelVersion,
    StageChange,
    table_of,
)
from leadflow.store.upsert import insert_ignoring_conflicts
from leadflow.tracking.attribution import first_and_last_touch


@dataclass
class Rescored:
    lead: Lead
    result: ScoreResult
    stage_changes: list[StageChange] = field(default_factory=list)
    colleagues_to_rescore: list[int] = field(default_factory=list)  # the account just became hot
    events: list[EventFact] = field(default_factory=list)  # all of the lead's events, as loaded


class NotRecyclable(ValueError):
    pass


def rescore(session: Session, lead_id: int, model: ScoringModel, now: datetime) -> Rescored | None:
    """Score the lead as of `now` with what the store knew then, and record what changed. The lead row is
    locked for the transaction, so concurrent rescores of one lead stamp each stage once."""
    return rescore_many(session, [lead_id], model, now).get(lead_id)


# An assessment runs these for every burst of a lead's events: built once (building an ORM statement at
# every call cost more than running it).
_IDS: BindParameter[int] = bindparam("ids", expanding=True)
_LOCKED_LEADS = select(Lead).where(Lead.id.in_(_IDS)).order_by(Lead.id).with_for_update()
_EVENTS_OF_LEADS = select(
    Event.lead_id, Event.received_at, Event.id, Event.type, Event.occurred_at, Event.properties
).where(Event.lead_id.in_(_IDS))
_ACCOUNTS = select(Account).where(Account.id.in_(_IDS))
_ENGAGED_IN_ACCOUNTS = select(Lead.account_id, Lead.id, Lead.last_activity_at).where(
    Lead.account_id.in_(_IDS),
    Lead.last_activity_at > bindparam("since"),
    Lead.last_activity_at <= bindparam("now"),
)
_NEWEST_LEDGER_ENTRIES = select(
    ScoreSnapshot.lead_id, ScoreSnapshot.score, ScoreSnapshot.temperature, ScoreSnapshot.model_version
).where(
    ScoreSnapshot.id.in_(
        select(func.max(ScoreSnapshot.id))
        .where(ScoreSnapshot.lead_id.in_(_IDS))
        .group_by(ScoreSnapshot.lead_id)
    )
)


def rescore_many(
    session: Session, lead_ids: list[int], model: ScoringModel, now: datetime
) -> dict[int, Rescored]:
    """`rescore` for a batch of leads with a handful of queries (what `leadflow rescore` runs)."""
    leads = session.scalars(_LOCKED_LEADS, {"ids": lead_ids}).all()
    ids = [lead.id for lead in leads]
    events: dict[int, list[EventFact]] = defaultdict(list)  # what the store knew at `now`: scored
    every_event: dict[int, list[EventFact]] = defaultdict(list)  # for segments, which look at all of them
    for lead_id, received_at, *fact in session.execute(_EVENTS_OF_LEADS, {"ids": ids}):
        every_event[lead_id].append(EventFact(*fact))
        if received_at <= now:
            events[lead_id].append(every_event[lead_id][-1])
    accounts = _accounts(session, leads, model, now)
    ledger = _ledger(session, ids, model)
    rescored: dict[int, Rescored] = {}
    for lead in leads:
        account = accounts.get(lead.account_id) if lead.account_id else None
        activity = account.activity_without(lead.id) if account else None
        result = score_lead(model, lead.properties, events[lead.id], now, activity, since=lead.scoring_since)
        lead.first_touch, lead.last_touch = first_and_last_touch(events[lead.id])
        ledger.record(lead, result, now, activity)
        now_rule = hand_off_now_rule(model, events[lead.id], now, since=lead.scoring_since)
        changes = _stamp_stages(session, lead, result.score, model, now, now_rule)
        colleagues = account.heat(lead.id, result, now) if account else []
        rescored[lead.id] = Rescored(lead, result, changes, colleagues, every_event[lead.id])
    ledger.write()
    session.flush()
    return rescored


@dataclass
class _AccountState:
    """One account during a rescore: who of it engaged within the signal's window, kept current as its
    leads are rescored one after another."""

    account: Account
    within: timedelta
    engaged: dict[int, datetime]  # lead id: engaged at

    def activity_without(self, lead_id: int) -> AccountActivity:
        others = (at for other, at in self.engaged.items() if other != lead_id)
        return AccountActivity(self.account.domain, tuple(sorted(others)))

    def heat(self, lead_id: int, result: ScoreResult, now: datetime) -> list[int]:
        """Mark the account hot (or no longer hot); when it just became hot, the engaged colleagues who
        now earn the account points too, so that their workflows rescore them."""
        if result.engaged_at is not None and now - result.engaged_at < self.within:
            self.engaged[lead_id] = result.engaged_at
        else:
            self.engaged.pop(lead_id, None)
        if result.account_hot and self.account.hot_since is None:
            self.account.hot_since = now
            return sorted(other for other in self.engaged if other != lead_id)
        if not result.account_hot and self.account.hot_since is not None:
            self.account.hot_since = None
        return []


def _accounts(
    session: Session, leads: Sequence[Lead], model: ScoringModel, now: datetime
) -> dict[int, _AccountState]:
    signal = model.account
    account_ids = {lead.account_id for lead in leads if lead.account_id}
    if signal is None or not account_ids:
        return {}
    states = {
        account.id: _AccountState(account, signal.within, {})
        for account in session.scalars(_ACCOUNTS, {"ids": list(account_ids)})
    }
    engaged = {"ids": list(account_ids), "since": now - signal.within, "now": now}
    for account_id, lead_id, engaged_at in session.execute(_ENGAGED_IN_ACCOUNTS, engaged):
        # The filter above excludes None; mypy cannot tell.
        if account_id is not None and engaged_at is not None:
            states[account_id].engaged[lead_id] = engaged_at
    return states


class _Ledger:
    """Appends a ledger entry for each lead whose score, temperature or model changed, in one insert."""

    def __init__(self, session: Session, latest: dict[int, tuple[Any, ...]], model: ScoringModel) -> None:
        self.session, self.latest, self.model = session, latest, model
        self.rows: list[dict[str, Any]] = []

    def record(
        self, lead: Lead, result: ScoreResult, now: datetime, activity: AccountActivity | None
    ) -> None:
        lead.score, lead.grade, lead.temperature = result.score, result.grade, result.temperature
        lead.last_activity_at = result.engaged_at
        if self.latest.get(lead.id) == (result.score, result.temperature, self.model.version):
            return
        self.rows.append(
            {
                "lead_id": lead.id,
                "computed_at": now,
                **result.figures(),
                "model_version": self.model.version,
                "inputs": _inputs(lead, self.model, activity),
            }
        )

    def write(self) -> None:
        if not self.rows:
            return
        connection = self.session.connection()
        if connection.scalar(_KEPT_MODEL, {"version": self.model.version}) is None:
            insert_ignoring_conflicts(
                self.session,
                ScoringModelVersion,
                [
                    {
                        "version": self.model.version,
                        "source": self.model.source,
                        "first_used_at": self.rows[0]["computed_at"],
                    }
                ],
                ["version"],
            )
        connection.execute(_LEDGER_ENTRY, self.rows)


# An assessment writes the ledger: prebuilt Core statements (table_of).
_MODELS = table_of(ScoringModelVersion)
_KEPT_MODEL = select(_MODELS.c.version).where(_MODELS.c.version == bindparam("version"))
_LEDGER_ENTRY = insert(table_of(ScoreSnapshot))


def _ledger(session: Session, lead_ids: list[int], model: ScoringModel) -> _Ledger:
    latest = {
        lead_id: (score, temperature, version)
        for lead_id, score, temperature, version in session.execute(_NEWEST_LEDGER_ENTRIES, {"ids": lead_ids})
    }
    return _Ledger(session, latest, model)


def _inputs(lead: Lead, model: ScoringModel, activity: AccountActivity | None) -> dict[str, Any]:
    return {
        "properties": {rule.property: lead.properties.get(rule.property) for rule in model.fit},
        "since": lead.scoring_since.isoformat() if lead.scoring_since else None,
        "account": activity.domain if activity else None,
        "colleagues_engaged_at": [t.isoformat() for t in activity.colleagues_engaged_at] if activity else [],
    }


def _stamp_stages(
    session: Session,
    lead: Lead,
    score: int,
    model: ScoringModel,
    now: datetime,
    hand_off_now: HandOffNow | None = None,
) -> list[StageChange]:
    reasons = {
        stage: f"score {score} reached the {stage.upper()} threshold {getattr(model.thresholds, stage)}"
        for stage in stages_reached(lead.stage, score, model.thresholds)
    }
    if hand_off_now and "sql" not in reasons and (lead.stage in QUALIFIABLE or lead.stage == "mql"):
        reasons["sql"] = f"hand off now: {hand_off_now.rule} ({hand_off_now.event})"
    changes = []
    for stage, reason in reasons.items():
        change = StageChange(
            lead_id=lead.id,
            from_stage=lead.stage,
            to_stage=stage,
            changed_at=now,
            reason=reason,
            score=score,
        )
        session.add(change)
        lead.stage = stage
        changes.append(change)
    return changes


def recycle(session: Session, lead_id: int, reason: str, model: ScoringModel, now: datetime) -> Rescored:
    """A lead handed back by sales: stamped "recycled"; its behavior starts again from now, so it
    qualifies again (MQL, then SQL) only on new engagement. Fit and account points still count."""
    lead = session.scalars(select(Lead).where(Lead.id == lead_id).with_for_update()).one()
    if lead.stage not in RECYCLABLE:
        raise NotRecyclable(
            f"lead {lead.id} is {lead.stage!r}: only {', '.join(sorted(RECYCLABLE))} leads can be recycled"
        )
    session.add(
        StageChange(
            lead_id=lead.id,
            from_stage=lead.stage,
            to_stage="recycled",
            changed_at=now,
            reason=f"handed back by sales: {reason}",
            score=lead.score,
        )
    )
    lead.stage, lead.scoring_since = "recycled", now
    session.flush()
    rescored = rescore(session, lead.id, model, now)
    assert rescored is not None
    return rescored


# --- the ledger --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PastScore:
    at: datetime
    result: ScoreResult
    snapshot: ScoreSnapshot  # the ledger entry in force at `at`
    model_version: str


def score_at(session: Session, lead_id: int, at: datetime) -> PastScore | None:
    """The lead's score at `at`, recomputed from the ledger: the scoring model in force then (kept by
    version), the events the store had received by then, and the inputs the entry recorded. At an
    entry's own time it equals the recorded score; between entries it shows the decay since."""
    snapshot = session.scalars(
        select(ScoreSnapshot)
        .where(ScoreSnapshot.lead_id == lead_id, ScoreSnapshot.computed_at <= at)
        .order_by(ScoreSnapshot.computed_at.desc(), ScoreSnapshot.id.desc())
        .limit(1)
    ).first()
    if snapshot is None:
        return None
    kept = session.get(ScoringModelVersion, snapshot.model_version)
    if kept is None or snapshot.inputs is None:
        return None  # recorded before the ledger kept models and inputs
    model = ScoringModel.model_validate(yaml.safe_load(kept.source))
    inputs = snapshot.inputs
    events = [
        EventFact(*row)
        for row in session.execute(
            select(Event.id, Event.type, Event.occurred_at, Event.properties).where(
                Event.lead_id == lead_id, Event.received_at <= at
            )
        )
    ]
    activity = (
        AccountActivity(
            inputs["account"], tuple(datetime.fromisoformat(t) for t in inputs["colleagues_engaged_at"])
        )
        if inputs.get("account")
        else None
    )
    since = datetime.fromisoformat(inputs["since"]) if inputs.get("since") else None
    result = score_lead(model, inputs["properties"], events, at, activity, since=since)
    return PastScore(at, result, snapshot, snapshot.model_version)
