"""One lead rescored in the store: its scoring state folded with its new events, the score kept, stages
stamped; recycling a lead sales handed back."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session

from leadflow.leads.lifecycle import RECYCLABLE, Stage
from leadflow.platform.errors import LeadflowError
from leadflow.platform.store.models import Event, Lead, ScoringStateRow, StageChange, table_of
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.qualification.ledger import _ledger
from leadflow.scoring.qualification.many_leads import (
    _LOCKED_LEADS,
    Rescored,
    _accounts,
    _stamp_stages,
    rescore_many,
)
from leadflow.scoring.score import EventFact
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
