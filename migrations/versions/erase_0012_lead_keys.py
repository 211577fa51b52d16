"""lead keys: a data key per lead encrypts its payloads in Temporal's histories; an erase deletes it

Suppression hashes become keyed (HMAC-SHA256 under LEADFLOW_SECRET_KEY) from now on. The plain SHA-256
hashes already stored cannot be recomputed (the addresses are gone): they are kept, and still matched
(leadflow.messaging.consent), until the address is seen again and its row is re-keyed.

Revision ID: erase_0012_lead_keys
Revises: identity_0012_forged_event_ids
"""

import sqlalchemy as sa
from alembic import op

revision = "erase_0012_lead_keys"
down_revision = "identity_0012_forged_event_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lead_keys",
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_lead_keys_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_lead_keys")),
    )


def downgrade() -> None:
    op.drop_table("lead_keys")
