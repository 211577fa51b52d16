"""enrollment event: the event that made the lead enter the sequence's segment (templates read it as `event`)

Revision ID: 0010_enrollment_event
Revises: 0011_router_lease
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_enrollment_event"
down_revision = "0011_router_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_enrollments_event_id_events"), "events", ["event_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_index(batch_op.f("ix_enrollments_event_id"), ["event_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollments_event_id"))
        batch_op.drop_constraint(batch_op.f("fk_enrollments_event_id_events"), type_="foreignkey")
        batch_op.drop_column("event_id")
