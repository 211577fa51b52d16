"""Activities for the lead workflow: rescoring with segment entry, and the hand-off to sales."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from temporalio import activity

from activities.handoff import HandoffActivities
from leadflow.contracts import (
    AbsenceTimer,
    AssessLeadInput,
    AssessLeadResult,
    EnrollmentStatus,
    HandOffInput,
    HandOffResult,
    SequenceStart,
)
from leadflow.intake.inert import remember_workflow_timer
from leadflow.leads.lifecycle import SALES_STAGES, Stage
from leadflow.platform import clock
from leadflow.platform.lanes import PriorityLane
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Enrollment, Handoff, Lead, SegmentMembership, StageChange, table_of
from leadflow.platform.store.upsert import insert_ignoring_conflicts
from leadflow.scoring.qualification import rescore
from leadflow.scoring.temperature import lead_temperature
from leadflow.segments.evaluation import (
    LeadFacts,
    SegmentChanges,
    SegmentEntry,
    absence_windows,
    evaluate_segments,
    next_membership_change,
)
from leadflow.segments.model import Segment
from leadflow.sequences.model import Sequence

ERASED = "erased"  # the stage of an assessment whose lead is gone


# Statements of every assessment, built once.
_LEADS = table_of(Lead)
_MERGED_INTO = select(_LEADS.c.merged_into_id).where(_LEADS.c.id == bindparam("lead"))
_MEMBERSHIPS = select(SegmentMembership).where(SegmentMembership.lead_id == bindparam("lead"))
_RUNNING_ENROLLMENTS = select(Enrollment).where(
    Enrollment.lead_id == bindparam("lead"), Enrollment.status == EnrollmentStatus.RUNNING
)


class LeadActivities:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lane = PriorityLane(runtime.settings.assess_threads, "assess")
        # Events that hand a lead to sales at once (a demo request).
        self.urgent_types = {rule.event for rule in runtime.content.scoring.hand_off_now}

    @property
    def segments(self) -> list[Segment]:
        """The loaded segments (content can be reloaded: read at each assessment)."""
        return list(self.runtime.content.segments.values())

    @activity.defn
    async def assess_lead(self, request: AssessLeadInput) -> AssessLeadResult:
        """Rescore the lead, stamp the stages it reached, and enroll it in the sequences of new segments."""
        if self.runtime.db.calls_inline:
            return self._assess(request)
        return await self.lane.run(lambda: self._assess(request), urgent=self.may_hand_off(request))

    def may_hand_off(self, request: AssessLeadInput) -> bool:
        """Whether this assessment may make the lead sales-ready: it goes before the page views waiting."""
        return request.stage == Stage.MQL or not self.urgent_types.isdisjoint(request.event_types)

    def _assess(self, request: AssessLeadInput) -> AssessLeadResult:
        with self.runtime.db.transaction() as session:
            assessment = self.assess_in(session, request)
            if assessment.merged_into is None and assessment.stage != ERASED:
                # The workflow arms its cooling timer from this answer: the router holds back no event that
                # needs an earlier one (leadflow.intake.inert).
                remember_workflow_timer(session, request.lead_id, assessment.next_rescore_at)
            return assessment

    def assess_in(self, session: Session, request: AssessLeadInput) -> AssessLeadResult:
        """The assessment, in the caller's transaction (the router's, which may roll it back: leadflow.intake.inert)."""
        content, settings = self.runtime.content, self.runtime.settings
        # The later of the two clocks: the workflow's (which the time-skipping server moves) and ours.
        now = max(clock.now(), request.as_of) if request.as_of else clock.now()
        merged_into = session.connection().scalar(_MERGED_INTO, {"lead": request.lead_id})
        if merged_into is not None:  # merged into another lead on identify: that lead carries on
            merged = session.get_one(Lead, request.lead_id)
            return AssessLeadResult(score=merged.score, stage=merged.stage, merged_into=merged_into)
        # Incremental: the segments' rules ask about these events by id (the new ones, closed windows).
        asked = {*request.event_ids, *request.closed_windows}
        rescored = rescore(session, request.lead_id, content.scoring, now, self.segments, asked)
        if rescored is None:
            return AssessLeadResult(score=0, stage=ERASED)
        lead = rescored.lead
        events = rescored.events
        new_ids = set(request.event_ids)
        facts = LeadFacts(
            now=now,
            events=tuple(events),
            new_event_ids=frozenset(new_ids),
            closed_windows=frozenset(request.closed_windows),
            properties=lead.properties,
            score=lead.score,
            temperature=lead_temperature(lead, content.scoring.thresholds),
            stage=lead.stage,
        )
        changes, members = self._update_memberships(session, lead.id, facts)
        self._enroll(session, lead, changes.entered, now)
        session.flush()
        to_start = [
            SequenceStart(e.workflow_id, Sequence.model_validate(e.definition))
            for e in session.scalars(_RUNNING_ENROLLMENTS, {"lead": lead.id})
            if e.workflow_id not in request.started_sequences
        ]
        return AssessLeadResult(
            score=rescored.result.score,
            stage=lead.stage,
            new_stages=[change.to_stage for change in rescored.stage_changes],
            to_start=to_start,
            handoff_stage_change_id=self._pending_handoff(session, lead),
            temperature=rescored.result.temperature,
            # One durable timer for both: the score cooling, and a count window sliding past.
            next_rescore_at=_earliest(
                rescored.result.next_change_at,
                next_membership_change(content.segments.values(), members, facts),
            ),
            rescore_lead_workflows=[settings.lead_workflow_id(i) for i in rescored.colleagues_to_rescore],
            left_segments=changes.left,
            absence_timers=[
                AbsenceTimer(window.event_id, window.closes_at)
                for window in absence_windows(
                    content.segments.values(), (e for e in events if e.id in new_ids), now
                )
            ],
        )

    def _update_memberships(
        self, session: Session, lead_id: int, facts: LeadFacts
    ) -> tuple[SegmentChanges, set[str]]:
        """The changes, and the segments the lead is a member of after them."""
        memberships = {m.segment_id: m for m in session.scalars(_MEMBERSHIPS, {"lead": lead_id})}
        members = {segment_id for segment_id, m in memberships.items() if m.left_at is None}
        changes = evaluate_segments(self.runtime.content.segments.values(), members, facts)
        for segment_id in changes.joined:
            if segment_id in memberships:  # coming back: one row per lead and segment, reopened
                memberships[segment_id].entered_at, memberships[segment_id].left_at = facts.now, None
            else:
                session.add(SegmentMembership(lead_id=lead_id, segment_id=segment_id, entered_at=facts.now))
        for segment_id in changes.left:
            memberships[segment_id].left_at = facts.now
        return changes, (members | set(changes.joined)) - set(changes.left)

    def _enroll(self, session: Session, lead: Lead, entered: list[SegmentEntry], now: datetime) -> None:
        content = self.runtime.content
        for entry in entered:
            sequence = content.sequence_by_segment.get(entry.segment.id)
            if sequence is None or (lead.stage in SALES_STAGES and sequence.exit_when.handed_to_sales):
                continue
            workflow_id = self._new_enrollment_id(session, lead.id, sequence, now)
            if workflow_id is None:
                continue
            insert_ignoring_conflicts(
                session,
                Enrollment,
                [
                    {
                        "workflow_id": workflow_id,
                        "lead_id": lead.id,
                        "sequence_id": sequence.id,
                        "sequence_version": sequence.version,
                        "definition": sequence.model_dump(mode="json"),
                        "status": EnrollmentStatus.RUNNING,
                        "current_step": 0,
                        "started_at": now,
                        "event_id": entry.event.id if entry.event else None,
                    }
                ],
                ["workflow_id"],
            )

    def _new_enrollment_id(
        self, session: Session, lead_id: int, sequence: Sequence, now: datetime
    ) -> str | None:
        """The workflow id of a new enrollment, or None when the re-enrollment rule says no: never twice, or
        not before the cool-down after the previous enrollment ended; never while one is running."""
        previous = session.scalars(
            select(Enrollment)
            .where(Enrollment.lead_id == lead_id, Enrollment.sequence_id == sequence.id)
            .order_by(Enrollment.id.desc())
        ).all()
        first = self.runtime.settings.sequence_workflow_id(sequence.id, lead_id)
        if not previous:
            return first
        latest = previous[0]
        if (
            latest.status == EnrollmentStatus.RUNNING
            or sequence.reenroll == "never"
            or latest.finished_at is None
        ):
            return None
        assert not isinstance(sequence.reenroll, str)
        if latest.finished_at + sequence.reenroll.after > now:
            return None
        return f"{first}-{len(previous) + 1}"

    @staticmethod
    def _pending_handoff(session: Session, lead: Lead) -> int | None:
        """The latest SQL promotion whose salesperson has not been notified yet. Only an SQL lead has one: a
        lead that moved on, to an opportunity or back to nurture, is no longer handed off (and costs no query)."""
        if lead.stage != Stage.SQL:
            return None
        latest = session.scalars(
            select(StageChange.id)
            .where(StageChange.lead_id == lead.id, StageChange.to_stage == Stage.SQL)
            .order_by(StageChange.id.desc())
        ).first()
        if latest is None:
            return None
        notified = session.scalars(
            select(Handoff.id).where(Handoff.stage_change_id == latest, Handoff.notified_at.is_not(None))
        ).first()
        return None if notified else latest

    @activity.defn
    async def hand_off(self, request: HandOffInput) -> HandOffResult:
        """Assign the promoted lead and email the salesperson, once per promotion (see activities.handoff)."""
        return await HandoffActivities(self.runtime).hand_off(request)


def _earliest(*moments: datetime | None) -> datetime | None:
    return min((moment for moment in moments if moment is not None), default=None)
