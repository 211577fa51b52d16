"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 22:59:58.017672
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import leadflow.platform.store.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("created_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("domain", name=op.f("uq_accounts_domain")),
    )
    op.create_table(
        "assignment_cursors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("team", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignment_cursors")),
        sa.UniqueConstraint("team", name=op.f("uq_assignment_cursors_team")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_table(
        "leads",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("created_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("last_activity_at", leadflow.platform.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_leads_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leads")),
        sa.UniqueConstraint("email", name=op.f("uq_leads_email")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sequence_id", sa.String(length=100), nullable=False),
        sa.Column("sequence_version", sa.String(length=64), nullable=False),
        sa.Column(
            "definition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("exit_reason", sa.Text(), nullable=True),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("started_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("finished_at", leadflow.platform.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_enrollments_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint("workflow_id", name=op.f("uq_enrollments_workflow_id")),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollments_lead_id"), ["lead_id"], unique=False)

    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("received_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_events_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("key", name=op.f("uq_events_key")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_lead_time", ["lead_id", "occurred_at"], unique=False)

    op.create_table(
        "identities",
        sa.Column("anonymous_id", sa.String(length=200), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_identities_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("anonymous_id", name=op.f("pk_identities")),
    )
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_identities_lead_id"), ["lead_id"], unique=False)

    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_id", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("sent_at", leadflow.platform.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_messages_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_messages_idempotency_key")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_lead_id"), ["lead_id"], unique=False)

    op.create_table(
        "score_snapshots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("computed_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("fit", sa.Integer(), nullable=False),
        sa.Column("behavior", sa.Integer(), nullable=False),
        sa.Column(
            "breakdown",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_score_snapshots_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score_snapshots")),
    )
    with op.batch_alter_table("score_snapshots", schema=None) as batch_op:
        batch_op.create_index("ix_score_snapshots_lead_time", ["lead_id", "computed_at"], unique=False)

    op.create_table(
        "segment_memberships",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("segment_id", sa.String(length=100), nullable=False),
        sa.Column("entered_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("left_at", leadflow.platform.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_segment_memberships_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_memberships")),
        sa.UniqueConstraint("lead_id", "segment_id", name=op.f("uq_segment_memberships_lead_id_segment_id")),
    )
    op.create_table(
        "stage_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("from_stage", sa.String(length=32), nullable=False),
        sa.Column("to_stage", sa.String(length=32), nullable=False),
        sa.Column("changed_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_stage_changes_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_changes")),
    )
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stage_changes_lead_id"), ["lead_id"], unique=False)

    op.create_table(
        "handoffs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("stage_change_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("salesperson", sa.String(length=320), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("assigned_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("notified_at", leadflow.platform.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_handoffs_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["stage_change_id"],
            ["stage_changes.id"],
            name=op.f("fk_handoffs_stage_change_id_stage_changes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handoffs")),
        sa.UniqueConstraint("stage_change_id", name=op.f("uq_handoffs_stage_change_id")),
    )
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_handoffs_lead_id"), ["lead_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_handoffs_lead_id"))

    op.drop_table("handoffs")
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stage_changes_lead_id"))

    op.drop_table("stage_changes")
    op.drop_table("segment_memberships")
    with op.batch_alter_table("score_snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_score_snapshots_lead_time")

    op.drop_table("score_snapshots")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_lead_id"))

    op.drop_table("messages")
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identities_lead_id"))

    op.drop_table("identities")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_lead_time")

    op.drop_table("events")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollments_lead_id"))

    op.drop_table("enrollments")
    op.drop_table("leads")
    op.drop_table("outbox")
    op.drop_table("assignment_cursors")
    op.drop_table("accounts")
