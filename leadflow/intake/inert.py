"""Inert events: assessed in the store by the outbox router, never signalled to the lead's workflow.

Most events change nothing a lead's workflow acts on: a blog page view adds a few points, and that is all.
Signalling each one costs a signal-with-start and a workflow task in Temporal, so the router asks here
first. For one lead's waiting events (one transaction, the lead's row locked, so the workflow's own
assessments and this one happen one after the other), the events are inert when all of this holds:

1. the lead exists, is not merged, and its workflow has assessed it before (a `workflow_timers` row: the
   workflow exists and we know when it wakes by itself);
2. none of the events is of a type that always goes to the workflow: a hand-off-now event (a demo request),
   an opt-out, the trigger or the awaited event of a segment's absence rule;
3. no running sequence of the lead names any of their types (a goal, a branch's condition, a wait until a
   moment an event carries, an exit: whatever its definition mentions under `event`), nor is it an opt-out;
4. the assessment of the events (the same one the workflow runs, `LeadActivities.assess_in`) changes none
   of: the stage, the temperature, segment membership the workflow acts on (a sequence to start, a segment
   left), a pending hand-off, an account turning hot, an absence window to time, and it moves the
   workflow's cooling timer no earlier than the workflow already wakes (`workflow_timers.rescore_at`).

Then the assessment is committed together with the deletion of the events' outbox rows: the score ledger
has the events, the workflow's next assessment starts from their result, and they are routed exactly once.
Otherwise the transaction rolls back and the router signals the events as before, in order: rule 4 is
decided on what the assessment would do, so anything it would change is left for the workflow to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, exists, select, update
from sqlalchemy.orm import Session

from leadflow.content.loader import Content
from leadflow.contracts import AssessLeadInput, AssessLeadResult, EnrollmentStatus, EventRef
from leadflow.messaging.consent import OPT_OUT_EVENT
from leadflow.platform.store import Database
from leadflow.platform.store.models import Enrollment, Event, Lead, Outbox, WorkflowTimer
from leadflow.platform.store.upsert import insert_ignoring_conflicts

log = logging.getLogger(__name__)

# One statement for what rules 1 and 3 read of the lead (an assessment's fixed cost is its statements): its
# row, its workflow's timer (`timed` is None: no row) and whether any sequence of it runs.
_LOCKED_LEAD = (
    select(
        Lead.stage,
        Lead.temperature,
        Lead.merged_into_id,
        WorkflowTimer.lead_id.label("timed"),
        WorkflowTimer.rescore_at,
        exists()
        .where(Enrollment.lead_id == Lead.id, Enrollment.status == EnrollmentStatus.RUNNING)
        .label("in_a_sequence"),
    )
    .outerjoin(WorkflowTimer, WorkflowTimer.lead_id == Lead.id)
    .where(Lead.id == bindparam("lead"))
    .with_for_update(of=Lead)
)
_RUNNING_SEQUENCES = select(Enrollment.workflow_id).where(
    Enrollment.lead_id == bindparam("lead"), Enrollment.status == EnrollmentStatus.RUNNING
)
_DEFINITION = select(Enrollment.definition).where(Enrollment.workflow_id == bindparam("workflow_id"))
_NEWER_ROWS = (
    select(Outbox.id, Event.id, Event.type, Event.occurred_at, Event.properties)
    .join(Event, Event.id == Outbox.event_id)
    .where(Outbox.lead_id == bindparam("lead"), Outbox.id > bindparam("after"))
    .order_by(Outbox.id)
    .limit(bindparam("room"))
)
_DELETE_ROWS = delete(Outbox).where(Outbox.id.in_(bindparam("ids", expanding=True)))  # built once
_DEFINITIONS_REMEMBERED = 10_000  # event types named by running enrollments, by workflow id (immutable)


class _Signal(Exception):
    """Rolls the assessment back: the events go to the workflow."""

    def __init__(self, items: list[tuple[int, EventRef]]) -> None:
        self.items = items


@dataclass(frozen=True)
class Decision:
    """What `InertEvents.assess_if_inert` decided on a lead's events (`items`: outbox id and event)."""

    inert: bool | None  # True: assessed in the store; False: to signal; None: routed by another router
    items: list[tuple[int, EventRef]]


class _Taken(Exception):
    """Rolls the assessment back: another router routed some of the events already."""


@dataclass
class InertEvents:
    """Rules 1–4 of the module's docstring, and the assessment they commit. `assess_in` is the lead
    workflow's assessment run in a given transaction."""

    db: Database
    content: Callable[[], Content]
    assess_in: Callable[[Session, AssessLeadInput], AssessLeadResult]
    share: int = 50  # a lead's events decided on at once at most (the router's LEAD_EVENTS_PER_DRAIN)

    def __post_init__(self) -> None:
        self._always_for: tuple[int, frozenset[str]] | None = None
        self._named_by_enrollment: dict[str, frozenset[str]] = {}
        self.assessed = 0  # events assessed here, not signalled (figures for the benches)
        self.assessments = 0  # assessments that found the events inert (one per lead and drain)

    def candidates(
        self, by_lead: dict[int, list[tuple[int, EventRef]]]
    ) -> dict[int, list[tuple[int, EventRef]]]:
        """The leads whose events may be inert: none is of a type that always goes to the workflow (rule 2)."""
        always = self.always_signalled()
        return {
            lead_id: items
            for lead_id, items in by_lead.items()
            if not any(event.type in always for _, event in items)
        }

    def assess_until(
        self, by_lead: dict[int, list[tuple[int, EventRef]]], deadline: float
    ) -> dict[int, Decision]:
        """`assess_if_inert` for one lead after the other (at least one) until `time.monotonic()` passes
        `deadline`: its answer for each lead; the leads not reached are not in the answer."""
        decided: dict[int, Decision] = {}
        for lead_id, items in by_lead.items():
            if decided and time.monotonic() > deadline:
                break
            decided[lead_id] = self.assess_if_inert(lead_id, items)
        return decided

    def assess_if_inert(self, lead_id: int, items: list[tuple[int, EventRef]]) -> Decision:
        """Assess the lead's events in the store, with those that entered the outbox after them (up to
        `share` in all), and delete their outbox rows when they are inert. The answer says which events it
        decided on, and True (assessed), False (nothing written: they must be signalled) or None (nothing
        written: another router routed some of them meanwhile, its lease outliving ours; what is left is
        read again by the next drain). Blocking: call it on a thread (Database.call)."""
        if any(event.type in self.always_signalled() for _, event in items):
            return Decision(False, items)
        try:
            with self.db.transaction() as session:
                items = self._assess(session, lead_id, items)
        except _Signal as signal:
            return Decision(False, signal.items)
        except _Taken:
            return Decision(None, items)
        self.assessed += len(items)
        self.assessments += 1
        return Decision(True, items)

    def _assess(
        self, session: Session, lead_id: int, items: list[tuple[int, EventRef]]
    ) -> list[tuple[int, EventRef]]:
        connection = session.connection()
        lead = connection.execute(_LOCKED_LEAD, {"lead": lead_id}).first()
        if lead is None or lead.merged_into_id is not None:
            raise _Signal(items)
        # The lead's events that came since the router read these: the same assessment takes them too.
        newer = connection.execute(
            _NEWER_ROWS, {"lead": lead_id, "after": items[-1][0], "room": self.share - len(items)}
        ).all()
        items = items + [(row[0], EventRef(row[1], row[2], row[3], row[4])) for row in newer]
        types = {event.type for _, event in items}
        if not types.isdisjoint(self.always_signalled()):
            raise _Signal(items)
        if lead.timed is None:  # the workflow never assessed this lead: it may not exist yet
            raise _Signal(items)
        running = (
            connection.scalars(_RUNNING_SEQUENCES, {"lead": lead_id}).all() if lead.in_a_sequence else []
        )
        if any(not types.isdisjoint(self._named_by(session, workflow_id)) for workflow_id in running):
            raise _Signal(items)
        event_ids = [event.event_id for _, event in items]
        assessment = self.assess_in(
            session,
            AssessLeadInput(
                lead_id,
                event_ids,
                started_sequences=list(running),
                event_types=sorted(types),
                stage=lead.stage,
            ),
        )
        acted_on = what_the_workflow_acts_on(assessment, lead.stage, lead.temperature, lead.rescore_at)
        if acted_on is not None:
            log.debug("lead %s: signalled for %s", lead_id, acted_on)
            raise _Signal(items)
        outbox_ids = [outbox_id for outbox_id, _ in items]
        deleted = connection.execute(_DELETE_ROWS, {"ids": outbox_ids})
        if deleted.rowcount != len(outbox_ids):
            raise _Taken
        return items

    def always_signalled(self) -> frozenset[str]:
        """Rule 2's event types, for the content in use."""
        content = self.content()
        if self._always_for is None or self._always_for[0] != id(content):
            types = {rule.event for rule in content.scoring.hand_off_now} | {OPT_OUT_EVENT}
            for segment in content.segments.values():
                for rule in (segment.entry, segment.exit):
                    if rule is not None:
                        types |= _absence_events(rule.model_dump(mode="json"))
            self._always_for = (id(content), frozenset(types))
        return self._always_for[1]

    def _named_by(self, session: Session, workflow_id: str) -> frozenset[str]:
        """The event types the definition an enrollment runs names (read once: it never changes)."""
        named = self._named_by_enrollment.get(workflow_id)
        if named is None:
            definition = session.connection().scalar(_DEFINITION, {"workflow_id": workflow_id})
            if len(self._named_by_enrollment) >= _DEFINITIONS_REMEMBERED:
                self._named_by_enrollment.clear()
            named = self._named_by_enrollment[workflow_id] = frozenset(_named_events(definition)) | {
                OPT_OUT_EVENT
            }
        return named


def what_the_workflow_acts_on(
    assessment: AssessLeadResult, stage: str, temperature: str, wakes_at: datetime | None
) -> str | None:
    """What in this assessment the lead's workflow would act on (rule 4), or None: nothing."""
    checks = [
        ("a merge", assessment.merged_into is not None),
        ("a stage", assessment.stage != stage or bool(assessment.new_stages)),
        ("the temperature", assessment.temperature != temperature),
        ("a sequence to start", bool(assessment.to_start)),
        ("a segment left", bool(assessment.left_segments)),
        ("a hand-off", assessment.handoff_stage_change_id is not None),
        ("an account turned hot", bool(assessment.rescore_lead_workflows)),
        ("an absence window", bool(assessment.absence_timers)),
        ("an earlier wake-up", _wakes_earlier(assessment.next_rescore_at, wakes_at)),
    ]
    return next((what for what, acts in checks if acts), None)


def _wakes_earlier(needed: datetime | None, armed: datetime | None) -> bool:
    """A timer the workflow has not armed, or one earlier than its own: it must know. (A later one is
    harmless: the workflow wakes early, rescores and arms the later moment.)"""
    return needed is not None and (armed is None or needed < armed)


def remember_workflow_timer(session: Session, lead_id: int, rescore_at: datetime | None) -> None:
    """Record when the lead's workflow will wake by itself, from the assessment it is about to act on."""
    changed = session.execute(
        update(WorkflowTimer).where(WorkflowTimer.lead_id == lead_id).values(rescore_at=rescore_at)
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        insert_ignoring_conflicts(
            session, WorkflowTimer, [{"lead_id": lead_id, "rescore_at": rescore_at}], ["lead_id"]
        )


def _named_events(tree: Any) -> Iterable[str]:
    """Every event type a definition names (values under an `event` key, at any depth)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "event" and isinstance(value, str):
                yield value
            else:
                yield from _named_events(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _named_events(value)


def _absence_events(tree: Any) -> set[str]:
    """The event types of the absence rules in a segment rule: the trigger and the awaited event."""
    found: set[str] = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            found |= set(_named_events(value)) if key == "absence" else _absence_events(value)
    elif isinstance(tree, list):
        for value in tree:
            found |= _absence_events(value)
    return found
