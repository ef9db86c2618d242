"""The registry against hostile input, through the installed `rft` command: ids that look like SQL wildcards,
ambiguous and unknown prefixes, and databases rft must refuse without touching (garbage bytes, another
program's SQLite file, a newer schema, a malformed RFT_DATABASE_URL, an unreachable PostgreSQL).

The fake jobs and checkpoints are made with the registry's Python API; every command is run as a user types it.
Run: .venv/bin/python -m pytest -q tests/test_registry_hostile.py
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from rft.errors import RftError
from rft.registry import Registry, db
from tests.clitools import assert_user_error, run_rft

GRADER = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "x", "operation": "eq"}


@pytest.fixture()
def reg(tmp_path):
    """A fresh SQLite registry under this test's RFT_HOME, with two jobs that share the prefix 'ftjob-a'."""
    db.reset_engines()
    r = Registry()
    for jid in ("ftjob-aa11", "ftjob-ab22"):
        r.create_job(jid, spec={"grader": GRADER}, model="m", run_dir=str(tmp_path / jid), status="paused")
    yield r
    db.reset_engines()


def _db_path() -> Path:
    return Path(os.environ["RFT_HOME"]) / "rft.db"


def _status(reg: Registry, jid: str) -> str:
    return reg.get_job(jid)["status"]


WILDCARDS = ["%", "_", "ftjob-a%", "ftjob-a_11", "%a11", "*"]


@pytest.mark.parametrize("wild", WILDCARDS)
def test_sql_wildcards_match_nothing_and_cancel_nothing(reg, wild):
    # the CLI may refuse the id's shape before the registry sees it; either way: exit 2, nothing cancelled
    assert_user_error(run_rft("jobs", "cancel", wild), wild)
    assert_user_error(run_rft("jobs", "show", wild), wild)
    assert _status(reg, "ftjob-aa11") == _status(reg, "ftjob-ab22") == "paused"


@pytest.mark.parametrize("wild", WILDCARDS)
def test_registry_api_never_matches_wildcards(reg, wild):
    with pytest.raises(RftError, match="no job"):
        reg.get_job(wild)
    with pytest.raises(RftError, match="no job"):
        reg.request(wild, "cancel")
    with pytest.raises(RftError, match="no checkpoint"):
        reg.get_checkpoint(wild)
    assert _status(reg, "ftjob-aa11") == _status(reg, "ftjob-ab22") == "paused"


def test_exact_and_unique_prefix_match(reg):
    r = run_rft("jobs", "show", "ftjob-aa", "--json")
    assert r.returncode == 0, r.stderr
    assert '"id": "ftjob-aa11"' in r.stdout
    r = run_rft("jobs", "cancel", "ftjob-ab2")
    assert r.returncode == 0, r.stderr
    assert _status(reg, "ftjob-ab22") == "cancelled" and _status(reg, "ftjob-aa11") == "paused"


def test_ambiguous_prefix_lists_the_candidates(reg):
    r = run_rft("jobs", "cancel", "ftjob-a")
    assert_user_error(r, "ambiguous", "ftjob-aa11", "ftjob-ab22")
    assert _status(reg, "ftjob-aa11") == _status(reg, "ftjob-ab22") == "paused"


def test_unknown_id_says_so_with_did_you_mean(reg):
    assert_user_error(run_rft("jobs", "show", "ftjob-aa12"), "no job 'ftjob-aa12'", "did you mean 'ftjob-aa11'")
    assert_user_error(run_rft("jobs", "show", ""), "job id")
    with pytest.raises(RftError, match="no job given"):
        reg.get_job("  ")


def test_checkpoint_and_alias_prefixes(reg, tmp_path):
    cid = reg.add_checkpoint("ftjob-aa11", 1, str(tmp_path), "0" * 64)
    reg.add_checkpoint("ftjob-aa11", 2, str(tmp_path), "0" * 64)
    assert reg.get_checkpoint(cid[:-1])["id"] == cid  # ids are ckpt-<8 hex>: one character less is still unique
    assert_user_error(run_rft("checkpoints", "show", "ckpt-"), "ambiguous", cid)
    assert_user_error(run_rft("checkpoints", "show", "ckpt-zz"), "no checkpoint 'ckpt-zz'")
    reg.approve(cid, by="t", override="test")
    reg.promote(cid, "production", by="t")
    assert reg.alias("prod")["name"] == "production" and reg.alias("alias:production")["checkpoint_id"] == cid
    assert_user_error(run_rft("rollback", "--alias", "prod_ction"), "no alias 'prod_ction'", "did you mean 'production'")
    assert_user_error(run_rft("rollback", "--alias", "%"), "%")
    assert_user_error(run_rft("rollback", "--alias", "_"), "no alias '_'")
    with pytest.raises(RftError, match="no alias '%'"):
        reg.alias("%")
    assert reg.alias("production")["checkpoint_id"] == cid  # nothing moved


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _refused_untouched(needles: tuple[str, ...], *commands: tuple[str, ...]) -> None:
    """Every command exits 2 with the message, and the database file and its folder are exactly as before."""
    db.reset_engines()
    p = _db_path()
    before, listing = _sha(p), sorted(os.listdir(p.parent))
    for cmd in commands:
        assert_user_error(run_rft(*cmd), str(p), *needles)
        assert _sha(p) == before and sorted(os.listdir(p.parent)) == listing, cmd


COMMANDS = (("jobs", "list"), ("jobs", "show", "%"), ("jobs", "cancel", "_"), ("aliases", "list"))


def test_garbage_database_is_refused_and_left_alone():
    _db_path().parent.mkdir(parents=True, exist_ok=True)
    _db_path().write_bytes(os.urandom(4096))
    _refused_untouched(("not an SQLite database", "nothing in it was changed"), *COMMANDS)


def test_sqlite_header_with_garbage_pages_is_refused_and_left_alone():
    _db_path().parent.mkdir(parents=True, exist_ok=True)
    _db_path().write_bytes(b"SQLite format 3\x00" + b"\xff" * 8192)
    _refused_untouched(("not a usable SQLite database",), *COMMANDS)


def _sqlite(sql: list[str]) -> None:
    _db_path().parent.mkdir(parents=True, exist_ok=True)
    c = sqlite3.connect(_db_path())
    for s in sql:
        c.execute(s)
    c.commit()
    c.close()


def test_foreign_sqlite_database_is_refused_and_left_alone():
    _sqlite(["CREATE TABLE users (id INTEGER, name TEXT)", "INSERT INTO users VALUES (1, 'ann')"])
    _refused_untouched(("not an rft registry", "users"), *COMMANDS)
    names = sqlite3.connect(_db_path()).execute("SELECT name FROM sqlite_master").fetchall()
    assert names == [("users",)]


def test_same_table_names_with_other_columns_are_refused():
    _sqlite(["CREATE TABLE schema_version (version INTEGER, applied_at REAL)",
             "INSERT INTO schema_version VALUES (3, 0)", "CREATE TABLE jobs (id TEXT, owner TEXT)"])
    _refused_untouched(("not an rft registry", "'jobs' lacks the column(s) status"), *COMMANDS)


def test_newer_schema_version_is_refused_and_left_alone(reg):
    db.reset_engines()
    _sqlite([f"UPDATE alembic_version SET version_num = '{db.revision_id(db.SCHEMA_VERSION + 1)}'"])
    _refused_untouched((f"schema version {db.SCHEMA_VERSION + 1}", f"newer than this rft knows ({db.SCHEMA_VERSION})",
                        "upgrade rft"), *COMMANDS)


def test_newer_pre_alembic_schema_version_is_refused_and_left_alone(reg):
    """A registry recorded the pre-alembic way (schema_version) but newer than this rft: refused, not adopted."""
    db.reset_engines()
    _sqlite(["DROP TABLE alembic_version", "CREATE TABLE schema_version (version INTEGER, applied_at REAL)",
             f"INSERT INTO schema_version VALUES ({db.SCHEMA_VERSION + 1}, 0)"])
    _refused_untouched((f"schema version {db.SCHEMA_VERSION + 1}", f"newer than this rft knows ({db.SCHEMA_VERSION})",
                        "upgrade rft"), *COMMANDS)


@pytest.mark.parametrize("url, needles", [
    ("notaurl", ("RFT_DATABASE_URL 'notaurl' is not a valid database URL",)),
    ("postgresql://u:secret@host:port/db", ("is not a valid database URL", "u:***@")),
    ("nosuchdb://x/y", ("cannot open", "nosuchdb")),
    ("postgresql+psycopg://u:secret@127.0.0.1:1/x", ("cannot open the registry database", "127.0.0.1:1",
                                                     "check that the database server is running")),
])
def test_bad_database_urls(url, needles):
    for cmd in COMMANDS:
        r = run_rft(*cmd, env={"RFT_DATABASE_URL": url})
        assert_user_error(r, *needles)
        assert "secret" not in r.stdout + r.stderr
