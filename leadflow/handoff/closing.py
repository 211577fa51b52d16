"""Telling a hand-off's follow-up workflow at once that sales answered (accepted, converted, recycled)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from temporalio.client import Client
from temporalio.service import RPCError

from leadflow.platform.runtime import Runtime
from workflows.handoff import HandoffWorkflow

log = logging.getLogger(__name__)


class FollowUpStopper:
    """Signals a hand-off's follow-up workflow that sales answered, so its reminders stop at once. Without a
    Temporal client, or with Temporal down, the follow-up sees the answer in the store at its next timer."""

    def __init__(self, runtime: Runtime, temporal: Callable[[], Awaitable[Client]] | None) -> None:
        self.runtime, self.temporal = runtime, temporal

    async def __call__(self, stage_change_id: int, outcome: str) -> None:
        if self.temporal is None:
            return
        try:
            client = await self.temporal()
        except Exception as error:  # Temporal down: the follow-up sees the answer in the store
            log.warning(
                "hand-off %s %s; its follow-up was not told at once: %s", stage_change_id, outcome, error
            )
            return
        handle = client.get_workflow_handle(self.runtime.settings.handoff_workflow_id(stage_change_id))
        try:
            await handle.signal(HandoffWorkflow.closed, outcome)
        except RPCError:
            pass  # finished already, or a hand-off from before follow-ups: nothing is waiting
