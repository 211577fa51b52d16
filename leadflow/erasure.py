"""Erasing a lead on request (GDPR): everything about the person goes, except a hash of each address on the
suppression list, so they are never messaged again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from leadflow import consent
from leadflow.settings import CHANNELS, Settings
from leadflow.store import Database
from leadflow.store.models import Enrollment, Lead, Message, Outbox, StageChange

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Erasure:
    lead_id: int
    workflow_ids: list[str]
    addresses_suppressed: int


def erase_lead(db: Database, settings: Settings, lead_id: int, now: datetime) -> Erasure | None:
    """Delete the lead with its events, messages, scores, stages, consents, subscriptions and identities
    (foreign keys cascade), the hand-off notifications about it, and its events still waiting to be routed.
    Returns the workflows to cancel, or None when there is no such lead."""
    with db.transaction() as session:
        lead = session.scalars(select(Lead).where(Lead.id == lead_id).with_for_update()).first()
        if lead is None:
            return None
        suppressed = 0
        for channel in CHANNELS:
            for address in consent.addresses(session, lead, channel):
                consent.suppress(session, channel, address, "erased", None, now)
                suppressed += 1
        sequences = list(session.scalars(select(Enrollment.workflow_id).where(Enrollment.lead_id == lead_id)))
        promotions = list(session.scalars(select(StageChange.id).where(StageChange.lead_id == lead_id)))
        # A salesperson's notifications (emails, webhooks, reminders) name the lead but are not linked to it
        # (they went to staff): keyed `handoff-<stage change>-...`.
        for stage_change_id in promotions:
            session.execute(
                delete(Message).where(Message.idempotency_key.startswith(f"handoff-{stage_change_id}-"))
            )
        session.execute(delete(Outbox).where(Outbox.lead_id == lead_id))
        session.execute(delete(Lead).where(Lead.id == lead_id))
    follow_ups = [settings.handoff_workflow_id(stage_change_id) for stage_change_id in promotions]
    return Erasure(lead_id, [settings.lead_workflow_id(lead_id), *sequences, *follow_ups], suppressed)


async def cancel_workflows(client: Client, workflow_ids: list[str]) -> int:
    """Cancel what still runs for an erased lead; returns how many were running. Should Temporal be down,
    the workflows find the lead gone at their next step (a send is suppressed, a rescore does nothing)."""
    cancelled = 0
    for workflow_id in workflow_ids:
        try:
            await client.get_workflow_handle(workflow_id).cancel()
            cancelled += 1
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                log.warning("could not cancel %s of an erased lead: %s", workflow_id, error)
    return cancelled
