"""faults: messages.claim_token, the attempt that holds a message's claim, so only that attempt hands it to
the provider or records its outcome (a send whose worker died before the provider had it is sent again)

Revision ID: 0009_faults
Revises: 0008_api_keys
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_faults"
# Chained after the newest migration on main; the lead re-chains at merge.
down_revision = "0008_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("claim_token")
