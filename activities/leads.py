"""Activities for the lead workflow: rescoring with segment entry, and the hand-off to sales."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio import activity

from activities.handoff import HandoffActivities
from leadflow import clock
from leadflow.content.models import Segment, Sequence
from leadflow.contracts import AssessLeadInput, AssessLeadResult, HandOffInput, HandOffResult, SequenceStart
from leadflow.qualification import rescore
from leadflow.runtime import Runtime
from leadflow.scoring import EventFact
from leadflow.segmentation import segments_entered
from leadflow.store.models import Enrollment, Event, Handoff, Lead, SegmentMembership, StageChange
from leadflow.store.upsert import insert_ignoring_conflicts

SALES_STAGES = {"sql", "opportunity", "customer"}


class LeadActivities:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @activity.defn
    async def assess_lead(self, request: AssessLeadInput) -> AssessLeadResult:
        """Rescore the lead, stamp the stages it reached, and enroll it in the sequences of new segments."""
        return await asyncio.to_thread(self._assess, request)

    def _assess(self, request: AssessLeadInput) -> AssessLeadResult:
        content, settings = self.runtime.content, self.runtime.settings
        # The later of the two clocks: the workflow's (which the time-skipping server moves) and ours.
        now = max(clock.now(), request.as_of) if request.as_of else clock.now()
        with self.runtime.db.transaction() as session:
            rescored = rescore(session, request.lead_id, content.scoring, now)
            if rescored is None:
                return AssessLeadResult(score=0, stage="erased")
            lead = rescored.lead
            entered = segments_entered(content.segments.values(), _events(session, lead, request.event_ids))
            self._enroll(session, lead, entered, now)
            session.flush()
            to_start = [
                SequenceStart(e.workflow_id, Sequence.model_validate(e.definition))
                for e in session.scalars(
                    select(Enrollment).where(Enrollment.lead_id == lead.id, Enrollment.status == "running")
                )
                if e.workflow_id not in request.started_sequences
            ]
            return AssessLeadResult(
                score=rescored.result.score,
                stage=lead.stage,
                new_stages=[change.to_stage for change in rescored.stage_changes],
                to_start=to_start,
                handoff_stage_change_id=self._pending_handoff(session, lead.id),
                temperature=rescored.result.temperature,
                next_rescore_at=rescored.result.next_change_at,
                rescore_lead_workflows=[settings.lead_workflow_id(i) for i in rescored.colleagues_to_rescore],
            )

    def _enroll(self, session: Session, lead: Lead, entered: list[Segment], now: datetime) -> None:
        content = self.runtime.content
        for segment in entered:
            insert_ignoring_conflicts(
                session,
                SegmentMembership,
                [{"lead_id": lead.id, "segment_id": segment.id, "entered_at": now}],
                ["lead_id", "segment_id"],
            )
            sequence = content.sequence_by_segment.get(segment.id)
            if sequence is None or lead.stage in SALES_STAGES:
                continue
            # Re-enrollment is "never" for now: the workflow id is unique per lead and sequence.
            insert_ignoring_conflicts(
                session,
                Enrollment,
                [
                    {
                        "workflow_id": self.runtime.settings.sequence_workflow_id(sequence.id, lead.id),
                        "lead_id": lead.id,
                        "sequence_id": sequence.id,
                        "sequence_version": sequence.version,
                        "definition": sequence.model_dump(mode="json"),
                        "status": "running",
                        "current_step": 0,
                        "started_at": now,
                    }
                ],
                ["workflow_id"],
            )

    @staticmethod
    def _pending_handoff(session: Session, lead_id: int) -> int | None:
        """The latest SQL promotion whose salesperson has not been notified yet."""
        latest = session.scalars(
            select(StageChange.id)
            .where(StageChange.lead_id == lead_id, StageChange.to_stage == "sql")
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


def _events(session: Session, lead: Lead, event_ids: list[int]) -> list[EventFact]:
    if not event_ids:
        return []
    query = select(Event.id, Event.type, Event.occurred_at, Event.properties).where(
        Event.id.in_(event_ids), Event.lead_id == lead.id
    )
    return [EventFact(*row) for row in session.execute(query)]
