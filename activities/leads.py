"""Activities for the lead workflow: rescoring with segment entry, and the hand-off to sales."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from leadflow import clock
from leadflow.content.models import Segment, Sequence
from leadflow.content.templates import TemplateRenderError
from leadflow.contracts import AssessLeadInput, AssessLeadResult, HandOffInput, HandOffResult, SequenceStart
from leadflow.delivery import Claim
from leadflow.handoff import NOTIFICATION_TEMPLATE, NoSalespersonAvailable, assign, notification_context
from leadflow.outgoing import send_email
from leadflow.runtime import Runtime
from leadflow.scoring import EventFact, score_lead, stages_reached
from leadflow.segmentation import segments_entered
from leadflow.store.models import (
    Enrollment,
    Event,
    Handoff,
    Lead,
    ScoreSnapshot,
    SegmentMembership,
    StageChange,
)
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
        content, now = self.runtime.content, clock.now()
        with self.runtime.db.transaction() as session:
            lead = session.scalars(select(Lead).where(Lead.id == request.lead_id).with_for_update()).first()
            if lead is None:
                return AssessLeadResult(score=0, stage="erased")
            events = [
                EventFact(e.id, e.type, e.occurred_at, e.properties)
                for e in session.scalars(select(Event).where(Event.lead_id == lead.id))
            ]
            result = score_lead(content.scoring, lead.properties, events, now)
            if events:
                lead.last_activity_at = max(event.occurred_at for event in events)
            previous = session.scalars(
                select(ScoreSnapshot.score)
                .where(ScoreSnapshot.lead_id == lead.id)
                .order_by(ScoreSnapshot.id.desc())
            ).first()
            if previous is None or previous != result.score:
                session.add(
                    ScoreSnapshot(
                        lead_id=lead.id,
                        computed_at=now,
                        score=result.score,
                        fit=result.fit,
                        behavior=result.behavior,
                        breakdown=[c.as_json() for c in result.contributions],
                        model_version=content.scoring.version,
                    )
                )
            lead.score = result.score
            new_stages = []
            for stage in stages_reached(lead.stage, result.score, content.scoring.thresholds):
                threshold = getattr(content.scoring.thresholds, stage)
                session.add(
                    StageChange(
                        lead_id=lead.id,
                        from_stage=lead.stage,
                        to_stage=stage,
                        changed_at=now,
                        reason=f"score {result.score} reached the {stage.upper()} threshold {threshold}",
                        score=result.score,
                    )
                )
                lead.stage = stage
                new_stages.append(stage)
            new_ids = set(request.event_ids)
            entered = segments_entered(content.segments.values(), (e for e in events if e.id in new_ids))
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
                score=result.score,
                stage=lead.stage,
                new_stages=new_stages,
                to_start=to_start,
                handoff_stage_change_id=self._pending_handoff(session, lead.id),
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
        """Assign the promoted lead and notify the salesperson by email, once per promotion."""
        runtime = self.runtime

        def prepare() -> tuple[int, str, dict[str, Any]]:
            with runtime.db.transaction() as session:
                lead = session.get_one(Lead, request.lead_id)
                stage_change = session.get_one(StageChange, request.stage_change_id)
                handoff = assign(session, lead, stage_change, runtime.content.salespeople)
                lead_url = f"{runtime.settings.resolved_public_url}/v1/leads/{lead.id}"
                return handoff.id, handoff.salesperson, notification_context(session, lead, handoff, lead_url)

        try:
            handoff_id, salesperson, context = await asyncio.to_thread(prepare)
        except NoSalespersonAvailable as error:
            raise ApplicationError(str(error), non_retryable=True) from error
        try:
            rendered = runtime.content.templates.render_email(NOTIFICATION_TEMPLATE, context)
        except TemplateRenderError as error:
            raise ApplicationError(str(error), type="TemplateRenderError", non_retryable=True) from error
        claim = Claim(
            f"handoff-{request.stage_change_id}-email",
            None,
            "email",
            NOTIFICATION_TEMPLATE,
            salesperson,
            rendered.subject,
        )
        delivery = await send_email(runtime, claim, rendered)

        def mark_notified() -> None:
            with runtime.db.transaction() as session:
                session.get_one(Handoff, handoff_id).notified_at = clock.now()

        await asyncio.to_thread(mark_notified)
        return HandOffResult(salesperson=salesperson, notified=delivery.status in ("sent", "already_sent"))
