"""Hand-off to sales: who gets the lead (account owner, else the assignment rules of `sales.yaml` and then
round-robin kept in the store), what the salesperson reads, the follow-up (remind, escalate, reassign) and
how sales answers (accept, reject, recycle, converted). Every step is recorded in `handoff_events`.

Modules: `assignment` (who gets the lead, reassignment, the record), `notifier` (the salesperson notified at
once, reminded, escalated: SalesNotifier), `briefing` (what the salesperson reads: the context, the Slack and
CRM payloads), `closing` (the follow-up told that sales answered), `answers` (sales' answer, the hand-off
document) and `routes` (POST /v1/leads/{ref}/handoff).
"""
