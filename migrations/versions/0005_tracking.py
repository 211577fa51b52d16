"""website tracking: identity merges (tombstoned anonymous leads) and first/last-touch source

Revision ID: 0005_tracking
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import leadflow.platform.store.models

revision = "0005_tracking"
down_revision = "0002_scoring"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("merged_into_id", ID, nullable=True))
        batch_op.add_column(sa.Column("first_touch", JSON, nullable=True))
        batch_op.add_column(sa.Column("last_touch", JSON, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_leads_merged_into_id_leads"),
            "leads",
            ["merged_into_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_leads_merged_into_id"), ["merged_into_id"], unique=False)

    op.create_table(
        "lead_merges",
        sa.Column("merged_lead_id", ID, nullable=False),
        sa.Column("into_lead_id", ID, nullable=False),
        sa.Column("anonymous_id", sa.String(length=200), nullable=False),
        sa.Column("events_moved", sa.Integer(), nullable=False),
        sa.Column("merged_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["into_lead_id"], ["leads.id"], name=op.f("fk_lead_merges_into_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["merged_lead_id"],
            ["leads.id"],
            name=op.f("fk_lead_merges_merged_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("merged_lead_id", name=op.f("pk_lead_merges")),
    )
    with op.batch_alter_table("lead_merges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lead_merges_into_lead_id"), ["into_lead_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lead_merges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lead_merges_into_lead_id"))
    op.drop_table("lead_merges")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leads_merged_into_id"))
        batch_op.drop_constraint(batch_op.f("fk_leads_merged_into_id_leads"), type_="foreignkey")
        batch_op.drop_column("last_touch")
        batch_op.drop_column("first_touch")
        batch_op.drop_column("merged_into_id")
