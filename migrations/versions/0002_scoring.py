"""scoring: fit grade, temperature, account heat, recycling, score ledger inputs, rescore runs

Revision ID: 0002_scoring
Revises: 0001
Create Date: 2026-11-24 23:14:05.402404
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import leadflow.platform.store.models

revision = "0002_scoring"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rescore_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("started_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("finished_at", leadflow.platform.store.models.UTCDateTime(), nullable=True),
        sa.Column("last_lead_id", sa.BigInteger(), nullable=False),
        sa.Column("leads_done", sa.Integer(), nullable=False),
        sa.Column("leads_changed_stage", sa.Integer(), nullable=False),
        sa.Column(
            "stage_changes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rescore_runs")),
    )
    with op.batch_alter_table("rescore_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rescore_runs_model_version"), ["model_version"], unique=False)

    op.create_table(
        "scoring_models",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("first_used_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_scoring_models")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("hot_since", leadflow.platform.store.models.UTCDateTime(), nullable=True)
        )

    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grade", sa.String(length=1), server_default="D", nullable=False))
        batch_op.add_column(
            sa.Column("temperature", sa.String(length=8), server_default="cold", nullable=False)
        )
        batch_op.add_column(
            sa.Column("scoring_since", leadflow.platform.store.models.UTCDateTime(), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_leads_account_id"), ["account_id"], unique=False)

    with op.batch_alter_table("score_snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("grade", sa.String(length=1), nullable=True))
        batch_op.add_column(sa.Column("temperature", sa.String(length=8), nullable=True))
        batch_op.add_column(
            sa.Column(
                "inputs",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("score_snapshots", schema=None) as batch_op:
        batch_op.drop_column("inputs")
        batch_op.drop_column("temperature")
        batch_op.drop_column("grade")
        batch_op.drop_column("account")

    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leads_account_id"))
        batch_op.drop_column("scoring_since")
        batch_op.drop_column("temperature")
        batch_op.drop_column("grade")

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("hot_since")

    op.drop_table("scoring_models")
    with op.batch_alter_table("rescore_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rescore_runs_model_version"))

    op.drop_table("rescore_runs")
