"""api keys: server-side API keys kept only as a keyed hash, with their name and use; inbound messages:
the provider ids of webhook messages already acted on (a replay is acted on once)

Revision ID: 0008_api_keys
Revises: 0010_enrollment_event
"""

import sqlalchemy as sa
from alembic import op

import leadflow.platform.store.models

revision = "0008_api_keys"
down_revision = "0010_enrollment_event"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", leadflow.platform.store.models.UTCDateTime(), nullable=True),
        sa.Column("last_used_at", leadflow.platform.store.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("digest", name=op.f("uq_api_keys_digest")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
    )

    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", leadflow.platform.store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint("provider_id", name=op.f("uq_inbound_messages_provider_id")),
    )


def downgrade() -> None:
    op.drop_table("inbound_messages")
    op.drop_table("api_keys")
