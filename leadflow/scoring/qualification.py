"""Qualification in the store: rescore a lead with the pure scoring function, keep the score ledger, stamp
lifecycle stages (never silently reversed), mark accounts hot, recycle leads handed back by sales, and
recompute a score at a past time from the ledger.

The same `rescore` runs in the lead workflow's activity, in `leadflow rescore` and after a recycle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml
from sqlalchemy import BindParameter, Connection, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from leadflow.intake.tracking.attribution import first_and_last_touch
from leadflow.leads.lifecycle import QUALIFIABLE, RECYCLABLE, Stage
from leadflow.platform.errors import LeadflowError
from leadflow.platform.store.models import (
    Account,
    Event,
    Lead,
    ScoreSnapshot,
    ScoringModelVersion,
    ScoringStateRow,
    StageChange,
    table_of,
)
from leadflow.platform.store.upsert import insert_ignoring_conflicts
from leadflow.scoring.model import HandOffNow, ScoringModel
from leadflow.scoring.score import (
    AccountActivity,
    EventFact,
    ScoreResult,
    hand_off_now_rule,
    score_lead,
    stages_reached,
)
from leadflow.scoring.state import (
    FoldPlan,
    ScoringState,
    count_events,
    fold,
    hand_off_rule_index,
    micros,
    plan_of,
    score_from_state,
    touches,
)
from leadflow.segments.evaluation import absence_specs, trigger_matches
from leadflow.segments.model import Segment


@dataclass
class Rescored:
    lead: Lead
    result: ScoreResult
    stage_changes: list[StageChange] = field(default_factory=list)
    colleagues_to_rescore: list[int] = field(default_factory=list)  # the account just became hot
    # All of the lead's events (rescore_many), or those its segments can need (rescore: see there).
    events: list[EventFact] = field(default_factory=list)


class NotRecyclable(LeadflowError, ValueError):
    """Sales asked to recycle a lead that is not MQL, SQL or opportunity."""

    http_status = 409


def rescore(
    session: Session,
    lead_id: int,
    model: ScoringModel,
    now: datetime,
    segments: Sequence[Segment] = (),
    asked_event_ids: Collection[int] = (),
) -> Rescored | None:
    """Score the lead as of `now` with what the store knew then, and record what changed. The lead row is
    locked for the transaction, so concurrent rescores of one lead stamp each stage once.

    Incremental (leadflow.scoring.state): the events since the lead's stored state are folded into it and
    the score comes from the state, so the cost does not grow with the lead's history. `Rescored.events` are
    then the events `segments` can need: `asked_event_ids` (what an assessment's segment rules ask about by
    id: new events, absence windows that closed), those deciding the segments' counts, and the follow-ups in
    the absence windows of the asked ones."""
    plan = plan_of(model, segments)
    if not plan.foldable:
        return rescore_many(session, [lead_id], model, now).get(lead_id)
    lead = session.scalars(_LOCKED_LEADS, {"ids": [lead_id]}).first()
    if lead is None:
        return None
    connection = session.connection()
    stored = connection.execute(_STATE, {"lead": lead_id}).first()
    state = None
    if stored is not None and stored.fingerprint == plan.fingerprint:  # else built for another model
        state = ScoringState.from_json(stored.fingerprint, stored.state)
        if micros(now) < state.as_of:
            return rescore_many(session, [lead_id], model, now).get(lead_id)  # an earlier time: all events
    if state is None or not state.matches(plan, lead.scoring_since):
        state = ScoringState.empty(plan, lead.scoring_since)  # built once from all of the lead's events
    folded = _fold_new_events(connection, plan, state, lead_id, now, asked_event_ids)
    accounts = _accounts(session, [lead], model, now)
    account = accounts.get(lead.account_id) if lead.account_id else None
    activity = account.activity_without(lead.id) if account else None
    result = score_from_state(plan, state, lead.properties, now, activity)
    lead.first_touch, lead.last_touch = touches(state)
    ledger = _ledger(session, [lead.id], model)
    ledger.record(lead, result, now, activity)
    ledger.write()
    hand_off = hand_off_rule_index(state)
    now_rule = model.hand_off_now[hand_off] if hand_off is not None else None
    changes = _stamp_stages(session, lead, result.score, model, now, now_rule)
    colleagues = account.heat(lead.id, result, now) if account else []
    row = {"lead": lead_id, "fingerprint": plan.fingerprint, "state": state.as_json()}
    connection.execute(_UPDATE_STATE if stored else _INSERT_STATE, row)
    events = _events_for_segments(connection, plan, state, lead_id, folded, asked_event_ids, segments)
    session.flush()
    return Rescored(lead, result, changes, colleagues, events)


_STATES = table_of(ScoringStateRow)
_STATE = select(_STATES.c.fingerprint, _STATES.c.state).where(_STATES.c.lead_id == bindparam("lead"))
_INSERT_STATE = insert(_STATES).values(
    lead_id=bindparam("lead"), fingerprint=bindparam("fingerprint"), state=bindparam("state")
)
_UPDATE_STATE = (
    update(_STATES)
    .where(_STATES.c.lead_id == bindparam("lead"))
    .values(fingerprint=bindparam("fingerprint"), state=bindparam("state"))
)
_EVENTS = table_of(Event)
_EVENT_COLUMNS = (_EVENTS.c.id, _EVENTS.c.type, _EVENTS.c.occurred_at, _EVENTS.c.properties)
_EVENTS_AFTER = (
    select(_EVENTS.c.received_at, *_EVENT_COLUMNS)
    .where(_EVENTS.c.lead_id == bindparam("lead"), _EVENTS.c.id > bindparam("cursor"))
    .order_by(_EVENTS.c.id)
)
_EVENTS_BY_ID = select(_EVENTS.c.received_at, *_EVENT_COLUMNS).where(
    _EVENTS.c.lead_id == bindparam("lead"), _EVENTS.c.id.in_(bindparam("ids", expanding=True))
)
_EVENTS_COME_DUE = select(*_EVENT_COLUMNS).where(
    _EVENTS.c.lead_id == bindparam("lead"),
    _EVENTS.c.id <= bindparam("cursor"),
    _EVENTS.c.occurred_at > bindparam("after"),
    _EVENTS.c.occurred_at <= bindparam("until"),
)
_EVENTS_OF_TYPE_BETWEEN = select(*_EVENT_COLUMNS).where(
    _EVENTS.c.lead_id == bindparam("lead"),
    _EVENTS.c.type == bindparam("type"),
    _EVENTS.c.occurred_at >= bindparam("start"),
    _EVENTS.c.occurred_at <= bindparam("end"),
)


def _fold_new_events(
    connection: Connection,
    plan: FoldPlan,
    state: ScoringState,
    lead_id: int,
    now: datetime,
    asked_event_ids: Collection[int],
) -> list[EventFact]:
    """Fold the lead's events after the state's cursor (received by `now`), and any asked-about event a
    concurrent transaction committed behind the cursor; returns them."""
    rows = list(connection.execute(_EVENTS_AFTER, {"lead": lead_id, "cursor": state.cursor}))
    late = [row for row in rows if row.received_at > now]  # the clock of a test moved back: not yet
    if late:
        rows = [row for row in rows if row.id < late[0].id]
    behind = [i for i in asked_event_ids if i <= state.cursor and state.missed(i)]
    if behind:
        rows += [
            r
            for r in connection.execute(_EVENTS_BY_ID, {"lead": lead_id, "ids": behind})
            if r.received_at <= now
        ]
    events = [EventFact(row.id, row.type, row.occurred_at, row.properties) for row in rows]
    came_due = []
    if dates := state.due(now):
        window = {"lead": lead_id, "cursor": state.cursor, "after": dates[0], "until": dates[1]}
        folding = {event.id for event in events}
        came_due = [
            EventFact(*row) for row in connection.execute(_EVENTS_COME_DUE, window) if row[0] not in folding
        ]
    fold(plan, state, events, now, came_due)
    state.mark_folded([event.id for event in events])
    return events


def _events_for_segments(
    connection: Connection,
    plan: FoldPlan,
    state: ScoringState,
    lead_id: int,
    folded: list[EventFact],
    asked_event_ids: Collection[int],
    segments: Sequence[Segment],
) -> list[EventFact]:
    # The rules ask about events by id (event, absence) or count them (the decisive ones kept in the state):
    # no other event can change what they decide.
    asked_ids = set(asked_event_ids)
    events = {event.id: event for event in [*count_events(state), *(e for e in folded if e.id in asked_ids)]}
    missing = [i for i in asked_ids if i not in events]
    if missing:
        for row in connection.execute(_EVENTS_BY_ID, {"lead": lead_id, "ids": missing}):
            events[row.id] = EventFact(row.id, row.type, row.occurred_at, row.properties)
    asked = [events[i] for i in asked_event_ids if i in events]
    for spec in absence_specs(segments):
        for trigger in asked:
            if trigger_matches(spec.after, trigger.type, trigger.properties):
                window = {"lead": lead_id, "type": spec.missing.event, "start": trigger.occurred_at}
                window["end"] = trigger.occurred_at + spec.within
                for event_id, *fact in connection.execute(_EVENTS_OF_TYPE_BETWEEN, window):
                    events.setdefault(event_id, EventFact(event_id, *fact))
    return sorted(events.values(), key=lambda event: event.id)


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


def recycle(session: Session, lead_id: int, reason: str, model: ScoringModel, now: datetime) -> Rescored:
    """A lead handed back by sales: stamped "recycled"; its behavior starts again from now, so it
    qualifies again (MQL, then SQL) only on new engagement. Fit and account points still count."""
    lead = session.scalars(select(Lead).where(Lead.id == lead_id).with_for_update()).one()
    if lead.stage not in RECYCLABLE:
        raise NotRecyclable(
            f"lead {lead.id} is '{lead.stage}': only {', '.join(sorted(RECYCLABLE))} leads can be recycled"
        )
    session.add(
        StageChange(
            lead_id=lead.id,
            from_stage=lead.stage,
            to_stage=Stage.RECYCLED,
            changed_at=now,
            reason=f"handed back by sales: {reason}",
            score=lead.score,
        )
    )
    lead.stage, lead.scoring_since = Stage.RECYCLED, now
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
