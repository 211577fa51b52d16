"""scoring states: each lead's events folded into a bounded summary, so an assessment costs the same whatever
the lead's history (leadflow.scoring.state); events indexed by lead and id, to read those after the state's

No data is migrated: a lead without a state gets one built from its events at its next assessment.

Revision ID: scoring_0013_scoring_states
Revises: routing_0013_workflow_timers
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "scoring_0013_scoring_states"
down_revision = "routing_0013_workflow_timers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "scoring_states",
        sa.Column("lead_id", big_id, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_scoring_states_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_scoring_states")),
    )
    op.create_index("ix_events_lead_id", "events", ["lead_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_events_lead_id", table_name="events")
    op.drop_table("scoring_states")
