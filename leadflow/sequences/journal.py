"""The enrollment's journal: the steps its sequence workflow reached (branch taken, variant drawn, a send held
or skipped), its current step, and its end. Written by the activity the entries ride along with (a send, the
enrollment's end) or before a wait; an entry already written is never written twice."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from leadflow.contracts import EnrollmentFinished, StepReached
from leadflow.platform import clock
from leadflow.platform.store.models import Enrollment, EnrollmentStep, table_of

# The journal is written at every send and before every wait: prebuilt Core statements (table_of).
_ENROLLMENTS, _JOURNAL = table_of(Enrollment), table_of(EnrollmentStep)
_SET_CURRENT_STEP = (
    update(_ENROLLMENTS)
    .where(_ENROLLMENTS.c.workflow_id == bindparam("workflow"))
    .values(current_step=bindparam("reached"))
)
_JOURNALED = select(_JOURNAL.c.step, _JOURNAL.c.kind, _JOURNAL.c.detail).where(
    _JOURNAL.c.workflow_id == bindparam("workflow")
)
_JOURNAL_ENTRY = insert(_JOURNAL)


def write_journal(session: Session, steps: list[StepReached]) -> None:
    """Journal entries of one enrollment, and its current step. An entry already there is not written again:
    the activity carrying it may run twice (a retried send, a local activity rerun after a worker crash)."""
    if not steps:
        return
    workflow_id = steps[-1].workflow_id
    connection = session.connection()
    connection.execute(_SET_CURRENT_STEP, {"workflow": workflow_id, "reached": steps[-1].step})
    written: set[tuple[str, str, str]] = {
        (row.step, row.kind, row.detail) for row in connection.execute(_JOURNALED, {"workflow": workflow_id})
    }
    rows = []
    for step in steps:
        label, kind = step.label or str(step.step), step.kind or "step"
        if step.lead_id is None or (label, kind, step.detail) in written:
            continue
        written.add((label, kind, step.detail))
        rows.append(
            {
                "workflow_id": step.workflow_id,
                "lead_id": step.lead_id,
                "step": label,
                "kind": kind,
                "at": clock.not_before(step.at),
                "detail": step.detail,
            }
        )
    if rows:
        connection.execute(_JOURNAL_ENTRY, rows)


def finish_enrollment(session: Session, finished: EnrollmentFinished) -> None:
    """The enrollment's end (status, why, when) with the journal entries its workflow had not written yet."""
    write_journal(session, finished.journal)
    session.execute(
        update(Enrollment)
        .where(Enrollment.workflow_id == finished.workflow_id)
        .values(
            status=finished.status,
            exit_reason=finished.reason or None,
            finished_at=clock.not_before(finished.at),
        )
    )
