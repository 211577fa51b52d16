"""The score ledger: every score kept with the version of the model that gave it, and a lead's score
recomputed as it was at a past time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from sqlalchemy import BindParameter, bindparam, func, insert, select
from sqlalchemy.orm import Session

from leadflow.platform.store.models import Event, Lead, ScoreSnapshot, ScoringModelVersion, table_of
from leadflow.platform.store.upsert import insert_ignoring_conflicts
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.score import AccountActivity, EventFact, ScoreResult, score_lead

# An assessment runs these for every burst of a lead's events: built once (building an ORM statement at
# every call cost more than running it).
_IDS: BindParameter[int] = bindparam("ids", expanding=True)


_NEWEST_LEDGER_ENTRIES = select(
    ScoreSnapshot.lead_id, ScoreSnapshot.score, ScoreSnapshot.temperature, ScoreSnapshot.model_version
).where(
    ScoreSnapshot.id.in_(
        select(func.max(ScoreSnapshot.id))
        .where(ScoreSnapshot.lead_id.in_(_IDS))
        .group_by(ScoreSnapshot.lead_id)
    )
)


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
