"""Hand-off to sales: who gets the lead (account owner, else the assignment rules of `sales.yaml` and then
round-robin kept in the store), what the salesperson reads, the follow-up (remind, escalate, reassign) and
how sales answers (accept, reject, recycle, converted). Every step is recorded in `handoff_events`.

Modules: `assignment` (who gets the lead, reassignment, the record), `notification` (what the salesperson
reads: the context, the Slack and CRM payloads) and `answers` (sales' answer, the hand-off document).
"""
