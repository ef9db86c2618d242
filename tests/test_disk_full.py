"""Catalogue C6: a full disk during a save, and rotation. A write that raises OSError(ENOSPC) part-way through a
model checkpoint or a training state leaves the last good one intact and no partial folder behind, and fails
with an error naming the path and the free space; the job stays resumable. Rotation keeps the newest complete
checkpoint/state and the best one; a best checkpoint whose folder was moved is cleared with a warning.

Run: `.venv/bin/python -m pytest -q tests/test_disk_full.py`.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rft.errors import RftError
from rft.models import ResolvedModel, load
from rft.train import checkpoint as ckpt_mod
from rft.train import state as state_mod
from rft.hashing import verify_checkpoint
from rft.train.checkpoint import save_model_checkpoint
from rft.train.state import find_latest_state, save_state, verify_state


def _full_disk_after(n_bytes: int = 100):
    """A save_file that writes a torn file, then fails as a full disk does."""

    def save(tensors, filename, *a, **k):
        Path(filename).write_bytes(b"\0" * n_bytes)
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    return save


@pytest.fixture()
def tiny(tiny_model_dir):
    model, tok = load(ResolvedModel(str(tiny_model_dir), tiny_model_dir, "directory"))
    return model, tok


def test_checkpoint_save_on_full_disk_keeps_the_last_good_one(tiny, tmp_path, monkeypatch):
    import transformers.modeling_utils as mu

    model, tok = tiny
    root = tmp_path / "checkpoints"
    save_model_checkpoint(model, tok, root / "step_000001", {"step": 1})
    save_model_checkpoint(model, tok, root / "final", {"step": 1})
    monkeypatch.setattr(mu, "safe_save_file", _full_disk_after())
    for name in ("step_000002", "final"):  # a new checkpoint, and a re-save over an existing one
        with pytest.raises(RftError) as ei:
            save_model_checkpoint(model, tok, root / name, {"step": 2})
        msg = str(ei.value)
        assert "no space left" in msg and str(root / name) in msg and "free" in msg, msg
    assert sorted(p.name for p in root.iterdir()) == ["final", "step_000001"]  # no partial folder
    verify_checkpoint(root / "step_000001")
    assert json.loads((root / "final" / "rft_checkpoint.json").read_text())["step"] == 1
    verify_checkpoint(root / "final")


def test_state_save_on_full_disk_keeps_latest_and_stays_resumable(tiny, tmp_path, monkeypatch):
    model, _ = tiny
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    root = tmp_path / "state"
    good = save_state(root, 1, model=model, opt=opt, trainer={"loop": {"step": 1}})
    real = state_mod.save_file
    calls = []

    def second_write_fails(t, f, *a, **k):
        calls.append(f)
        if len(calls) == 2:  # the optimizer file: one tensor file already written
            return _full_disk_after()(t, f)
        return real(t, f, *a, **k)

    monkeypatch.setattr(state_mod, "save_file", second_write_fails)
    with pytest.raises(RftError, match="no space left on the device to save the training state for step 2") as ei:
        save_state(root, 2, model=model, opt=opt, trainer={"loop": {"step": 2}})
    assert str(root / "step_000002") in str(ei.value) and "free" in str(ei.value)
    assert sorted(p.name for p in root.iterdir()) == ["LATEST", "step_000001"]
    assert json.loads((root / "LATEST").read_text())["dir"] == "step_000001"
    assert find_latest_state(root, warn=lambda s: None) == good
    verify_state(good)


def test_a_job_whose_state_save_hits_a_full_disk_fails_clearly_and_resumes(tiny_model_dir, tmp_path, monkeypatch):
    from rft.config import parse_job
    from rft.registry import Registry
    from rft.train import loop

    spec = {
        "model": str(tiny_model_dir), "training_file": "builtin:arithmetic", "seed": 0,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": {"type": "string_check", "name": "e", "input": "{{sample.output_text}}", "reference": "e",
                       "operation": "like"}, "hyperparameters": {"batch_size": 2}}},
        "rft": {"sampling": {"n": 2, "max_new_tokens": 4}, "train": {"max_steps": 3, "dtype": "float32"},
                "checkpoint": {"state_interval": 1}},
    }
    real = state_mod.save_file
    n = {"files": 0}

    def fail_in_second_state(t, f, *a, **k):
        n["files"] += 1
        if n["files"] == 4:  # the first file of the step-2 state
            return _full_disk_after()(t, f)
        return real(t, f, *a, **k)

    monkeypatch.setattr(state_mod, "save_file", fail_in_second_state)
    with pytest.raises(RftError, match="no space left"):
        loop.run_job(parse_job(spec), output_dir=str(tmp_path / "run"), log=lambda s: None)
    job = Registry().list_jobs()[0]
    assert job["status"] == "failed" and "no space left" in job["error"]["message"] and "free" in job["error"]["message"]
    states = tmp_path / "run" / "checkpoints" / "state"
    assert sorted(p.name for p in states.iterdir()) == ["LATEST", "step_000001"]
    monkeypatch.setattr(state_mod, "save_file", real)  # space freed
    res = loop.resume_job(job["id"], log=lambda s: None)
    assert res["status"] == "succeeded" and res["trained_steps"] == 3
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_state_rotation_keeps_the_newest_complete_and_latest(tiny, tmp_path):
    model, _ = tiny
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    root = tmp_path / "state"
    for s in (1, 2, 3):
        save_state(root, s, model=model, opt=opt, trainer={"loop": {"step": s}}, keep=5)
    (root / "step_000009").mkdir()  # a broken folder that sorts newest (no manifest)
    (root / "step_000009" / "trainable.safetensors").write_bytes(b"\0" * 8)
    state_mod._prune(root, 1)
    assert sorted(p.name for p in root.iterdir()) == ["LATEST", "step_000003", "step_000009"]
    assert find_latest_state(root, warn=lambda s: None) == root / "step_000003"


def _fake_ctx(tmp_path, keep_best: int):
    from rft.registry import Registry
    from rft.train.runlog import RunLog

    reg = Registry()
    run = RunLog(tmp_path / "run", "ftjob-rot")
    reg.create_job(run.job_id, spec={}, model="m", run_dir=str(run.dir))
    job = SimpleNamespace(rft=SimpleNamespace(checkpoint=SimpleNamespace(keep_best=keep_best)))
    return SimpleNamespace(reg=reg, run=run, job=job)


def _add(ctx, step: int, score: float) -> str:
    d = ctx.run.dir / "checkpoints" / f"step_{step:06d}"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{}")
    return ctx.reg.add_checkpoint(ctx.run.job_id, step, str(d), "x", val={"mean": score})


def test_checkpoint_rotation_keeps_newest_and_best_even_with_keep_best_zero(tmp_path):
    from rft.train.loop import _prune_checkpoints

    ctx = _fake_ctx(tmp_path, keep_best=0)
    ids = [_add(ctx, 1, 0.2), _add(ctx, 2, 0.9), _add(ctx, 3, 0.1), _add(ctx, 4, 0.3)]
    _prune_checkpoints(ctx)
    status = {c["id"]: c["status"] for c in ctx.reg.list_checkpoints(ctx.run.job_id)}
    assert [status[i] for i in ids] == ["pruned", "active", "pruned", "active"]  # best (step 2) and newest (4)
    assert not (ctx.run.dir / "checkpoints" / "step_000001").exists()
    assert (ctx.run.dir / "checkpoints" / "step_000002").exists()


def test_a_moved_best_checkpoint_is_cleared_with_a_warning(tmp_path):
    from rft.train.loop import _prune_checkpoints

    ctx = _fake_ctx(tmp_path, keep_best=1)
    ids = [_add(ctx, 1, 0.5), _add(ctx, 2, 0.9), _add(ctx, 3, 0.1)]
    shutil.move(str(ctx.run.dir / "checkpoints" / "step_000002"), str(tmp_path / "moved"))  # the best one
    _prune_checkpoints(ctx)  # does not crash
    status = {c["id"]: c["status"] for c in ctx.reg.list_checkpoints(ctx.run.job_id)}
    assert [status[i] for i in ids] == ["active", "missing", "active"]  # the next best (1) and the newest (3)
    assert (tmp_path / "moved" / "manifest.json").exists()  # nothing deleted at the new place
    events = [json.loads(x) for x in (ctx.run.dir / "events.jsonl").read_text().splitlines()]
    assert any(e["level"] == "warn" and "is gone" in e["message"] for e in events)


def test_an_interrupted_checkpoint_folder_is_never_loaded(tiny, tmp_path):
    """A folder left by a kill mid-save (weights written, manifest not) is refused as a model reference."""
    from rft.models import resolve

    model, tok = tiny
    save_model_checkpoint(model, tok, tmp_path / "final", {"step": 1})
    partial = tmp_path / "final.partial"
    shutil.copytree(tmp_path / "final", partial)
    (partial / "manifest.json").unlink()
    for d in (partial, shutil.copytree(partial, tmp_path / "renamed")):
        with pytest.raises(RftError, match="incomplete rft checkpoint"):
            resolve(str(d))
    assert resolve(str(tmp_path / "final")).kind == "checkpoint"
    assert verify_checkpoint(tmp_path / "final")
