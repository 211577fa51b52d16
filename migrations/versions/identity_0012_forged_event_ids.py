"""forged event ids: events a client stored under an id leadflow reserves for its own are renamed

Client ids starting with `lf-`, `web:`, `identified:` or `merged:` are now refused (422), so nobody can
store one of leadflow's own ids first and have the real event (an unsubscribe, an open, an SMS STOP)
dropped as its duplicate. Rows stored before that rule keep their ids, so they deduplicate as before;
only those that cannot be leadflow's (the type, or the lead the id names, does not match) move to
`lf-forged-<row id>`, an id leadflow never gives and a client can no longer send, freeing the real one.

Revision ID: identity_0012_forged_event_ids
Revises: 0009_faults
"""

from alembic import op

revision = "identity_0012_forged_event_ids"
down_revision = "0009_faults"
branch_labels = None
depends_on = None

# What each of leadflow's own ids is (leadflow/intake/engagement.py, push.py, api.py, identity.py). `web:` ids are
# random per browser event and carry any type: they cannot be told apart and are left alone.
GENUINE = {
    "lf-open-": "type = 'email_opened' AND EXISTS (SELECT 1 FROM messages m WHERE m.lead_id = events.lead_id"
    " AND events.key = 'lf-open-' || m.id)",
    "lf-click-": "type = 'email_clicked' AND EXISTS (SELECT 1 FROM messages m"
    " WHERE m.lead_id = events.lead_id AND events.key LIKE 'lf-click-' || m.id || '-%')",
    "lf-unsubscribe-": "type = 'unsubscribed' AND key LIKE 'lf-unsubscribe-' || lead_id || '-%'",
    "lf-sms-": "type IN ('unsubscribed', 'subscribed', 'sms_replied') AND key LIKE '%-' || lead_id",
    "lf-push-": "type = 'subscribed'",
    "lf-consent-": "type IN ('unsubscribed', 'subscribed')",
    "identified:": "type = 'identified' AND key LIKE '%:' || lead_id",
    "merged:": "type = 'lead_merged' AND key = 'merged:' || lead_id",
}


def upgrade() -> None:
    for prefix, genuine in GENUINE.items():
        op.execute(
            f"UPDATE events SET key = 'lf-forged-' || id WHERE key LIKE '{prefix}%' AND NOT ({genuine})"
        )
    op.execute(
        "UPDATE events SET key = 'lf-forged-' || id WHERE key LIKE 'lf-%' AND key NOT LIKE 'lf-forged-%' AND "
        + " AND ".join(f"key NOT LIKE '{prefix}%'" for prefix in GENUINE if prefix.startswith("lf-"))
    )


def downgrade() -> None:
    pass  # the forged ids are not kept: the renamed events stay as they are
