"""v2: monitor alarms are queried by job and event type; index them.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_type", "events", ["job_id", "type"])


def downgrade() -> None:
    op.drop_index("ix_events_type", table_name="events")
