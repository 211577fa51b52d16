"""The lead workflow: one per lead, serializes everything about it.

Events arrive as signals (from the outbox router), queue up, and are handled in bursts: one rescore for
everything that arrived together. It starts the sequence of each newly entered segment, forwards events to
running sequences (goals), hands the lead to sales once per promotion, and continues as new before its
history grows too long.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.leads import LeadActivities
    from leadflow.contracts import (
        AssessLeadInput,
        EnrollmentFinished,
        EventRef,
        HandOffInput,
        LeadWorkflowInput,
        NewEvents,
        SequenceInput,
    )
    from workflows.sequence import SequenceWorkflow

MERGED_SEQUENCES_GRACE = timedelta(
    hours=1
)  # how long a merged lead's workflow waits for its sequences to exit
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
    def sequence_finished(self, finished: EnrollmentFinished) -> None:
        if finished.workflow_id in self.state.running_sequences:
            self.state.running_sequences.remove(finished.workflow_id)

    @workflow.query
    def running_sequences(self) -> list[str]:
        return list(self.state.running_sequences)

    @workflow.run
    async def run(self, state: LeadWorkflowInput) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self.state.pending) or self._should_continue_as_new())
            if self.state.pending:
                burst, self.state.pending = self.state.pending, []
                await self._handle(burst)
            if self.state.merged_into is not None:
                await self._wind_down()
                return
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self.state)

    def _should_continue_as_new(self) -> bool:
        return not self.state.pending and workflow.info().is_continue_as_new_suggested()

    async def _handle(self, burst: list[EventRef]) -> None:
        event_ids = [event.event_id for event in burst]
        self.state.recent_event_ids = (self.state.recent_event_ids + event_ids)[-RECENT_EVENTS_REMEMBERED:]
        already_running = list(self.state.running_sequences)
        assessment = await workflow.execute_activity_method(
            LeadActivities.assess_lead,
            AssessLeadInput(self.state.lead_id, event_ids, already_running),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY,
        )
        if assessment.merged_into is not None:
            # The lead's events now belong to the survivor, whose own workflow acts on them. This one only
            # stops what it started. (Histories before merges existed never get here: no patch needed.)
            self.state.merged_into = assessment.merged_into
            reason = f"merged into lead {assessment.merged_into}"
            await self._tell_sequences("exit", reason, list(self.state.running_sequences))
            return
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
        await self._tell_sequences("lead_events", NewEvents(burst), already_running)
        if assessment.handoff_stage_change_id is not None:
            await self._tell_sequences("exit", "handed to sales", list(self.state.running_sequences))
            try:
                await workflow.execute_activity_method(
                    LeadActivities.hand_off,
                    HandOffInput(self.state.lead_id, assessment.handoff_stage_change_id),
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=ACTIVITY_RETRY,
                )
            except ActivityError as error:
                # Permanent (no salesperson, a broken template): the hand-off stays pending in the store and
                # is tried again on the lead's next event; the lead workflow itself must live on.
                workflow.logger.error("hand-off of lead %s failed: %s", self.state.lead_id, error.cause)

    async def _wind_down(self) -> None:
        """A merged lead's workflow ends once its sequences have exited (they report back), or after a grace
        period: a sequence finishing later signals a closed workflow, which is harmless."""
        try:
            await workflow.wait_condition(
                lambda: not self.state.running_sequences, timeout=MERGED_SEQUENCES_GRACE
            )
        except TimeoutError:
            workflow.logger.warning("lead %s: sequences still running after merge", self.state.lead_id)
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _tell_sequences(self, signal: str, argument: object, workflow_ids: list[str]) -> None:
        for workflow_id in workflow_ids:
            try:
                await workflow.get_external_workflow_handle(workflow_id).signal(signal, argument)
            except Exception:
                workflow.logger.debug("sequence %s no longer running", workflow_id)
