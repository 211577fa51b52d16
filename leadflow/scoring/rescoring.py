"""Rescoring everyone after the scoring model changed: in batches of leads by id, each batch one
transaction that also moves the run's cursor, so an interrupted run resumes exactly where it stopped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from leadflow.leads.lifecycle import Stage
from leadflow.platform import clock
from leadflow.platform.store import Database
from leadflow.platform.store.models import Lead, RescoreRun
from leadflow.scoring.model import ScoringModel
from leadflow.scoring.qualification import rescore_many


@dataclass
class RescoreReport:
    run_id: int
    model_version: str
    resumed: bool
    leads: int  # rescored by this run, earlier attempts included
    changed_stage: int
    transitions: dict[str, int]  # "lead→mql": how many
    promoted_to_sql: list[int] = field(default_factory=list)  # by this invocation: they await a hand-off


def leads_to_rescore(db: Database, model: ScoringModel) -> tuple[int, int]:
    """How many leads the next `rescore_everyone` will rescore, and how many an unfinished run did already."""
    with db.read() as session:
        run = _unfinished_run(session, model.version)
        cursor, done = (run.last_lead_id, run.leads_done) if run else (0, 0)
        return session.scalar(select(func.count(Lead.id)).where(Lead.id > cursor)) or 0, done


def rescore_everyone(
    db: Database,
    model: ScoringModel,
    batch_size: int = 500,
    on_batch: Callable[[int], None] = lambda rescored: None,
) -> RescoreReport:
    """Rescore every lead with `model`, resuming this model's unfinished run if there is one."""
    with db.transaction() as session:
        run = _unfinished_run(session, model.version)
        resumed = run is not None
        if run is None:
            run = RescoreRun(
                model_version=model.version,
                started_at=clock.now(),
                last_lead_id=0,
                leads_done=0,
                leads_changed_stage=0,
                stage_changes={},
            )
            session.add(run)
            session.flush()
        run_id = run.id
    promoted: list[int] = []
    while True:
        with db.transaction() as session:
            run = session.get_one(RescoreRun, run_id)
            ids = list(
                session.scalars(
                    select(Lead.id).where(Lead.id > run.last_lead_id).order_by(Lead.id).limit(batch_size)
                )
            )
            if not ids:
                run.finished_at = clock.now()
                return RescoreReport(
                    run_id,
                    model.version,
                    resumed,
                    run.leads_done,
                    run.leads_changed_stage,
                    dict(run.stage_changes),
                    promoted,
                )
            now, transitions, changed = clock.now(), Counter(run.stage_changes), 0
            for lead_id, rescored in rescore_many(session, ids, model, now).items():
                if not rescored.stage_changes:
                    continue
                changed += 1
                transitions.update(f"{c.from_stage}→{c.to_stage}" for c in rescored.stage_changes)
                if any(c.to_stage == Stage.SQL for c in rescored.stage_changes):
                    promoted.append(lead_id)
            run.last_lead_id, run.leads_done = ids[-1], run.leads_done + len(ids)
            run.leads_changed_stage += changed
            run.stage_changes = dict(transitions)
        on_batch(len(ids))


def _unfinished_run(session: Session, version: str) -> RescoreRun | None:
    return session.scalars(
        select(RescoreRun)
        .where(RescoreRun.model_version == version, RescoreRun.finished_at.is_(None))
        .order_by(RescoreRun.id.desc())
        .limit(1)
    ).first()
