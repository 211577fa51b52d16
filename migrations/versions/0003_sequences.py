"""sequences: the enrollment journal (steps reached, branches taken, A/B variants drawn)

Revision ID: 0003_sequences
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import leadflow.platform.store.models

revision = "0003_sequences"
down_revision = "0005_tracking"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrollment_steps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("step", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_enrollment_steps_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollment_steps")),
    )
    op.create_index(
        "ix_enrollment_steps_workflow_id", "enrollment_steps", ["workflow_id", "id"], unique=False
    )
    op.create_index(op.f("ix_enrollment_steps_lead_id"), "enrollment_steps", ["lead_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_enrollment_steps_lead_id"), table_name="enrollment_steps")
    op.drop_index("ix_enrollment_steps_workflow_id", table_name="enrollment_steps")
    op.drop_table("enrollment_steps")
