"""Activities of the hand-off, thin adapters over leadflow.handoff.notifier: assign, email and call the webhooks
at once (`hand_off`, run by the lead workflow through LeadActivities), then the hand-off workflow's webhook
retries, reminder and escalation. Here a hand-off's failure becomes the activity's: retried when temporary (a
provider down), at once final when not (nobody to assign, a broken template)."""

from __future__ import annotations

from temporalio import activity

from leadflow.contracts import FollowUpResult, FollowUpStep, HandOffInput, HandOffResult, WebhookNotice
from leadflow.handoff.notifier import SalesNotifier
from leadflow.platform.errors import LeadflowError, activity_failure
from leadflow.platform.runtime import Runtime


class HandoffActivities:
    def __init__(self, runtime: Runtime) -> None:
        self.notifier = SalesNotifier(runtime)

    async def hand_off(self, request: HandOffInput) -> HandOffResult:
        """Assign the promoted lead and notify the salesperson (email and webhooks), once per promotion; the
        webhooks' retries and the follow-up SLA go to the hand-off workflow."""
        try:
            return await self.notifier.hand_off(request)
        except LeadflowError as error:
            raise activity_failure(error) from error

    @activity.defn
    async def notify_webhook(self, notice: WebhookNotice) -> str:
        """POST the signed notification to one webhook, once per key; a temporary failure is retried with
        backoff by the hand-off workflow's retry policy."""
        try:
            return await self.notifier.notify_webhook(notice)
        except LeadflowError as error:
            raise activity_failure(error) from error

    @activity.defn
    async def remind(self, step: FollowUpStep) -> FollowUpResult:
        """The salesperson has not accepted in time: remind them on every channel (once per round)."""
        try:
            return await self.notifier.remind(step)
        except LeadflowError as error:
            raise activity_failure(error) from error

    @activity.defn
    async def escalate(self, step: FollowUpStep) -> FollowUpResult:
        """Still not accepted: reassign (when allowed) and tell the escalation contact of `sales.yaml`."""
        try:
            return await self.notifier.escalate(step)
        except LeadflowError as error:
            raise activity_failure(error) from error
