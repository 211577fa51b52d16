"""reports: indexes the reports and the dashboard read by (cohorts by creation time, stamps by stage and
time, events by type and time, enrollments and hand-offs by start, hot leads by score)

Revision ID: 0007_reports
Revises: 0004_channels
"""

from alembic import op

revision = "0007_reports"
# Chained after the newest migration of this branch so `upgrade head` has one head; the lead re-chains at merge.
down_revision = "0006_handoff"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_leads_created_at": ("leads", ["created_at"]),
    "ix_leads_temperature_score": ("leads", ["temperature", "score"]),
    "ix_stage_changes_to_stage_changed_at": ("stage_changes", ["to_stage", "changed_at"]),
    "ix_events_type_occurred_at": ("events", ["type", "occurred_at"]),
    "ix_enrollments_started_at": ("enrollments", ["started_at"]),
    "ix_handoffs_assigned_at": ("handoffs", ["assigned_at"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
