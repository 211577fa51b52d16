"""workflow timers: when each lead's workflow wakes by itself, so the router can leave inert events in the store

Revision ID: routing_0013_workflow_timers
Revises: deadletter_0012
"""

import sqlalchemy as sa
from alembic import op

import leadflow.platform.store.models

revision = "routing_0013_workflow_timers"
down_revision = "deadletter_0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "workflow_timers",
        sa.Column("lead_id", big_id, nullable=False),
        sa.Column("rescore_at", leadflow.platform.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_workflow_timers_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_workflow_timers")),
    )


def downgrade() -> None:
    op.drop_table("workflow_timers")
