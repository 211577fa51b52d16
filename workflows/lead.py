"""The lead workflow: one per lead, serializes everything about it.

Events arrive as signals (from the outbox router), queue up, and are handled in bursts: one rescore for
everything that arrived together. It starts the sequence of each newly entered segment, forwards events to
running sequences (goals), hands the lead to sales once per promotion, and continues as new before its
history grows too long. A quiet lead cools down on a durable timer (no cron): the rescore says when its
score or temperature next moves, and the workflow sleeps until then unless an event comes first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.leads import LeadActivities
    from leadflow.contracts import (
        HANDED_TO_SALES,
        AssessLeadInput,
        EnrollmentFinished,
        EventRef,
        HandoffFollowUp,
        HandOffInput,
        LeadWorkflowInput,
        NewEvents,
        SequenceInput,
    )
    from workflows.handoff import HandoffWorkflow
    from workflows.sequence import SequenceWorkflow

COOLING_PATCH = "cooling-timer-and-account-signal"  # histories recorded before it have neither
HANDOFF_FOLLOW_UP_PATCH = "handoff-webhooks-and-sla"  # before it: the hand-off was the email alone
MIN_COOLING = timedelta(seconds=1)  # a moment already past is rescored now, never in a tight loop
RECENT_EVENTS_REMEMBERED = 200  # the router may deliver an event twice after a crash; drop repeats
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=30)
)


@workflow.defn
class LeadWorkflow:
    @workflow.init
    def __init__(self, state: LeadWorkflowInput) -> None:
        self.state = state

    @workflow.signal
    def events(self, batch: NewEvents) -> None:
        known = set(self.state.recent_event_ids) | {event.event_id for event in self.state.pending}
        self.state.pending.extend(event for event in batch.events if event.event_id not in known)

    @workflow.signal
    def rescore(self, reason: str) -> None:
        """Rescore without a new event: a colleague made the account hot, or the scoring model changed."""
        self.state.rescore_requested = True

    @workflow.signal
    def sequence_finished(self, finished: EnrollmentFinished) -> None:
        if finished.workflow_id in self.state.running_sequences:
            self.state.running_sequences.remove(finished.workflow_id)

    @workflow.query
    def running_sequences(self) -> list[str]:
        return list(self.state.running_sequences)

    @workflow.query
    def next_rescore_at(self) -> datetime | None:
        return self.state.next_rescore_at

    @workflow.run
    async def run(self, state: LeadWorkflowInput) -> None:
        while True:
            try:
                await workflow.wait_condition(self._has_work, timeout=self._until_cooling())
            except TimeoutError:
                self.state.rescore_requested = True  # the lead went quiet: its score moves on anyway
            if self.state.pending or self.state.rescore_requested:
                burst, self.state.pending = self.state.pending, []
                self.state.rescore_requested = False
                await self._handle(burst)
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self.state)

    def _has_work(self) -> bool:
        return bool(self.state.pending) or self.state.rescore_requested or self._should_continue_as_new()

    def _until_cooling(self) -> timedelta | None:
        if self.state.next_rescore_at is None or not workflow.patched(COOLING_PATCH):
            return None
        return max(self.state.next_rescore_at - workflow.now(), MIN_COOLING)

    def _should_continue_as_new(self) -> bool:
        return not self.state.pending and workflow.info().is_continue_as_new_suggested()

    async def _handle(self, burst: list[EventRef]) -> None:
        event_ids = [event.event_id for event in burst]
        self.state.recent_event_ids = (self.state.recent_event_ids + event_ids)[-RECENT_EVENTS_REMEMBERED:]
        already_running = list(self.state.running_sequences)
        assessment = await workflow.execute_activity_method(
            LeadActivities.assess_lead,
            AssessLeadInput(self.state.lead_id, event_ids, already_running, as_of=workflow.now()),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY,
        )
        for start in assessment.to_start:
            try:
                await workflow.start_child_workflow(
                    SequenceWorkflow.run,
                    SequenceInput(self.state.lead_id, start.sequence),
                    id=start.workflow_id,
                    parent_close_policy=ParentClosePolicy.ABANDON,
                )
            except WorkflowAlreadyStartedError:
                pass  # started before a crash or continue-as-new: it is running, keep tracking it
            self.state.running_sequences.append(start.workflow_id)
        self.state.next_rescore_at = assessment.next_rescore_at
        if assessment.rescore_lead_workflows and workflow.patched(COOLING_PATCH):
            await self._signal_each("rescore", "the account became hot", assessment.rescore_lead_workflows)
        if burst:
            await self._signal_each("lead_events", NewEvents(burst), already_running)
        if assessment.handoff_stage_change_id is not None:
            await self._signal_each("exit", HANDED_TO_SALES, list(self.state.running_sequences))
            try:
                handed = await workflow.execute_activity_method(
                    LeadActivities.hand_off,
                    HandOffInput(self.state.lead_id, assessment.handoff_stage_change_id),
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=ACTIVITY_RETRY,
                )
            except ActivityError as error:
                # Permanent (no salesperson, a broken template): the hand-off stays pending in the store and
                # is tried again on the lead's next event; the lead workflow itself must live on.
                workflow.logger.error("hand-off of lead %s failed: %s", self.state.lead_id, error.cause)
                return
            if handed.follow_up and workflow.patched(HANDOFF_FOLLOW_UP_PATCH):
                await self._follow_up(handed.follow_up)

    async def _follow_up(self, follow_up: HandoffFollowUp) -> None:
        """Webhooks and the SLA run in their own workflow: a webhook that is down, or days of waiting for
        the salesperson, never hold up this lead's events."""
        try:
            await workflow.start_child_workflow(
                HandoffWorkflow.run,
                follow_up,
                id=follow_up.workflow_id,
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            pass  # started before a crash or continue-as-new

    async def _signal_each(self, signal: str, argument: object, workflow_ids: list[str]) -> None:
        for workflow_id in workflow_ids:
            try:
                await workflow.get_external_workflow_handle(workflow_id).signal(signal, argument)
            except Exception:
                workflow.logger.debug("workflow %s no longer running", workflow_id)
