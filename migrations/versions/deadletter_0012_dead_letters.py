"""dead letters: outbox rows that can never be delivered to Temporal, set aside so every other event flows

Revision ID: deadletter_0012
Revises: erase_0012_lead_keys
"""

import sqlalchemy as sa
from alembic import op

import leadflow.platform.store.models

revision = "deadletter_0012"
down_revision = "erase_0012_lead_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "dead_letters",
        sa.Column("id", big_id, nullable=False),
        sa.Column("lead_id", big_id, nullable=False),
        sa.Column("event_id", big_id, nullable=False),
        sa.Column("created_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("set_aside_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(op.f("ix_dead_letters_lead_id"), "dead_letters", ["lead_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_dead_letters_lead_id"), table_name="dead_letters")
    op.drop_table("dead_letters")
