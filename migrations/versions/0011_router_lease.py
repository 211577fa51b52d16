"""router lease: one outbox router drains at a time, however many worker and API processes run

Revision ID: 0011_router_lease
Revises: 0007_reports
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_router_lease"
down_revision = "0007_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
