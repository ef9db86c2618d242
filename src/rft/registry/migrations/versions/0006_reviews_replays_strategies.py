"""v6: human review verdicts on samples (rft review), grader replays (rft replay), and strategy tables
(rft strategies).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_verdicts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("item_key", sa.String(255), nullable=False),  # which sample: "train:<step>:<index>" / "eval:<report>:<index>"
        sa.Column("source", sa.String(16), nullable=False),  # train | eval
        sa.Column("step", sa.Integer),
        sa.Column("grader_sha256", sa.String(64)),  # the grader whose score the reviewer saw
        sa.Column("grader_score", sa.Float),
        sa.Column("human_score", sa.Float, nullable=False),  # 1.0 pass, 0.0 fail, or a score in [0, 1]
        sa.Column("note", sa.Text),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("team", sa.String(64)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("data", sa.JSON),  # what the reviewer was shown (prompt, completion, reference fields)
    )
    op.create_index("ix_review_verdicts_job", "review_verdicts", ["job_id", "created_at"])
    op.create_table(
        "replays",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64)),  # a job's samples were replayed ...
        sa.Column("eval_id", sa.String(64)),  # ... or an evaluation report's items
        sa.Column("old_grader_sha256", sa.String(64), nullable=False),
        sa.Column("new_grader_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(255)),
        sa.Column("team", sa.String(64)),
        sa.Column("path", sa.Text),  # the replay's folder (per-item results)
        sa.Column("summary", sa.JSON, nullable=False),
    )
    op.create_index("ix_replays_job", "replays", ["job_id", "created_at"])
    op.create_table(
        "strategy_tables",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(255)),
        sa.Column("team", sa.String(64)),
        sa.Column("spec_sha256", sa.String(64)),  # the job spec the table was measured for
        sa.Column("path", sa.Text),  # the folder holding the table, the plot and the report
        sa.Column("table", sa.JSON, nullable=False),  # rows, recommendation, the ids of every run it started
    )


def downgrade() -> None:
    op.drop_table("strategy_tables")
    op.drop_index("ix_replays_job", "replays")
    op.drop_table("replays")
    op.drop_index("ix_review_verdicts_job", "review_verdicts")
    op.drop_table("review_verdicts")
