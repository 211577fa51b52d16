"""Leads rescored in the store, many at once (a rescore run's batch, an assessment's lead and its
colleagues), their accounts' activity read once, their stage changes stamped."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from leadflow.intake.tracking.attribution import first_and_last_touch
from leadflow.leads.lifecycle import QUALIFIABLE, Stage
from leadflow.platform.store.models import Account, Event, Lead, StageChange
from leadflow.scoring.model import HandOffNow, ScoringModel
from leadflow.scoring.qualification.ledger import _IDS, _ledger
from leadflow.scoring.score import (
    AccountActivity,
    EventFact,
    ScoreResult,
    hand_off_now_rule,
    score_lead,
    stages_reached,
)


@dataclass
class Rescored:
    lead: Lead
    result: ScoreResult
    stage_changes: list[StageChange] = field(default_factory=list)
    colleagues_to_rescore: list[int] = field(default_factory=list)  # the account just became hot
    # All of the lead's events (rescore_many), or those its segments can need (rescore: see there).
    events: list[EventFact] = field(default_factory=list)


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
    if hand_off_now and Stage.SQL not in reasons and (lead.stage in QUALIFIABLE or lead.stage == Stage.MQL):
        reasons[Stage.SQL] = f"hand off now: {hand_off_now.rule} ({hand_off_now.event})"
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
