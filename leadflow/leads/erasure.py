"""Erasing a lead on request (GDPR): everything about the person goes, except a keyed hash of each address on
the suppression list, so they are never messaged again. The store overwrites what it deletes (SQLite's
secure_delete, then a checkpoint that truncates the WAL); the lead's data key goes with it, which leaves what
Temporal's histories hold of the person unreadable (leadflow.platform.converter); its workflows are terminated."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from leadflow.messaging import consent
from leadflow.platform.converter import LeadPayloadCodec
from leadflow.platform.settings import CHANNELS, Settings
from leadflow.platform.store import Database
from leadflow.platform.store.models import DeadLetter, Enrollment, Lead, Message, Outbox, StageChange

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Erasure:
    lead_id: int
    workflow_ids: list[str]
    addresses_suppressed: int


def erase_lead(db: Database, settings: Settings, lead_id: int, now: datetime) -> Erasure | None:
    """Delete the lead with its events, messages, scores, stages, consents, subscriptions, identities, the
    leads merged into it and its data key (foreign keys cascade), the hand-off notifications about it, and
    its events still waiting to be routed or set aside as dead letters. Returns the workflows to stop, or
    None when there is no such lead."""
    with db.transaction() as session:
        lead = session.scalars(select(Lead).where(Lead.id == lead_id).with_for_update()).first()
        if lead is None:
            return None
        suppressed = 0
        for channel in CHANNELS:
            for address in consent.addresses(session, lead, channel):
                consent.suppress_erased(session, channel, address, now)
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
        session.execute(delete(DeadLetter).where(DeadLetter.lead_id == lead_id))
        session.execute(delete(Lead).where(Lead.id == lead_id))
    db.checkpoint()
    follow_ups = [settings.handoff_workflow_id(stage_change_id) for stage_change_id in promotions]
    return Erasure(lead_id, [settings.lead_workflow_id(lead_id), *sequences, *follow_ups], suppressed)


async def stop_workflows(client: Client, erasure: Erasure) -> int:
    """Terminate what still runs for an erased lead; returns how many were running. Terminated, not
    cancelled: a cancellation is a workflow task, and the workflow can no longer read its own history (its
    key is gone). Should Temporal be down, each of them fails its next task for that reason, until someone
    terminates it (docs/operations.md)."""
    codec = client.data_converter.payload_codec
    if isinstance(codec, LeadPayloadCodec):
        codec.keys.forget(erasure.lead_id)
    stopped = 0
    for workflow_id in erasure.workflow_ids:
        try:
            await client.get_workflow_handle(workflow_id).terminate(reason="the lead was erased")
            stopped += 1
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                log.warning("could not terminate %s of an erased lead: %s", workflow_id, error)
    return stopped
