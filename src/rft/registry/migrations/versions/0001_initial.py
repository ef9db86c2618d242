"""v1: jobs, events, metrics, datasets, graders, checkpoints, evaluation reports, gate verdicts, approvals,
aliases and their history, and the audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("base_model_sha256", sa.String(64)),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("resolved_config", sa.JSON),
        sa.Column("config_sha256", sa.String(64)),
        sa.Column("training_file", sa.Text),
        sa.Column("training_file_sha256", sa.String(64)),
        sa.Column("validation_file", sa.Text),
        sa.Column("validation_file_sha256", sa.String(64)),
        sa.Column("guard_file", sa.Text),
        sa.Column("guard_file_sha256", sa.String(64)),
        sa.Column("grader_sha256", sa.String(64)),
        sa.Column("code_version", sa.String(128)),
        sa.Column("run_dir", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("host", sa.String(255)),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("total_steps", sa.Integer),
        sa.Column("requested", sa.String(16)),
        sa.Column("error", sa.JSON),
        sa.Column("result", sa.JSON),
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_events_job", "events", ["job_id", "seq"])
    op.create_table(
        "metrics",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_table(
        "datasets",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("rows", sa.Integer),
        sa.Column("first_seen", sa.Float, nullable=False),
    )
    op.create_table(
        "graders",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(64)),
        sa.Column("spec", sa.JSON),
        sa.Column("first_seen", sa.Float, nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("is_final", sa.Boolean, nullable=False),
        sa.Column("val_score", sa.Float),
        sa.Column("val_low", sa.Float),
        sa.Column("val_high", sa.Float),
        sa.Column("eval_report_id", sa.String(64)),
        sa.Column("verdict_id", sa.String(64)),
        sa.Column("approval_status", sa.String(16), nullable=False),
    )
    op.create_index("ix_ckpt_job", "checkpoints", ["job_id", "step"])
    op.create_table(
        "eval_reports",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("checkpoint_id", sa.String(64)),
        sa.Column("model_ref", sa.Text),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data_sha256", sa.String(64)),
        sa.Column("grader_sha256", sa.String(64)),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("path", sa.Text),
    )
    op.create_table(
        "gate_verdicts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("checkpoint_id", sa.String(64), sa.ForeignKey("checkpoints.id"), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("verdict", sa.JSON, nullable=False),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("checkpoint_id", sa.String(64), sa.ForeignKey("checkpoints.id"), nullable=False),
        sa.Column("by", sa.String(255), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("override_reason", sa.Text),
        sa.Column("verdict_id", sa.String(64)),
    )
    op.create_table(
        "aliases",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("checkpoint_id", sa.String(64), sa.ForeignKey("checkpoints.id"), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "alias_history",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("checkpoint_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
    )
    op.create_index("ix_alias_hist", "alias_history", ["name", "seq"])
    op.create_table(
        "audit",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("before", sa.JSON),
        sa.Column("after", sa.JSON),
        sa.Column("verdict_id", sa.String(64)),
        sa.Column("detail", sa.JSON),
    )


def downgrade() -> None:
    for table in ("audit", "alias_history", "aliases", "approvals", "gate_verdicts", "eval_reports", "checkpoints",
                  "graders", "datasets", "metrics", "events", "jobs"):
        op.drop_table(table)
