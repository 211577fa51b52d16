"""Qualification in the store: rescore a lead with the pure scoring function, keep the score ledger, stamp
lifecycle stages (never silently reversed), mark accounts hot, recycle leads handed back by sales, and
recompute a score at a past time from the ledger.

The same `rescore` runs in the lead workflow's activity, in `leadflow rescore` and after a recycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadflow.content.models import ScoringModel
from leadflow.scoring import (
    RECYCLABLE,
    AccountActivity,
    EventFact,
    ScoreResult,
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
)
from leadflow.store.upsert import insert_ignoring_conflicts


@dataclass
class Rescored:
    lead: Lead
    result: ScoreResult
    stage_changes: list[StageChange] = field(default_factory=list)
    colleagues_to_rescore: list[int] = field(default_factory=list)  # the account just became hot


class NotRecyclable(ValueError):
    pass


def rescore(session: Session, lead_id: int, model: ScoringModel, now: datetime) -> Rescored | None:
    """Score the lead as of `now` with what the store knew then, and record what changed. The lead row is
    locked for the transaction, so concurrent rescores of one lead stamp each stage once."""
    lead = session.scalars(select(Lead).where(Lead.id == lead_id).with_for_update()).first()
    if lead is None:
        return None
    events = [
        EventFact(*row)
        for row in session.execute(
            select(Event.id, Event.type, Event.occurred_at, Event.properties).where(
                Event.lead_id == lead.id, Event.received_at <= now
            )
        )
    ]
    account = session.get(Account, lead.account_id) if lead.account_id and model.account else None
    activity = _account_activity(session, lead, account, model, now)
    result = score_lead(model, lead.properties, events, now, activity, since=lead.scoring_since)
    rescored = Rescored(lead, result)
    _record(session, lead, model, result, now, activity)
    rescored.stage_changes = _stamp_stages(session, lead, result.score, model, now)
    if account is not None:
        rescored.colleagues_to_rescore = _account_heat(session, lead, account, result, model, now)
    return rescored


def _account_activity(
    session: Session, lead: Lead, account: Account | None, model: ScoringModel, now: datetime
) -> AccountActivity | None:
    if account is None or model.account is None:
        return None
    colleagues = session.scalars(
        select(Lead.last_activity_at).where(
            Lead.account_id == account.id,
            Lead.id != lead.id,
            Lead.last_activity_at > now - model.account.within,
            Lead.last_activity_at <= now,
        )
    )
    return AccountActivity(account.domain, tuple(sorted(colleagues)))


def _record(
    session: Session,
    lead: Lead,
    model: ScoringModel,
    result: ScoreResult,
    now: datetime,
    activity: AccountActivity | None,
) -> None:
    """Update the lead and append to the ledger when anything a person sees changed."""
    lead.score, lead.grade, lead.temperature = result.score, result.grade, result.temperature
    lead.last_activity_at = result.engaged_at
    previous = session.execute(
        select(ScoreSnapshot.score, ScoreSnapshot.temperature, ScoreSnapshot.model_version)
        .where(ScoreSnapshot.lead_id == lead.id)
        .order_by(ScoreSnapshot.id.desc())
        .limit(1)
    ).first()
    if previous is not None and tuple(previous) == (result.score, result.temperature, model.version):
        return
    insert_ignoring_conflicts(
        session,
        ScoringModelVersion,
        [{"version": model.version, "source": model.source, "first_used_at": now}],
        ["version"],
    )
    session.add(
        ScoreSnapshot(
            lead_id=lead.id,
            computed_at=now,
            score=result.score,
            fit=result.fit,
            behavior=result.behavior_points,
            account=result.account,
            grade=result.grade,
            temperature=result.temperature,
            breakdown=[c.as_json() for c in result.contributions],
            model_version=model.version,
            inputs=_inputs(lead, model, activity),
        )
    )


def _inputs(lead: Lead, model: ScoringModel, activity: AccountActivity | None) -> dict[str, Any]:
    return {
        "properties": {rule.property: lead.properties.get(rule.property) for rule in model.fit},
        "since": lead.scoring_since.isoformat() if lead.scoring_since else None,
        "account": activity.domain if activity else None,
        "colleagues_engaged_at": [t.isoformat() for t in activity.colleagues_engaged_at] if activity else [],
    }


def _stamp_stages(
    session: Session, lead: Lead, score: int, model: ScoringModel, now: datetime
) -> list[StageChange]:
    changes = []
    for stage in stages_reached(lead.stage, score, model.thresholds):
        threshold = getattr(model.thresholds, stage)
        change = StageChange(
            lead_id=lead.id,
            from_stage=lead.stage,
            to_stage=stage,
            changed_at=now,
            reason=f"score {score} reached the {stage.upper()} threshold {threshold}",
            score=score,
        )
        session.add(change)
        lead.stage = stage
        changes.append(change)
    session.flush()
    return changes


def _account_heat(
    session: Session, lead: Lead, account: Account, result: ScoreResult, model: ScoringModel, now: datetime
) -> list[int]:
    """Mark the account hot (or no longer hot); when it just became hot, the engaged colleagues who now
    earn the account points too, so that their workflows rescore them."""
    if result.account_hot and account.hot_since is None:
        account.hot_since = now
        assert model.account is not None
        return list(
            session.scalars(
                select(Lead.id).where(
                    Lead.account_id == account.id,
                    Lead.id != lead.id,
                    Lead.last_activity_at > now - model.account.within,
                )
            )
        )
    if not result.account_hot and account.hot_since is not None:
        account.hot_since = None
    return []


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
