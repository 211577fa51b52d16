"""The hand-off workflow: one per hand-off (started by the lead workflow once the salesperson is emailed).

It makes sure the salesperson's webhooks arrive (the hand-off tried each once already; one that failed is
retried here with backoff on its own, so one that is down holds up nothing else) and keeps the follow-up SLA durably: not accepted within `remind_after`, a reminder; not
within `escalate_after`, an escalation (reassigned to the next salesperson when allowed, whose own SLA then
starts). Sales' answer (`POST /v1/leads/{id}/handoff`) signals `closed`, which stops the timers; the
activities read the hand-off's status in the store too, so an answer whose signal was lost still counts.
"""

# No `from __future__ import annotations` here: the sandbox re-imports this module for every workflow it
# loads, and each string annotation would then cost a compile() when the workflow's signatures are read.

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.handoff import HandoffActivities
    from leadflow.contracts import FollowUpResult, FollowUpStep, HandoffFollowUp, WebhookNotice

WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
)
WEBHOOK_GIVE_UP_AFTER = timedelta(days=1)
STEP_TIMEOUT = timedelta(minutes=2)
STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))


@workflow.defn
class HandoffWorkflow:
    @workflow.init
    def __init__(self, follow_up: HandoffFollowUp) -> None:
        self.follow_up = follow_up
        self.outcome: str | None = None
        self.calls: list[asyncio.Task[None]] = []

    @workflow.signal
    def closed(self, outcome: str) -> None:
        """Sales accepted, converted, rejected or recycled the lead: no reminder, no escalation."""
        self.outcome = outcome

    @workflow.query
    def status(self) -> str:
        return self.outcome or "waiting"

    @workflow.run
    async def run(self, follow_up: HandoffFollowUp) -> str:
        self._call(follow_up.webhooks)
        handoff_id, reassignments = follow_up.handoff_id, 0
        while follow_up.remind_after is not None and await self._still_waiting(follow_up.remind_after):
            reminded = await workflow.execute_activity_method(
                HandoffActivities.remind,
                FollowUpStep(handoff_id, reassignments),
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
            if not self._carry_on(reminded) or follow_up.escalate_after is None:
                break
            if not await self._still_waiting(follow_up.escalate_after - follow_up.remind_after):
                break
            escalated = await workflow.execute_activity_method(
                HandoffActivities.escalate,
                FollowUpStep(handoff_id, reassignments, reassignments < follow_up.max_reassignments),
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
            if not self._carry_on(escalated) or not escalated.reassigned:
                break
            reassignments += 1  # the new salesperson's own SLA starts now
        await asyncio.gather(*self.calls)
        return self.outcome or "follow-up done"

    async def _still_waiting(self, period: timedelta) -> bool:
        """Waits `period` unless sales answers first; True when nobody answered."""
        try:
            await workflow.wait_condition(lambda: self.outcome is not None, timeout=period)
        except TimeoutError:
            return True
        return False

    def _carry_on(self, result: FollowUpResult) -> bool:
        """Whether the hand-off still waits for sales (the store said so), after calling its webhooks."""
        if not result.open:
            self.outcome = self.outcome or result.status  # the answer's signal may have come too early
            return False
        self._call(result.webhooks)
        return True

    def _call(self, notices: list[WebhookNotice]) -> None:
        self.calls.extend(asyncio.create_task(self._notify(notice)) for notice in notices)

    async def _notify(self, notice: WebhookNotice) -> None:
        try:
            await workflow.execute_activity_method(
                HandoffActivities.notify_webhook,
                notice,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=WEBHOOK_GIVE_UP_AFTER,
                retry_policy=WEBHOOK_RETRY,
            )
        except ActivityError as error:
            # Down for a whole day, or refused for good: the store keeps the message as deferred/bounced.
            workflow.logger.error("webhook %s gave up: %s", notice.target.url, error.cause)
