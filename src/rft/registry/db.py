"""The registry's storage: SQLAlchemy Core tables, versioned migrations, and the engine for a URL.

Default URL: sqlite:///$RFT_HOME/rft.db; any SQLAlchemy URL via RFT_DATABASE_URL (PostgreSQL is tested).
SQLite runs in WAL mode with a busy timeout, so several processes (a training job, `rft jobs pause` in another
terminal, the server) can write at once; every write is one short transaction.

Migrations: alembic revision scripts in `migrations/versions/` (package data), with ids that are the schema
version as four digits (0001, 0002, ...); alembic's `alembic_version` table records the one applied. `migrate`
checks a database read-only first (empty, an rft registry, or refused: foreign, changed by hand, or written by
a newer rft), then upgrades it to the head revision in the same transaction. A registry from before alembic
(a `schema_version` table holding 1..N) is stamped at revision N first and its old table dropped.
Simplified: no downgrades are run (the scripts have them for a developer's use); one head, no branches.
"""

from __future__ import annotations

import os
import threading
import time
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import (JSON, BigInteger, Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table,
                        Text, event)

from rft.errors import RftError
from rft.home import rft_home

# The tables at the head revision: what the code reads and writes. The migrations build them (tests/
# test_registry.py compares the two); a change here needs a revision script in migrations/versions/.
metadata = MetaData()

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
    Column("created_by", String(255)),  # 0005: the user who created the job (trainers act only on their own)
    Column("team", String(64)),  # 0005: the creator's team (team members see only their team's jobs)
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
    Index("ix_events_type", "job_id", "type"),  # 0002: monitor alarms are queried by job and type
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
    Column("status", String(16), nullable=False),  # active | pruned | missing (its folder was moved or deleted)
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


batches = Table(  # 0003: batch inference jobs (the batch folder stays the durable record; this mirrors it)
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
    Column("created_by", String(255)),  # 0005
    Column("team", String(64)),  # 0005
)

files = Table(  # 0004: uploaded files (OpenAI's Files API); the bytes live in rft.files' store under $RFT_HOME/files
    "files", metadata,
    Column("id", String(80), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("filename", Text, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("path", Text, nullable=False),  # the file's folder in the store
    Column("created_by", String(255)),  # 0005
    Column("team", String(64)),  # 0005
    Index("ix_files_created", "created_at", "id"),
)

users = Table(  # 0005: who may do what (rft.registry.access); no rows = the single-user mode
    "users", metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),  # viewer | trainer | approver | admin
    Column("team", String(64)),
    Column("token_sha256", String(64), nullable=False, unique=True),  # sha256 hex of the random token
    Column("token_hint", String(16), nullable=False),  # the token's first characters, to tell tokens apart
    Column("created_at", Float, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("rotated_at", Float),
    Column("revoked_at", Float),
    Column("revoked_by", String(255)),
)

alias_policies = Table(  # 0005: promotion policies, one row per version (the newest is in force)
    "alias_policies", metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("policy", JSON, nullable=False),
)

review_verdicts = Table(  # 0006: people's verdicts on samples (rft review); see the migration for the columns
    "review_verdicts", metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64), nullable=False),
    Column("item_key", String(255), nullable=False),
    Column("source", String(16), nullable=False),
    Column("step", Integer),
    Column("grader_sha256", String(64)),
    Column("grader_score", Float),
    Column("human_score", Float, nullable=False),
    Column("note", Text),
    Column("reviewer", String(255), nullable=False),
    Column("team", String(64)),
    Column("created_at", Float, nullable=False),
    Column("data", JSON),
    Index("ix_review_verdicts_job", "job_id", "created_at"),
)

replays = Table(  # 0006: a grader replayed over stored samples or evaluation items (rft replay)
    "replays", metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64)),
    Column("eval_id", String(64)),
    Column("old_grader_sha256", String(64), nullable=False),
    Column("new_grader_sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(255)),
    Column("team", String(64)),
    Column("path", Text),
    Column("summary", JSON, nullable=False),
    Index("ix_replays_job", "job_id", "created_at"),
)

strategy_tables = Table(  # 0006: cost/quality tables (rft strategies)
    "strategy_tables", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(255)),
    Column("team", String(64)),
    Column("spec_sha256", String(64)),
    Column("path", Text),
    Column("table", JSON, nullable=False),
)

# Columns added to existing tables after 0001, by the revision that added them: a database older than that
# revision lacks them and is still an rft registry (`_check_schema` skips them for it).
ADDED_COLUMNS = {("jobs", "created_by"): 5, ("jobs", "team"): 5, ("batches", "created_by"): 5,
                 ("batches", "team"): 5, ("files", "created_by"): 5, ("files", "team"): 5}

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The bookkeeping of a registry from before alembic: versions 1..N applied by rft's own migration list.
_legacy_schema_version = Table("schema_version", MetaData(), Column("version", Integer, primary_key=True),
                               Column("applied_at", Float, nullable=False))
_BOOKKEEPING = {"alembic_version": {"version_num"}, "schema_version": {"version", "applied_at"}}


def _alembic_config(connection=None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection  # migrations/env.py runs in this connection's transaction
    return cfg


@lru_cache(maxsize=1)
def _revisions() -> tuple[str, ...]:
    """The revision ids this rft knows, oldest first (one linear history)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    return tuple(reversed([r.revision for r in script.walk_revisions()]))


SCHEMA_VERSION = len(_revisions())  # the head revision's number: revisions are "0001" .. f"{SCHEMA_VERSION:04d}"


def revision_id(version: int) -> str:
    return f"{version:04d}"


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
    """A busy timeout and foreign keys; and no implicit transactions from the driver, so that the "begin"
    listener's BEGIN IMMEDIATE is the only one (concurrent writers then queue instead of failing half-way).
    WAL mode is set by `migrate`, once the file is known to be an rft registry: it rewrites the file's header."""
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _shown(url: str) -> str:
    """A URL fit to print: the password replaced (also in a URL too malformed to parse)."""
    import re

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - anything unparsable is shown with a regex mask instead
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)[:300]


_WHAT_TO_DO = ("move the file aside to start a new registry (or restore a backup), or point RFT_DATABASE_URL at "
               "another database; nothing in it was changed")


def _check_sqlite_file(path: str | None, name: str) -> None:
    """Refuse, without writing, a file that is not an SQLite database (SQLite would report it only later)."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return  # a new registry
    except IsADirectoryError:
        raise RftError(f"the registry database {name} is a directory, not a file",
                       hint="point RFT_DATABASE_URL at a file, e.g. sqlite:////path/to/rft.db") from None
    except OSError as e:
        raise RftError(f"cannot read the registry database {name}: {e.strerror or e}") from None
    if head and head != b"SQLite format 3\x00":
        raise RftError(f"the registry database {name} is not an SQLite database (corrupt, or another kind of file)",
                       hint=_WHAT_TO_DO)


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0][:300]


def get_engine(url: str | None = None) -> sa.Engine:
    from_env = url is None and bool(os.environ.get("RFT_DATABASE_URL"))
    url = url or database_url()
    with _lock:
        eng = _engines.get(url)
        if eng is None:
            eng = _open(url, from_env)
            _engines[url] = eng
        return eng


def _open(url: str, from_env: bool) -> sa.Engine:
    """An engine with the schema migrated, or one RftError naming the database and what to do."""
    src = "RFT_DATABASE_URL" if from_env else "the database URL"
    example = "e.g. sqlite:////path/to/rft.db or postgresql+psycopg://user@host:5432/rft"
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as e:
        raise RftError(f"{src} '{_shown(url)}' is not a valid database URL ({_reason(e)})", hint=example) from None
    name = _shown(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    kw: dict = {}
    if sqlite:
        _check_sqlite_file(parsed.database, name)
        kw["connect_args"] = {"timeout": 30}
    elif parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        kw["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails in seconds, not minutes
    try:
        eng = sa.create_engine(parsed, future=True, pool_pre_ping=True, **kw)
    except (sa.exc.ArgumentError, ImportError, ValueError, TypeError) as e:
        raise RftError(f"{src} '{name}' names a database this installation cannot open ({_reason(e)})",
                       hint=f"{example}; other databases need their SQLAlchemy driver installed") from None
    if sqlite:
        event.listen(eng, "connect", _sqlite_connect)
        event.listen(eng, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    try:
        migrate(eng)
    except RftError:
        eng.dispose()
        raise
    except (sa.exc.DBAPIError, sa.exc.NoSuchTableError) as e:
        eng.dispose()
        if sqlite and isinstance(e, sa.exc.DatabaseError) and not isinstance(e, sa.exc.OperationalError):
            raise RftError(f"the registry database {name} is not a usable SQLite database ({_reason(e)})",
                           hint=_WHAT_TO_DO) from None
        raise RftError(f"cannot open the registry database {name}: {_reason(e)}",
                       hint="check that the database server is running and reachable and that "
                            f"{src} is right" + ("" if sqlite else f" ({example})")) from None
    return eng


def _refuse_foreign(name: str, why: str) -> RftError:
    return RftError(f"the database {name} is not an rft registry: {why}",
                    hint="point RFT_DATABASE_URL at a new or rft-owned database; nothing in this one was changed")


def _check_schema(conn, name: str) -> tuple[int, bool]:
    """(schema version, whether it is recorded the pre-alembic way) of an rft registry ((0, False): an empty
    database), or RftError for a foreign or newer one. Reads only, so a database that is refused is left exactly
    as it was."""
    insp = sa.inspect(conn)
    tables = set(insp.get_table_names())
    if not tables:
        return 0, False
    if not tables & set(_BOOKKEEPING):
        shown = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
        raise _refuse_foreign(name, f"it holds other tables ({shown}) and no alembic_version (or schema_version) table")
    version: int | None = None  # None: newer than this rft (refused below, after the column check)
    legacy = False
    cur = None
    if "alembic_version" in tables:
        revs = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(revs) > 1:
            raise _refuse_foreign(name, f"it records {len(revs)} schema revisions at once ({', '.join(map(str, revs[:5]))})")
        rev = revs[0] if revs else None
        if rev is None:
            version = 0
        elif rev in _revisions():
            version = _revisions().index(rev) + 1
        else:
            cur = int(rev) if str(rev).isdigit() else repr(rev)  # a revision of a newer rft
    else:
        cur = conn.execute(sa.select(sa.func.max(_legacy_schema_version.c.version))).scalar() or 0
        if cur <= SCHEMA_VERSION:
            version, legacy = cur, True
    # A table of ours with other columns is someone else's (or was changed by hand). A future migration that
    # adds a column to an existing table lists it in ADDED_COLUMNS, so databases older than it still pass.
    expected = {t.name: [c.name for c in t.columns] for t in metadata.sorted_tables}
    expected.update({t: sorted(cols) for t, cols in _BOOKKEEPING.items()})
    for table, cols in expected.items():
        if table not in tables:
            continue
        have = {c["name"] for c in insp.get_columns(table)}
        missing = [c for c in cols if c not in have
                   and not (version is not None and ADDED_COLUMNS.get((table, c), 0) > version)]
        if missing:
            raise _refuse_foreign(name, f"its table '{table}' lacks the column(s) {', '.join(missing[:5])}"
                                        f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}")
    if version is not None:
        return version, legacy
    raise RftError(f"the registry at {name} has schema version {cur}, newer than this rft knows "
                   f"({SCHEMA_VERSION}); it was written by a newer rft",
                   hint="upgrade rft, or point RFT_DATABASE_URL at another database; "
                        "nothing in this one was changed")


def migrate(eng: sa.Engine) -> int:
    """Upgrade the schema to the head revision; return the schema version. Safe to call from several processes
    at once. A foreign, corrupt or newer database is refused before anything is written to it."""
    from alembic import command

    name = eng.url.render_as_string(hide_password=True)
    for attempt in range(20):
        try:
            with eng.begin() as conn:
                cur, legacy = _check_schema(conn, name)
                cfg = _alembic_config(conn)
                if legacy and cur:  # adopt a pre-alembic registry: record its version the alembic way
                    command.stamp(cfg, revision_id(cur))
                if legacy:
                    _legacy_schema_version.drop(conn)
                if cur < SCHEMA_VERSION:
                    command.upgrade(cfg, "head")
            break
        except sa.exc.IntegrityError:  # another process applied the same migration first (PostgreSQL)
            time.sleep(0.05 * (attempt + 1))
        except sa.exc.ProgrammingError:
            time.sleep(0.05 * (attempt + 1))
    else:
        raise RftError("could not migrate the registry schema (another process kept it locked)")
    if eng.dialect.name == "sqlite":
        # Outside any transaction (SQLite refuses the switch inside one): the raw connection has no "begin" hook.
        raw = eng.raw_connection()
        try:
            raw.cursor().execute("PRAGMA journal_mode=WAL")
        finally:
            raw.close()
    return SCHEMA_VERSION


def reset_engines() -> None:
    """Forget cached engines (tests switch RFT_HOME / RFT_DATABASE_URL between cases)."""
    with _lock:
        for e in _engines.values():
            e.dispose()
        _engines.clear()
