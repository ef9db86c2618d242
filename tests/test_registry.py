"""The registry on SQLite (default) and on a real PostgreSQL server (started for the session from the local
PostgreSQL binaries, or RFT_TEST_POSTGRES_URL): the same tests on both.

Covers: migrations, two processes writing at once, job lifecycle and interrupted jobs, approvals refused
without passing gates, promote only approved, rollback, the audit log, lineage with every hash, tampered
checkpoints refused, and the full promote flow from the command line (train -> gates -> approve -> promote ->
evaluate alias:production -> rollback -> lineage)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rft.errors import RftError
from rft.registry import Registry, db
from tests.jobspecs import tiny_job_file


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A throw-away PostgreSQL cluster (initdb + pg_ctl, trust auth on 127.0.0.1), or RFT_TEST_POSTGRES_URL."""
    url = os.environ.get("RFT_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if not initdb:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine and RFT_TEST_POSTGRES_URL is not set")
    import tempfile

    bindir = Path(initdb).resolve().parent
    base = Path(tempfile.mkdtemp(prefix="rft-pg-"))  # not under pytest's root-only temp dir: postgres must reach it
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
    subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    port = _free_port()
    subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
                              f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, monkeypatch):
    """Point RFT_DATABASE_URL at a fresh database of each kind."""
    if request.param == "sqlite":
        monkeypatch.delenv("RFT_DATABASE_URL", raising=False)
        yield "sqlite"
        return
    server = request.getfixturevalue("postgres_server")
    import sqlalchemy as sa

    name = "rft_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    monkeypatch.setenv("RFT_DATABASE_URL", f"{server}/{name}")
    yield "postgresql"
    db.reset_engines()


# ------------------------------------------------------------------------------------------- storage
def _revision(engine) -> list[str]:
    import sqlalchemy as sa

    with engine.connect() as c:
        return c.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()


def test_migrations_are_versioned_and_idempotent(backend):
    reg = Registry()
    assert db.migrate(reg.engine) == db.SCHEMA_VERSION
    # alembic records the head revision, whose id is the schema version; a second migrate changes nothing
    assert _revision(reg.engine) == [db.revision_id(db.SCHEMA_VERSION)]
    assert db.migrate(reg.engine) == db.SCHEMA_VERSION
    assert _revision(reg.engine) == [db.revision_id(db.SCHEMA_VERSION)]


def test_the_migrations_build_exactly_the_tables_the_code_uses(backend):
    """The revision scripts spell their tables out; at the head they must equal rft.registry.db's tables
    (columns, types, nullability, keys, indexes): alembic's own comparison finds no difference."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    reg = Registry()
    with reg.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), db.metadata) == []


_WRITER = """
import sys
from rft.registry import Registry
reg = Registry()
for i in range(int(sys.argv[2])):
    reg.add_event(sys.argv[1], "info", "message", f"{sys.argv[3]} {i}", {"i": i})
    reg.add_metrics(sys.argv[1], 1000 * int(sys.argv[4]) + i, {"i": i})
"""


def test_two_processes_writing_at_once_do_not_corrupt(backend, tmp_path):
    reg = Registry()
    reg.create_job("ftjob-concurrent", spec={}, model="m", run_dir=str(tmp_path))
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, "ftjob-concurrent", str(n), name, str(k)], env=os.environ.copy())
             for k, name in enumerate(("a", "b"))]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    evs = reg.events("ftjob-concurrent", limit=10_000)
    assert len(evs) == 2 * n
    assert sorted(e["message"] for e in evs) == sorted(f"{w} {i}" for w in "ab" for i in range(n))
    assert len(reg.metrics("ftjob-concurrent")) == 2 * n
    if backend == "sqlite":
        with reg.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_a_job_whose_process_died_shows_as_interrupted(backend, tmp_path):
    reg = Registry()
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    reg.create_job("ftjob-dead", spec={}, model="m", run_dir=str(tmp_path), status="running")
    from rft.registry import _proc_start

    time.sleep(0.2)
    # the owner is the sleeper (pid + its start time), not this test process
    reg.update_job("ftjob-dead", pid=p.pid, host=f"{socket.gethostname()}#{_proc_start(p.pid)}")
    assert reg.get_job("ftjob-dead")["status"] == "running"
    p.kill()
    p.wait()
    row = reg.get_job("ftjob-dead")
    assert row["status"] == "interrupted" and "rft jobs resume" in row["error"]["message"]
    assert [j["status"] for j in reg.list_jobs()] == ["interrupted"]


def _fake_checkpoint(reg: Registry, tmp_path: Path, job_id: str, step: int, passed: bool | None) -> str:
    from rft.hashing import sha256_file

    d = tmp_path / f"{job_id}-{step}"
    d.mkdir(parents=True)
    (d / "w.txt").write_text(f"weights {step}")
    from rft.hashing import verify_checkpoint  # noqa: F401  (the manifest format below is what it reads)

    (d / "manifest.json").write_text(json.dumps({"files": {"w.txt": {"sha256": sha256_file(d / "w.txt"),
                                                                      "size": (d / "w.txt").stat().st_size}}}))
    cid = reg.add_checkpoint(job_id, step, str(d), sha256_file(d / "manifest.json"), val={"mean": 0.5, "low": 0.4, "high": 0.6})
    if passed is not None:
        reg.add_verdict(cid, {"passed": passed, "checks": [{"name": "min_improvement", "passed": passed,
                                                             "value": 0.1 if passed else -0.1, "threshold": 0.0}]})
    return cid


def test_approve_promote_rollback_and_audit(backend, tmp_path):
    reg = Registry()
    reg.create_job("ftjob-x", spec={}, model="m", run_dir=str(tmp_path))
    good1 = _fake_checkpoint(reg, tmp_path, "ftjob-x", 1, True)
    bad = _fake_checkpoint(reg, tmp_path, "ftjob-x", 2, False)
    good2 = _fake_checkpoint(reg, tmp_path, "ftjob-x", 3, True)
    nogate = _fake_checkpoint(reg, tmp_path, "ftjob-x", 4, None)
    with pytest.raises(RftError, match="failed its quality gates"):
        reg.approve(bad, by="ann", note="looks fine")
    with pytest.raises(RftError, match="no gate verdict"):
        reg.approve(nogate, by="ann", note="n")
    with pytest.raises(RftError, match="not approved"):
        reg.promote(good1, "production", by="ann")
    reg.approve(good1, by="ann", note="ship it")
    ov = reg.approve(bad, by="bob", note="known issue", override="customer demo needs it")
    assert ov["override_reason"] == "customer demo needs it"
    reg.approve(good2, by="ann", note="better")
    assert reg.promote(good1, "production", by="ann")["checkpoint_id"] == good1
    assert reg.promote(good2, "production", by="ann")["checkpoint_id"] == good2
    assert reg.rollback("production", by="carol")["checkpoint_id"] == good1
    with pytest.raises(RftError, match="no earlier target"):
        reg.rollback("production", by="carol")
    with pytest.raises(RftError, match="not valid"):
        reg.promote(good2, "bad name!", by="ann")
    rows = reg.audit_log()
    assert [r["action"] for r in rows] == ["checkpoint.approve", "checkpoint.approve", "checkpoint.approve",
                                            "alias.promote", "alias.promote", "alias.rollback"]
    over = rows[1]
    assert over["actor"] == "bob" and over["detail"]["override_reason"] == "customer demo needs it"
    assert over["detail"]["gates_passed"] is False
    rb = rows[-1]
    assert rb["actor"] == "carol" and rb["before"] == {"checkpoint_id": good2} and rb["after"] == {"checkpoint_id": good1}
    assert rows[3]["verdict_id"] == reg.get_checkpoint(good1)["verdict_id"]
    # both targets are pinned: pruning never removes a rollback target
    assert {good1, good2} <= reg.pinned_checkpoints()


def test_tampered_checkpoint_is_refused_on_load(backend, tmp_path):
    from rft.models import resolve

    reg = Registry()
    reg.create_job("ftjob-t", spec={}, model="m", run_dir=str(tmp_path))
    cid = _fake_checkpoint(reg, tmp_path, "ftjob-t", 1, True)
    assert resolve(f"ckpt:{cid}").path.exists()
    p = Path(reg.get_checkpoint(cid)["path"]) / "w.txt"
    p.write_text("weights 1 but changed")
    with pytest.raises(RftError, match="tampered or corrupt"):
        resolve(f"ckpt:{cid}")
    # rewriting the manifest to match does not help: the registry holds the manifest's hash
    from rft.hashing import sha256_file

    mf = p.parent / "manifest.json"
    mf.write_text(json.dumps({"files": {"w.txt": {"sha256": sha256_file(p), "size": p.stat().st_size}}}))
    with pytest.raises(RftError, match="differs from the one recorded"):
        resolve(f"ckpt:{cid}")


# ------------------------------------------------------------------------- the whole flow, from the CLI
def _cli(*args) -> str:
    from rft.cli.main import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exit_code != 0:
        raise AssertionError(f"rft {' '.join(map(str, args))} -> {r.exit_code}\n{r.output}\n{r.exception!r}")
    return r.stdout


def test_promote_flow_from_the_command_line(backend, tmp_path, tiny_model_dir):
    job = tiny_job_file(tmp_path, tiny_model_dir)
    res = json.loads(_cli("train", job, "-o", tmp_path / "run", "-q", "--json"))
    jid = res["id"]
    jobs = json.loads(_cli("jobs", "list", "--json"))
    assert jobs[0]["id"] == jid and jobs[0]["status"] == "succeeded"
    ck = json.loads(_cli("checkpoints", "list", jid, "--json"))
    assert [c["step"] for c in ck] == [1, 2] and all(c["id"] and c["status"] == "active" for c in ck)
    assert all(c["gates"] == "passed" and c["validation_score"] == 0.0 for c in ck)
    final = [c for c in ck if c["is_final"]][0]
    first = [c for c in ck if not c["is_final"]][0]
    assert res["fine_tuned_model_checkpoint"] == f"ckpt:{final['id']}"
    assert res["fine_tuned_model"] == f"ft:{res['model']}:{res['id']}"
    _cli("checkpoints", "approve", first["id"], "--by", "ann", "--note", "first")
    _cli("promote", first["id"], "--alias", "production", "--by", "ann")
    _cli("checkpoints", "approve", final["id"], "--by", "ann", "--note", "final")
    _cli("promote", final["id"], "--alias", "production", "--by", "ann")
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                                  "reference": "{{item.answer}}", "operation": "eq"}))
    ev = json.loads(_cli("eval", "alias:production", "--data", tmp_path / "data.jsonl", "--grader", grader, "--json",
                         "--max-new-tokens", "4"))
    assert ev["n"] == 4 and ev["accuracy"] == 0.0
    assert any(r["kind"] == "eval" and r["checkpoint_id"] == final["id"] for r in Registry().eval_reports())
    out = _cli("rollback", "--alias", "production", "--by", "carol")
    assert first["id"] in out
    lin = json.loads(_cli("lineage", "alias:production", "--json"))
    assert lin["checkpoint"]["id"] == first["id"] and lin["checkpoint"]["verified"]["ok"]
    row = Registry().get_job(jid)
    from rft.data import load_dataset

    sha = load_dataset(str(tmp_path / "data.jsonl")).sha256
    assert lin["datasets"]["training"]["sha256"] == sha == lin["datasets"]["validation"]["sha256"]
    for key, val in (("base_model", row["base_model_sha256"]), ("config", row["config_sha256"])):
        assert lin[key]["sha256"] == val and len(val) == 64
    assert lin["graders"][0]["sha256"] == row["grader_sha256"] and lin["graders"][0]["type"] == "string_check"
    assert lin["code_version"].startswith(("git:", "rft=="))
    assert lin["gate_verdict"]["passed"] and lin["approvals"][0]["by"] == "ann"
    assert [h["action"] for h in lin["alias"]["history"]] == ["alias.promote", "alias.promote", "alias.rollback"]
    text = _cli("lineage", "alias:production")
    for h in (sha, row["base_model_sha256"], row["config_sha256"], row["grader_sha256"], lin["checkpoint"]["manifest_sha256"]):
        assert h in text
    # a checkpoint whose files were changed is refused wherever it is used as a model
    w = Path(first["path"]) / "model.safetensors"
    b = bytearray(w.read_bytes())
    b[-1] ^= 1
    w.write_bytes(bytes(b))
    from rft.models import resolve

    with pytest.raises(RftError, match="tampered or corrupt"):
        resolve("alias:production")


def test_failed_gates_refuse_approval_without_override(backend, tmp_path, tiny_model_dir):
    # min_improvement 0.5 cannot be met by a model that scores 0
    job = tiny_job_file(tmp_path, tiny_model_dir, gates={"min_improvement": 0.5})
    res = json.loads(_cli("train", job, "-o", tmp_path / "run", "-q", "--json"))
    ck = json.loads(_cli("checkpoints", "list", res["id"], "--json"))
    assert all(c["gates"] == "failed" for c in ck)
    with pytest.raises(AssertionError, match="failed its quality gates"):
        _cli("checkpoints", "approve", ck[-1]["id"], "--by", "ann", "--note", "x")
    with pytest.raises(AssertionError, match="not approved"):
        _cli("promote", ck[-1]["id"], "--alias", "production")
    _cli("checkpoints", "approve", ck[-1]["id"], "--by", "ann", "--note", "x", "--override", "demo only")
    shown = json.loads(_cli("checkpoints", "show", ck[-1]["id"], "--json"))
    assert shown["approvals"][0]["override_reason"] == "demo only"
    assert shown["verdict"]["passed"] is False


# --------------------------------------------------------------------------------- reward hacking
_SHARE_E = "def grade(sample, item):\n    t = sample['output_text']\n    return t.count('e') / max(1, len(t))\n"
_GUARD = "def grade(sample, item):\n    t = sample['output_text']\n    return 1.0 if t.count('e') * 2 < max(1, len(t)) else 0.0\n"


def test_reward_hacking_raises_the_alarm_and_pauses(tmp_path, tiny_model_dir):
    """The training grader rewards writing 'e'; the guard set measures answers that are not mostly 'e'. Training
    reward rises while the guard score falls: the monitor's alarm fires and the pause policy pauses the job."""
    from rft.config import load_job
    from rft.train import loop

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"}], "answer": "x"}) + "\n"
                            for i in range(8)))
    spec = {"model": str(tiny_model_dir), "training_file": str(data), "validation_file": str(data), "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": {"type": "python", "name": "share_e", "source": _SHARE_E},
                "hyperparameters": {"batch_size": 4, "n_epochs": 6, "eval_interval": 3}}},
            "rft": {"sampling": {"n": 8, "max_new_tokens": 6}, "optimizer": {"lr": 1e-2},
                    "train": {"dtype": "float32"}, "checkpoint": {"at_eval": False},
                    "eval": {"guard_file": str(data), "guard_grader": {"type": "python", "name": "not_mostly_e",
                                                                       "source": _GUARD}},
                    # evaluations at steps 0, 3, 6, 9: compare each with the one 3 evaluations back (the greedy
                    # answers are already all "e" by step 3, so shorter windows see no further fall)
                    "monitor": {"policy": "warn", "actions": {"reward_hacking": "pause"}, "eval_window": 3}}}
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(loop.JobStopped) as ei:
        loop.run_job(load_job(p), output_dir=str(tmp_path / "run"), log=lambda s: None)
    assert ei.value.status == "paused" and "reward_hacking" in ei.value.message
    jid = json.loads((tmp_path / "run" / "job.json").read_text())["id"]
    reg = Registry()
    assert reg.get_job(jid)["status"] == "paused"
    alarms = [e for e in reg.events(jid) if e["type"] == "alarm" and e["data"]["kind"] == "reward_hacking"]
    assert alarms, [e["message"] for e in reg.events(jid)]
    nums = alarms[0]["data"]["numbers"]
    assert alarms[0]["data"]["action"] == "pause"
    assert any("reward" in k for k in nums) and any("guard" in k or "score" in k for k in nums), nums


def _v2_database(url: str, *, before_alembic: bool) -> None:
    """A registry left at schema v2 (before the batches table) holding one job: recorded by alembic (revision
    0002), or the way rft recorded versions before alembic (a schema_version table holding 1 and 2)."""
    import sqlalchemy as sa
    from alembic import command

    eng = sa.create_engine(url)
    with eng.begin() as c:
        command.upgrade(db._alembic_config(c), "0002")
        c.execute(db.jobs.insert().values(id="ftjob-old", status="succeeded", created_at=0.0, updated_at=0.0, model="m",
                                          spec={}, run_dir="/x", step=3))
        if before_alembic:
            c.exec_driver_sql("DROP TABLE alembic_version")
            c.exec_driver_sql("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at FLOAT NOT NULL, "
                              "PRIMARY KEY (version))")
            c.exec_driver_sql("INSERT INTO schema_version VALUES (1, 0.0), (2, 0.0)")
    eng.dispose()


@pytest.mark.parametrize("before_alembic", [False, True], ids=["alembic-v2", "pre-alembic-v2"])
def test_an_older_database_is_migrated_in_place(tmp_path, monkeypatch, before_alembic):
    """A database left at schema v2 (before the batches table) is upgraded on first use; its rows stay."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    _v2_database(url, before_alembic=before_alembic)
    assert "batches" not in sa.inspect(sa.create_engine(url)).get_table_names()
    monkeypatch.setenv("RFT_DATABASE_URL", url)
    reg = Registry()
    tables = sa.inspect(reg.engine).get_table_names()
    assert "batches" in tables and "schema_version" not in tables
    assert reg.get_job("ftjob-old")["step"] == 3
    assert _revision(reg.engine) == [db.revision_id(db.SCHEMA_VERSION)] == ["0006"]


def test_a_checkpoint_directory_given_by_path_is_verified_too(tmp_path, tiny_model_dir):
    from rft.models import ResolvedModel, load, resolve
    from rft.train.checkpoint import save_model_checkpoint

    model, tok = load(ResolvedModel(str(tiny_model_dir), tiny_model_dir, "directory"))
    out = tmp_path / "ckpt"
    save_model_checkpoint(model, tok, out, {"job_id": "x", "step": 1})
    assert resolve(str(out)).kind == "checkpoint"
    (out / "config.json").write_text((out / "config.json").read_text().replace("4", "5", 1))
    with pytest.raises(RftError, match="tampered or corrupt"):
        resolve(str(out))
