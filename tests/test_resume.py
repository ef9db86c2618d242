"""Exact resume (reliability catalogue C1-C5, C7, C8, C10): a job killed with SIGKILL at any point, or paused, or
sent SIGTERM, continues with `resume_job` / `rft jobs resume` and ends with the same parameters and the same
per-step metrics as an uninterrupted run (CPU, fixed seed, tiny model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rft.errors import RftError
from rft.registry import Registry
from rft.train import loop
from rft.train.state import find_latest_state, verify_state

ROWS = [("What is 2 + 3?", "5"), ("What is 4 * 2?", "8"), ("What is 9 - 7?", "2"), ("What is 6 + 1?", "7")]
STEPS = 6  # 4 rows, 2 prompts per step: 2 steps per epoch, 3 epochs


def _write_job(tmp_path: Path, model_dir: Path, **rft_extra) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}], "answer": a}) + "\n" for q, a in ROWS))
    spec = {
        "model": str(model_dir), "training_file": str(data), "validation_file": str(data), "seed": 3,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": {"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}", "reference": "e",
                       "operation": "like"},
            "hyperparameters": {"batch_size": 2, "n_epochs": 3, "eval_interval": 3}}},
        "rft": {"sampling": {"n": 4, "max_new_tokens": 6}, "eval": {"max_items": 4},
                "algorithm": {"beta": 0.05, "num_iterations": 2},
                "optimizer": {"lr": 1e-3}, "train": {"dtype": "float32"},
                "checkpoint": {"state_interval": 1}, **rft_extra},
    }
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/") and "tokens_per_second" not in k and "latency" not in k} for r in rows]


def _final_params(run_dir: Path) -> dict:
    return load_file(str(Path(run_dir) / "checkpoints" / "final" / "model.safetensors"))


def _assert_same_run(a: Path, b: Path) -> None:
    ma, mb = _metrics(a), _metrics(b)
    assert [r["step"] for r in mb] == list(range(1, STEPS + 1))  # C7: no step skipped or repeated
    assert ma == mb  # per-step metrics (loss, reward, kl, lr, grad_norm ...) are bit-identical
    pa, pb = _final_params(a), _final_params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """The uninterrupted run, once for the module."""
    from rft.config import load_job

    tmp = tmp_path_factory.mktemp("ref")
    old = os.environ.get("RFT_HOME")
    os.environ["RFT_HOME"] = str(tmp / "home")
    try:
        job = load_job(_write_job(tmp, tiny_model_dir))
        res = loop.run_job(job, output_dir=str(tmp / "run"), log=lambda s: None)
    finally:
        if old is None:
            os.environ.pop("RFT_HOME", None)
        else:
            os.environ["RFT_HOME"] = old
    assert res["status"] == "succeeded"
    return tmp / "run"


def _train_subprocess(job: Path, run_dir: Path, env_extra: dict) -> subprocess.CompletedProcess:
    env = os.environ | env_extra
    return subprocess.run([sys.executable, "-m", "rft.cli.main", "train", str(job), "-o", str(run_dir), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("k", [1, 2, 3, STEPS - 1], ids=["first_step", "epoch_boundary", "eval_step", "last_but_one"])
def test_kill9_after_step_then_resume_equals_uninterrupted(k, tmp_path, tiny_model_dir, reference):
    """C1/C2/C7: SIGKILL after step k (at step 1, at an epoch boundary, at an evaluation, at N-1)."""
    job = _write_job(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    p = _train_subprocess(job, run, {"RFT_FAULT": f"after_step:{k}"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    job_id = json.loads((run / "job.json").read_text())["id"]
    row = Registry().get_job(job_id)
    assert row["status"] == "interrupted" and row["step"] == k  # not forever "running"
    res = loop.resume_job(job_id, log=lambda s: None)
    assert res["status"] == "succeeded"
    assert Registry().get_job(job_id)["status"] == "succeeded"
    _assert_same_run(reference, run)


def test_kill9_during_state_write_falls_back_to_previous_state(tmp_path, tiny_model_dir, reference):
    """C3 end to end: killed while writing the optimizer file of the step-4 state; resume uses step 3's."""
    job = _write_job(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    p = _train_subprocess(job, run, {"RFT_FAULT": "after_save_file:1", "RFT_FAULT_STEP": "4"})
    assert p.returncode == -signal.SIGKILL
    state_root = run / "checkpoints" / "state"
    assert (state_root / "step_000004.partial").exists()
    assert find_latest_state(state_root).name == "step_000003"
    res = loop.resume_job(json.loads((run / "job.json").read_text())["id"], log=lambda s: None)
    assert res["status"] == "succeeded"
    _assert_same_run(reference, run)


def test_pause_request_then_resume(tmp_path, tiny_model_dir, reference):
    """`rft jobs pause` from another process: the job saves at the step boundary and stops as paused."""
    from rft.config import load_job

    job = load_job(_write_job(tmp_path, tiny_model_dir))
    run = tmp_path / "run"
    seen = {}

    def progress(step, total, m):
        if step == 2 and "asked" not in seen:
            jid = json.loads((run / "job.json").read_text())["id"]
            Registry().request(jid, "pause")
            seen["asked"] = jid

    with pytest.raises(loop.JobStopped) as ei:
        loop.run_job(job, output_dir=str(run), log=lambda s: None, progress=progress)
    assert ei.value.status == "paused" and ei.value.exit_code == loop.EXIT_PAUSED
    jid = seen["asked"]
    assert Registry().get_job(jid)["status"] == "paused"
    assert find_latest_state(run / "checkpoints" / "state").name == "step_000002"
    loop.resume_job(jid, log=lambda s: None)
    _assert_same_run(reference, run)
    actions = [a["action"] for a in Registry().audit_log(jid)]
    assert actions == ["job.pause.request", "job.resume"]


def test_sigterm_saves_and_exits_with_distinct_code(tmp_path, tiny_model_dir, reference):
    """C10: SIGTERM during step 2 -> the state is saved at the end of that step, exit code 75, resume completes."""
    job = _write_job(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    p = _train_subprocess(job, run, {"RFT_FAULT": "after_step:1", "RFT_FAULT_SIGNAL": "TERM"})
    assert p.returncode == loop.EXIT_PAUSED, p.stderr[-2000:]
    assert "SIGTERM" in p.stderr
    jid = json.loads((run / "job.json").read_text())["id"]
    assert Registry().get_job(jid)["status"] == "paused"
    r = subprocess.run([sys.executable, "-m", "rft.cli.main", "jobs", "resume", jid, "-q"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same_run(reference, run)


def test_resume_refuses_changed_config_or_data_unless_allowed(tmp_path, tiny_model_dir):
    """C8: a changed learning rate or a changed training file is refused; --allow-config-change records the diff."""
    job = _write_job(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    p = _train_subprocess(job, run, {"RFT_FAULT": "after_step:2"})
    assert p.returncode == -signal.SIGKILL
    jid = json.loads((run / "job.json").read_text())["id"]
    with pytest.raises(RftError) as ei:
        loop.resume_job(jid, overrides=["rft.optimizer.lr=0.01"], log=lambda s: None)
    assert "optimizer.lr" in str(ei.value) and "--allow-config-change" in (ei.value.hint or "")
    data = tmp_path / "train.jsonl"
    data.write_text(data.read_text().replace('"5"', '"6"'))  # one character of the training data
    with pytest.raises(RftError) as ei:
        loop.resume_job(jid, log=lambda s: None)
    assert "training_file_sha256" in str(ei.value)
    res = loop.resume_job(jid, log=lambda s: None, allow_config_change=True)
    assert res["status"] == "succeeded"
    change = [a for a in Registry().audit_log(jid) if a["action"] == "job.resume.config_change"]
    assert len(change) == 1 and "training_file_sha256" in change[0]["detail"]["fingerprint"]


# ---------------------------------------------------------------------------- the save protocol alone
_WRITER = """
import sys, torch
from rft.train.state import save_state
torch.manual_seed(0)
m = torch.nn.Linear(4, 3)
opt = torch.optim.AdamW(m.parameters(), lr=0.1)
for step in (1, 2):
    m(torch.randn(2, 4)).sum().backward(); opt.step()
    save_state(sys.argv[1], step, model=m, opt=opt, trainer={"loop": {"step": step}}, keep=5)
"""


@pytest.mark.parametrize("point", ["after_save_file:0", "after_save_file:1", "after_save_file:2", "after_save_file:3",
                                   "before_manifest", "before_rename", "before_pointer_update"])
def test_kill_at_each_point_of_a_save_keeps_the_previous_state(point, tmp_path):
    """C3/C5: SIGKILL after each file of the step-2 save: the step-1 state is what resume finds, intact."""
    root = tmp_path / "state"
    p = subprocess.run([sys.executable, "-c", _WRITER, str(root)], env=os.environ | {"RFT_FAULT": point, "RFT_FAULT_STEP": "2"},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    latest = find_latest_state(root, warn=lambda s: None)
    assert latest is not None and latest.name == "step_000001"
    verify_state(latest)
    assert json.loads((root / "LATEST").read_text())["step"] == 1


def test_tampered_state_is_refused_and_resume_falls_back(tmp_path):
    """C4: truncating a file, flipping a byte or deleting the manifest fails verification; the older state is used."""
    root = tmp_path / "state"
    p = subprocess.run([sys.executable, "-c", _WRITER, str(root)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    newest = root / "step_000002"
    for damage in ("flip", "truncate", "no_manifest"):
        import shutil

        work = tmp_path / damage
        shutil.copytree(root, work)
        d = work / "step_000002"
        if damage == "flip":
            b = bytearray((d / "optimizer.safetensors").read_bytes())
            b[-1] ^= 1
            (d / "optimizer.safetensors").write_bytes(bytes(b))
        elif damage == "truncate":
            (d / "trainable.safetensors").write_bytes((d / "trainable.safetensors").read_bytes()[:-4])
        else:
            (d / "manifest.json").unlink()
        with pytest.raises(RftError):
            verify_state(d)
        warnings = []
        assert find_latest_state(work, warn=warnings.append).name == "step_000001"
        assert warnings and "step_000002" in warnings[-1]
    verify_state(newest)


def test_lora_pause_and_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    """C1 with a LoRA adapter: only the adapter and its optimizer state are saved; the resumed run's metrics and
    final (merged) weights equal the uninterrupted run's. The reference is the base model with the adapter off."""
    from rft.config import load_job

    job_file = _write_job(tmp_path, tiny_model_dir, lora={"enabled": True, "rank": 4, "alpha": 8})
    ref_run, run = tmp_path / "ref", tmp_path / "run"
    loop.run_job(load_job(job_file), output_dir=str(ref_run), log=lambda s: None)
    asked = {}

    def progress(step, total, m):
        if step == 3 and not asked:
            asked["id"] = json.loads((run / "job.json").read_text())["id"]
            Registry().request(asked["id"], "pause")

    with pytest.raises(loop.JobStopped):
        loop.run_job(load_job(job_file), output_dir=str(run), log=lambda s: None, progress=progress)
    from safetensors.torch import load_file as _load

    saved = _load(str(find_latest_state(run / "checkpoints" / "state") / "trainable.safetensors"))
    assert saved and all("lora_" in k for k in saved)  # the adapter only, not the base weights
    loop.resume_job(asked["id"], log=lambda s: None)
    _assert_same_run(ref_run, run)


def test_event_ids_stay_unique_across_a_resume(tmp_path, tiny_model_dir):
    from rft.config import load_job

    job_file = _write_job(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    asked = {}

    def progress(step, total, m):
        if step == 1 and not asked:
            asked["id"] = json.loads((run / "job.json").read_text())["id"]
            Registry().request(asked["id"], "pause")

    with pytest.raises(loop.JobStopped):
        loop.run_job(load_job(job_file), output_dir=str(run), log=lambda s: None, progress=progress)
    loop.resume_job(asked["id"], log=lambda s: None)
    ids = [json.loads(x)["id"] for x in (run / "events.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) and any("Resumed from" in x for x in (run / "events.jsonl").read_text().splitlines())


def test_dynamic_sampling_kill9_then_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    """Dynamic sampling draws extra prompts from the data cursor; a resume after SIGKILL continues after them."""
    from rft.config import load_job

    algo = {"algorithm": {"beta": 0.05, "num_iterations": 2, "dynamic_sampling": True, "max_extra_draws": 3}}
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref = loop.run_job(load_job(_write_job(ref_dir, tiny_model_dir, **algo)), output_dir=str(ref_dir / "run"),
                       log=lambda s: None)
    assert ref["status"] == "succeeded"
    ms = _metrics(ref_dir / "run")
    assert sum(m["dynamic_sampling/extra_prompts"] for m in ms) > 0  # the test exercises extra draws
    job = _write_job(tmp_path, tiny_model_dir, **algo)
    run = tmp_path / "run"
    p = _train_subprocess(job, run, {"RFT_FAULT": "after_step:3"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    job_id = json.loads((run / "job.json").read_text())["id"]
    assert loop.resume_job(job_id, log=lambda s: None)["status"] == "succeeded"
    _assert_same_run(ref_dir / "run", run)
