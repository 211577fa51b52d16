"""The lead workflow: one per lead, serializes everything about it.

Events arrive as signals (from the outbox router), queue up, and are handled in bursts: one rescore for
everything that arrived together. It starts the sequence of each newly entered segment, forwards events to
running sequences (goals, branches), tells them when the lead left a segment or was handed to sales, hands
the lead to sales once per promotion, and continues as new before its history grows too long.

Two kinds of durable timers, never polling or cron: absence rules ("form started, not submitted within
30 minutes") close a window, and a quiet lead cools down (the rescore says when its score or temperature
next moves). The workflow sleeps until the nearer of the two unless an event comes first.
"""

# No `from __future__ import annotations` here: the sandbox re-imports this module for every workflow it
# loads, and each string annotation would then cost a compile() when the workflow's signatures are read.

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

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
        HandoffFollowUp,
        HandOffInput,
        LeadWorkflowInput,
        NewEvents,
        SequenceInput,
    )
    from leadflow.platform.clock import on_the_minute
    from workflows.handoff import HandoffWorkflow
    from workflows.sequence import SequenceWorkflow

COOLING_PATCH = "cooling-timer-and-account-signal"  # histories recorded before it have neither
HANDOFF_FOLLOW_UP_PATCH = "handoff-webhooks-and-sla"  # before it: the hand-off was the email alone
# Assessing and handing off run as local activities: no trip through the server's task queues, so a burst
# of events costs the server half the work and the salesperson hears of a hot lead sooner.
LOCAL_ACTIVITIES_PATCH = "assess-and-hand-off-as-local-activities"
MIN_COOLING = timedelta(seconds=1)  # a moment already past is rescored now, never in a tight loop
MERGED_SEQUENCES_GRACE = timedelta(hours=1)  # how long a merged lead's workflow waits for its sequences
RECENT_EVENTS_REMEMBERED = 200  # the router may deliver an event twice after a crash; drop repeats
ACTIVITY_TIMEOUT = timedelta(seconds=60)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=30)
)


In = TypeVar("In")
Out = TypeVar("Out")


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
            await self._wait_for_work()
            closed = self._closed_windows()
            if self.state.pending or self.state.rescore_requested or closed:
                burst, self.state.pending = self.state.pending, []
                self.state.rescore_requested = False
                await self._handle(burst, closed)
            if self.state.merged_into is not None:
                await self._wind_down()
                return
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self.state)

    def _has_work(self) -> bool:
        return bool(self.state.pending) or self.state.rescore_requested or self._should_continue_as_new()

    async def _wait_for_work(self) -> None:
        """Until an event, a closing absence window or the cooling moment, whichever comes first. With no
        timer due this issues exactly the commands older histories recorded (no timer, or one kind alone)."""
        cooling = self._until_cooling()
        window = self._until_window_closes()
        if window is not None and window <= timedelta(0):
            return  # a window already closed: decide it now
        timeouts = [delay for delay in (cooling, window) if delay is not None]
        try:
            await workflow.wait_condition(self._has_work, timeout=min(timeouts) if timeouts else None)
        except TimeoutError:
            due = self.state.next_rescore_at
            if due is not None and due <= workflow.now():
                self.state.rescore_requested = True  # the lead went quiet: its score moves on anyway

    def _until_window_closes(self) -> timedelta | None:
        if not self.state.absence_timers:
            return None
        # On the minute, like the sequences' waits: windows closing in the same minute are decided together.
        closes = on_the_minute(min(timer.closes_at for timer in self.state.absence_timers))
        return closes - workflow.now()

    def _closed_windows(self) -> list[int]:
        now: datetime = workflow.now()
        closed = [timer.event_id for timer in self.state.absence_timers if timer.closes_at <= now]
        self.state.absence_timers = [timer for timer in self.state.absence_timers if timer.closes_at > now]
        return sorted(set(closed))

    def _remember_windows(self, timers: list[AbsenceTimer]) -> None:
        known = {(timer.event_id, timer.closes_at) for timer in self.state.absence_timers}
        self.state.absence_timers += [t for t in timers if (t.event_id, t.closes_at) not in known]

    def _until_cooling(self) -> timedelta | None:
        if self.state.next_rescore_at is None or not workflow.patched(COOLING_PATCH):
            return None
        return max(self.state.next_rescore_at - workflow.now(), MIN_COOLING)

    def _should_continue_as_new(self) -> bool:
        return not self.state.pending and workflow.info().is_continue_as_new_suggested()

    async def _handle(self, burst: list[EventRef], closed_windows: list[int]) -> None:
        event_ids = [event.event_id for event in burst]
        self.state.recent_event_ids = (self.state.recent_event_ids + event_ids)[-RECENT_EVENTS_REMEMBERED:]
        already_running = list(self.state.running_sequences)
        assessment = await self._activity(
            LeadActivities.assess_lead,
            AssessLeadInput(
                self.state.lead_id,
                event_ids,
                already_running,
                closed_windows=closed_windows,
                as_of=workflow.now(),
                event_types=sorted({event.type for event in burst}),
                stage=self.state.stage,
            ),
        )
        self.state.stage = assessment.stage
        if assessment.merged_into is not None:
            # The lead's events now belong to the survivor, whose own workflow acts on them. This one only
            # stops what it started. (Histories before merges existed never get here: no patch needed.)
            self.state.merged_into = assessment.merged_into
            reason = f"merged into lead {assessment.merged_into}"
            await self._signal_each(SequenceWorkflow.exit, reason, list(self.state.running_sequences))
            return
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
        self.state.next_rescore_at = assessment.next_rescore_at
        if assessment.rescore_lead_workflows and workflow.patched(COOLING_PATCH):
            await self._signal_each(
                LeadWorkflow.rescore, "the account became hot", assessment.rescore_lead_workflows
            )
        if burst:
            await self._signal_each(SequenceWorkflow.lead_events, NewEvents(burst), already_running)
        if assessment.left_segments:
            await self._signal_each(SequenceWorkflow.segments_left, assessment.left_segments, already_running)
        if assessment.handoff_stage_change_id is not None:
            await self._signal_each(
                SequenceWorkflow.exit, HANDED_TO_SALES, list(self.state.running_sequences)
            )
            try:
                handed = await self._activity(
                    LeadActivities.hand_off,
                    HandOffInput(self.state.lead_id, assessment.handoff_stage_change_id),
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

    async def _activity(self, activity: Callable[[Any, In], Awaitable[Out]], argument: In) -> Out:
        """One of the lead's activities: local since LOCAL_ACTIVITIES_PATCH, scheduled through the server
        in histories recorded before it (the patch decision is made once per run and remembered)."""
        if workflow.patched(LOCAL_ACTIVITIES_PATCH):
            return await workflow.execute_local_activity_method(
                activity, argument, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY
            )
        return await workflow.execute_activity_method(
            activity, argument, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY
        )

    async def _signal_each(
        self, signal: Callable[..., Any], argument: object, workflow_ids: list[str]
    ) -> None:
        """`signal` (a signal method of the workflows) to each workflow still running."""
        for workflow_id in workflow_ids:
            try:
                await workflow.get_external_workflow_handle(workflow_id).signal(signal, argument)
            except Exception:
                workflow.logger.debug("workflow %s no longer running", workflow_id)
