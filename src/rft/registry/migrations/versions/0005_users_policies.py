"""v5: users and roles, per-alias promotion policies (versioned), and who created each job, file and batch
(with the creator's team, for team isolation).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_OWNED = ("jobs", "files", "batches")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("team", sa.String(64)),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("token_hint", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("rotated_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
        sa.Column("revoked_by", sa.String(255)),
    )
    op.create_table(
        "alias_policies",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("policy", sa.JSON, nullable=False),
    )
    for table in _OWNED:
        op.add_column(table, sa.Column("created_by", sa.String(255)))
        op.add_column(table, sa.Column("team", sa.String(64)))


def downgrade() -> None:
    for table in _OWNED:
        with op.batch_alter_table(table) as b:
            b.drop_column("team")
            b.drop_column("created_by")
    op.drop_table("alias_policies")
    op.drop_table("users")
