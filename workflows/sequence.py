"""The sequence workflow: interprets the snapshot of a sequence taken at enrollment, one branch per step kind."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.sending import SendActivities
    from leadflow.content.models import SendStep, WaitStep
    from leadflow.contracts import (
        HANDED_TO_SALES,
        EnrollmentFinished,
        NewEvents,
        SendInput,
        SequenceInput,
        StepReached,
    )
    from leadflow.segmentation import trigger_matches

SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=30),
    non_retryable_error_types=["TemplateRenderError"],
)
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)

COMPLETED, CONVERTED, EXITED = "completed", "converted", "exited"


@workflow.defn
class SequenceWorkflow:
    @workflow.init
    def __init__(self, request: SequenceInput) -> None:
        self.request = request
        self.step = 0
        self.outcome: tuple[str, str] | None = None  # (status, reason) once the lead must leave

    @workflow.signal
    def lead_events(self, batch: NewEvents) -> None:
        goal = self.request.sequence.goal
        if goal and self.outcome is None:
            for event in batch.events:
                if trigger_matches(goal, event.type, event.properties):
                    self.outcome = (CONVERTED, f"goal {goal.event} reached")
                    return

    @workflow.signal
    def exit(self, reason: str) -> None:
        if reason == HANDED_TO_SALES and self.request.sequence.continue_after_handoff:
            return  # this sequence keeps nurturing leads sales is working
        if self.outcome is None:
            self.outcome = (EXITED, reason)

    @workflow.query
    def current_step(self) -> int:
        return self.step

    @workflow.run
    async def run(self, request: SequenceInput) -> str:
        workflow_id = workflow.info().workflow_id
        for index, step in enumerate(request.sequence.steps):
            if self.outcome:
                break
            self.step = index
            await workflow.execute_activity_method(
                SendActivities.record_step,
                StepReached(workflow_id, index),
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            )
            if isinstance(step, SendStep):
                await self._send(workflow_id, index, step)
            elif isinstance(step, WaitStep):
                await self._wait(step)
        status, reason = self.outcome or (COMPLETED, "")
        await workflow.execute_activity_method(
            SendActivities.finish_enrollment,
            EnrollmentFinished(workflow_id, status, reason),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
        )
        parent = workflow.info().parent
        if parent:
            # The lead workflow may have continued as new: address its latest run, not the one that started us.
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                "sequence_finished", EnrollmentFinished(workflow_id, status, reason)
            )
        return status

    async def _send(self, workflow_id: str, index: int, step: SendStep) -> None:
        result = await workflow.execute_activity_method(
            SendActivities.send_message,
            SendInput(
                lead_id=self.request.lead_id,
                idempotency_key=f"{workflow_id}:step-{index}",
                channel=step.send.channel,
                template=step.send.template,
                sequence_id=self.request.sequence.id,
                step=index,
            ),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=SEND_RETRY,
        )
        if result.status == "suppressed" and self.outcome is None:
            self.outcome = (EXITED, "opted out")
        elif result.status == "bounced" and self.outcome is None:
            self.outcome = (EXITED, "email bounced")

    async def _wait(self, step: WaitStep) -> None:
        try:
            await workflow.wait_condition(lambda: self.outcome is not None, timeout=step.wait)
        except TimeoutError:
            pass  # the wait ran its full length: on to the next step
