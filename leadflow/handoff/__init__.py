"""Hand-off to sales: who gets the lead (account owner, else the assignment rules of `sales.yaml` and then
round-robin kept in the store), what the salesperson reads, the follow-up (remind, escalate, reassign) and
how sales answers (accept, reject, recycle, converted). Every step is recorded in `handoff_events`.

Modules: `assignment` (who gets the lead, reassignment, the record), `notification` (what the salesperson
reads: the context, the Slack and CRM payloads) and `answers` (sales' answer, the hand-off document).
"""

from leadflow.handoff.answers import (
    Action,
    SalesAnswer,
    answer,
    close_open_handoff,
    handoff_document,
    latest_handoff,
)
from leadflow.handoff.assignment import (
    CONVERTED_STAGES,
    NOTIFICATION_TEMPLATE,
    OPEN,
    TIME_FORMAT,
    WAITING,
    Choice,
    HandoffRefused,
    NoSalespersonAvailable,
    assign,
    reassign,
    record,
    salesperson,
)
from leadflow.handoff.notification import crm_payload, notification_context, slack_payload

__all__ = [
    "CONVERTED_STAGES",
    "NOTIFICATION_TEMPLATE",
    "OPEN",
    "TIME_FORMAT",
    "WAITING",
    "Action",
    "Choice",
    "HandoffRefused",
    "NoSalespersonAvailable",
    "SalesAnswer",
    "answer",
    "assign",
    "close_open_handoff",
    "crm_payload",
    "handoff_document",
    "latest_handoff",
    "notification_context",
    "reassign",
    "record",
    "salesperson",
    "slack_payload",
]
