"""The lead workflow: one per lead, serializes everything about it.

Events arrive as signals (from the outbox router), queue up, and are handled in bursts: one rescore for
everything that arrived together. It starts the sequence of each newly entered segment, forwards events to
running sequences (goals, branches), tells them when the lead left a segment or was handed to sales, hands
the lead to sales once per promotion, and continues as new before its history grows too long. Absence rules
("form started, not submitted within 30 minutes") are decided by a durable timer here, never by polling.
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
        AbsenceTimer,
        AssessLeadInput,
        EnrollmentFinished,
        EventRef,
        HandOffInput,
        LeadWorkflowInput,
        NewEvents,
        SequenceInput,
    )
    from workflows.sequence import SequenceWorkflow, on_the_minute

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
            await self._wait_for_events_or_a_closing_window()
            closed = self._closed_windows()
            if self.state.pending or closed:
                burst, self.state.pending = self.state.pending, []
                await self._handle(burst, closed)
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self.state)

    def _should_continue_as_new(self) -> bool:
        return not self.state.pending and workflow.info().is_continue_as_new_suggested()

    async def _wait_for_events_or_a_closing_window(self) -> None:
        def ready() -> bool:
            return bool(self.state.pending) or self._should_continue_as_new()

        if not self.state.absence_timers:
            await workflow.wait_condition(
                ready
            )  # no timer: the same commands as before absence rules existed
            return
        # On the minute, like the sequences' waits: windows closing in the same minute are decided together.
        delay = on_the_minute(min(timer.closes_at for timer in self.state.absence_timers)) - workflow.now()
        if delay <= timedelta(0):
            return
        try:
            await workflow.wait_condition(ready, timeout=delay)
        except TimeoutError:
            pass  # a window closed: the segments are asked again without new events

    def _closed_windows(self) -> list[int]:
        now: datetime = workflow.now()
        closed = [timer.event_id for timer in self.state.absence_timers if timer.closes_at <= now]
        self.state.absence_timers = [timer for timer in self.state.absence_timers if timer.closes_at > now]
        return sorted(set(closed))

    async def _handle(self, burst: list[EventRef], closed_windows: list[int] | None = None) -> None:
        event_ids = [event.event_id for event in burst]
        self.state.recent_event_ids = (self.state.recent_event_ids + event_ids)[-RECENT_EVENTS_REMEMBERED:]
        already_running = list(self.state.running_sequences)
        assessment = await workflow.execute_activity_method(
            LeadActivities.assess_lead,
            AssessLeadInput(
                self.state.lead_id,
                event_ids,
                already_running,
                closed_windows=closed_windows or [],
                as_of=workflow.now(),
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY,
        )
        self._remember_windows(assessment.absence_timers)
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
        if burst:
            await self._tell_sequences("lead_events", NewEvents(burst), already_running)
        if assessment.left_segments:
            await self._tell_sequences("segments_left", assessment.left_segments, already_running)
        if assessment.handoff_stage_change_id is not None:
            await self._tell_sequences("exit", HANDED_TO_SALES, list(self.state.running_sequences))
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

    def _remember_windows(self, timers: list[AbsenceTimer]) -> None:
        known = {(timer.event_id, timer.closes_at) for timer in self.state.absence_timers}
        self.state.absence_timers += [t for t in timers if (t.event_id, t.closes_at) not in known]

    async def _tell_sequences(self, signal: str, argument: object, workflow_ids: list[str]) -> None:
        for workflow_id in workflow_ids:
            try:
                await workflow.get_external_workflow_handle(workflow_id).signal(signal, argument)
            except Exception:
                workflow.logger.debug("sequence %s no longer running", workflow_id)
