"""The registry's storage: SQLAlchemy Core tables, versioned migrations, and the engine for a URL.

Default URL: sqlite:///$RFT_HOME/rft.db; any SQLAlchemy URL via RFT_DATABASE_URL (PostgreSQL is tested).
SQLite runs in WAL mode with a busy timeout, so several processes (a training job, `rft jobs pause` in another
terminal, the server) can write at once; every write is one short transaction.

Migrations: `MIGRATIONS[i]` brings the schema from version i to i+1. `schema_version` records what is applied;
a database newer than this code is refused rather than misread.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import sqlalchemy as sa
from sqlalchemy import (JSON, Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text,
                        event)

from rft.errors import RftError
from rft.home import rft_home

metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("model", Text, nullable=False),
    Column("base_model_sha256", String(64)),
    Column("spec", JSON, nullable=False),  # the job spec as submitted (after overrides)
    Column("resolved_config", JSON),
    Column("config_sha256", String(64)),
    Column("training_file", Text),
    Column("training_file_sha256", String(64)),
    Column("validation_file", Text),
    Column("validation_file_sha256", String(64)),
    Column("guard_file", Text),
    Column("guard_file_sha256", String(64)),
    Column("grader_sha256", String(64)),
    Column("code_version", String(128)),
    Column("run_dir", Text, nullable=False),
    Column("pid", Integer),
    Column("host", String(255)),
    Column("heartbeat_at", Float),
    Column("step", Integer, nullable=False, default=0),
    Column("total_steps", Integer),
    Column("requested", String(16)),  # "pause" | "cancel": asked by another process, honoured at a step boundary
    Column("error", JSON),
    Column("result", JSON),
)

events = Table(
    "events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("level", String(16), nullable=False),
    Column("type", String(32), nullable=False),
    Column("message", Text, nullable=False),
    Column("data", JSON),
    Index("ix_events_job", "job_id", "seq"),
)

metrics = Table(
    "metrics", metadata,
    Column("job_id", String(64), ForeignKey("jobs.id"), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("data", JSON, nullable=False),
)

datasets = Table(
    "datasets", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("source", Text, nullable=False),
    Column("rows", Integer),
    Column("first_seen", Float, nullable=False),
)

graders = Table(
    "graders", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("type", String(64)),
    Column("spec", JSON),
    Column("first_seen", Float, nullable=False),
)

checkpoints = Table(
    "checkpoints", metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("path", Text, nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("status", String(16), nullable=False),  # active | pruned
    Column("is_final", Boolean, nullable=False, default=False),
    Column("val_score", Float),
    Column("val_low", Float),
    Column("val_high", Float),
    Column("eval_report_id", String(64)),
    Column("verdict_id", String(64)),
    Column("approval_status", String(16), nullable=False, default="none"),  # none | approved
    Index("ix_ckpt_job", "job_id", "step"),
)

eval_reports = Table(
    "eval_reports", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("job_id", String(64)),
    Column("checkpoint_id", String(64)),
    Column("model_ref", Text),
    Column("kind", String(32), nullable=False),  # baseline | checkpoint | final | guard | eval | compare
    Column("data_sha256", String(64)),
    Column("grader_sha256", String(64)),
    Column("summary", JSON, nullable=False),
    Column("path", Text),
)

gate_verdicts = Table(
    "gate_verdicts", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("checkpoint_id", String(64), ForeignKey("checkpoints.id"), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("verdict", JSON, nullable=False),
)

approvals = Table(
    "approvals", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("checkpoint_id", String(64), ForeignKey("checkpoints.id"), nullable=False),
    Column("by", String(255), nullable=False),
    Column("note", Text),
    Column("override_reason", Text),
    Column("verdict_id", String(64)),
)

aliases = Table(
    "aliases", metadata,
    Column("name", String(128), primary_key=True),
    Column("checkpoint_id", String(64), ForeignKey("checkpoints.id"), nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("version", Integer, nullable=False),  # bumps on every move: optimistic concurrency
)

alias_history = Table(
    "alias_history", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("checkpoint_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("state", String(16), nullable=False),  # live | rolled_back
    Index("ix_alias_hist", "name", "seq"),
)

audit = Table(
    "audit", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("before", JSON),
    Column("after", JSON),
    Column("verdict_id", String(64)),
    Column("detail", JSON),
)


batches = Table(  # v3: batch inference jobs (the batch folder stays the durable record; this mirrors it)
    "batches", metadata,
    Column("id", String(64), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("created_at", Float),
    Column("updated_at", Float, nullable=False),
    Column("model", Text),
    Column("input_file", Text),
    Column("output_file", Text),
    Column("error_file", Text),
    Column("request_counts", JSON),
    Column("usage", JSON),
    Column("cost", JSON),
    Column("state", JSON, nullable=False),
)

LATER = {"schema_version", "batches"}  # tables that later migrations create


def _m1(conn) -> None:
    metadata.create_all(conn, tables=[t for t in metadata.sorted_tables if t.name not in LATER])


def _m2(conn) -> None:
    # v2: monitor alarms are queried by job; index the event type.
    # Plain DDL (not an Index object, which would join the table's metadata and be created by _m1 too).
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_events_type ON events (job_id, type)")


def _m3(conn) -> None:
    batches.create(conn, checkfirst=True)


MIGRATIONS: list[Callable] = [_m1, _m2, _m3]
SCHEMA_VERSION = len(MIGRATIONS)

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def database_url() -> str:
    url = os.environ.get("RFT_DATABASE_URL")
    if url:
        return url
    home = rft_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'rft.db'}"


def _sqlite_connect(dbapi_conn, _record) -> None:
    """WAL, a busy timeout, foreign keys; and no implicit transactions from the driver, so that the "begin"
    listener's BEGIN IMMEDIATE is the only one (concurrent writers then queue instead of failing half-way)."""
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def get_engine(url: str | None = None) -> sa.Engine:
    url = url or database_url()
    with _lock:
        eng = _engines.get(url)
        if eng is None:
            kw = {}
            if url.startswith("sqlite"):
                kw["connect_args"] = {"timeout": 30}
            eng = sa.create_engine(url, future=True, pool_pre_ping=True, **kw)
            if url.startswith("sqlite"):
                event.listen(eng, "connect", _sqlite_connect)
                event.listen(eng, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
            migrate(eng)
            _engines[url] = eng
        return eng


def migrate(eng: sa.Engine) -> int:
    """Apply pending migrations; return the schema version. Safe to call from several processes at once."""
    for attempt in range(20):
        try:
            with eng.begin() as conn:
                schema_version.create(conn, checkfirst=True)
                cur = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
                if cur > SCHEMA_VERSION:
                    raise RftError(f"the registry at {eng.url.render_as_string(hide_password=True)} has schema version "
                                   f"{cur}, newer than this rft ({SCHEMA_VERSION})", hint="upgrade rft")
                for v in range(cur, SCHEMA_VERSION):
                    MIGRATIONS[v](conn)
                    conn.execute(schema_version.insert().values(version=v + 1, applied_at=time.time()))
                return SCHEMA_VERSION
        except sa.exc.IntegrityError:  # another process applied the same migration first (PostgreSQL)
            time.sleep(0.05 * (attempt + 1))
        except sa.exc.ProgrammingError:
            time.sleep(0.05 * (attempt + 1))
    raise RftError("could not migrate the registry schema (another process kept it locked)")


def reset_engines() -> None:
    """Forget cached engines (tests switch RFT_HOME / RFT_DATABASE_URL between cases)."""
    with _lock:
        for e in _engines.values():
            e.dispose()
        _engines.clear()
