"""v3: batch inference jobs (the batch folder stays the durable record; this table mirrors it).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("model", sa.Text),
        sa.Column("input_file", sa.Text),
        sa.Column("output_file", sa.Text),
        sa.Column("error_file", sa.Text),
        sa.Column("request_counts", sa.JSON),
        sa.Column("usage", sa.JSON),
        sa.Column("cost", sa.JSON),
        sa.Column("state", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("batches")
