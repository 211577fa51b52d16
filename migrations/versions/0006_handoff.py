"""hand-off: team, follow-up SLA stamps, outcome; the hand-off event log

Revision ID: 0006_handoff
Revises: 0004_channels
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import leadflow.platform.store.models

revision = "0006_handoff"
down_revision = "0004_channels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team", sa.String(length=100), nullable=True))
        for name in ("reminded_at", "escalated_at", "accepted_at", "closed_at"):
            batch_op.add_column(sa.Column(name, leadflow.platform.store.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("reassignments", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("outcome_reason", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "outcome_details",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    op.create_table(
        "handoff_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("handoff_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("salesperson", sa.String(length=320), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["handoff_id"],
            ["handoffs.id"],
            name=op.f("fk_handoff_events_handoff_id_handoffs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handoff_events")),
    )
    with op.batch_alter_table("handoff_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_handoff_events_handoff_id"), ["handoff_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("handoff_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_handoff_events_handoff_id"))
    op.drop_table("handoff_events")
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        for name in (
            "outcome_details",
            "outcome_reason",
            "reassignments",
            "closed_at",
            "accepted_at",
            "escalated_at",
            "reminded_at",
            "team",
        ):
            batch_op.drop_column(name)
