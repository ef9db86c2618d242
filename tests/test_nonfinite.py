"""Catalogue N1: a non-finite loss or gradient. A hook makes the loss NaN at step k, then Inf on the following
steps. A non-finite step skips optimizer.step() (weights and AdamW state bit-identical), is logged with
`nonfinite` and the running `skipped_steps`, and still counts (step counter, LR schedule and data cursor
advance); rft.train.max_nonfinite_steps in a row stop the run with an error and the checkpoints stay intact. The logged
grad_norm is the pre-clip norm; the applied gradient's norm is <= grad_clip.

Run: `.venv/bin/python -m pytest -q tests/test_nonfinite.py`.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from rft import algo
from rft.config import parse_job
from rft.data import load_dataset
from rft.errors import RftError
from rft.train import loop
from rft.hashing import verify_checkpoint
from rft.train.setup import make_scheduler, setup_training
from rft.train.step import step_metrics

GRADER = {"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}", "reference": "e",
          "operation": "like"}


def _job(model_dir, *, steps=4, **rft):
    raw = {
        "model": str(model_dir), "training_file": "builtin:arithmetic", "validation_file": "builtin:arithmetic",
        "seed": 0,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": GRADER, "hyperparameters": {"batch_size": 2, "eval_interval": 1}}},
        "rft": {"sampling": {"n": 4, "max_new_tokens": 6}, "algorithm": {"beta": 0.05},
                "eval": {"max_items": 2, "baseline": False}, "train": {"max_steps": steps, "dtype": "float32"},
                "checkpoint": {"state_interval": 1}, **rft},
    }
    return parse_job(raw)


class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite backward: a finite loss whose gradient is not finite."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


REAL_ADVANTAGES = algo.compute_advantages


def _all_learnable(monkeypatch):
    """Rewards 0, 1, 2, ... in every group: every group has variance, so the update passes always run."""
    monkeypatch.setattr(algo, "compute_advantages", lambda name, r: REAL_ADVANTAGES(
        name, torch.arange(r.numel(), dtype=torch.float32).view_as(r)))


def _inject(monkeypatch, bad: dict):
    """At step s, make the loss bad[s] times itself (NaN or Inf), or ("grad") keep the loss and make its gradient
    infinite, by wrapping the registered policy loss."""
    current = {"step": 0}
    real_step, real_loss = loop.train_step, algo.policy_loss

    def step(s, *a, **k):
        current["step"] = s
        return real_step(s, *a, **k)

    def loss(*a, **k):
        out = real_loss(*a, **k)
        b = bad.get(current["step"])
        if b == "grad":
            return dataclasses.replace(out, loss=_InfGrad.apply(out.loss))
        if b is not None:  # keeps the graph: backward gives non-finite gradients too
            return dataclasses.replace(out, loss=out.loss * b)
        return out

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(algo, "policy_loss", loss)


def _setup(job):
    """The parts a run builds, with a plain AdamW(lr) and a 10-step schedule."""
    torch.manual_seed(0)
    parts = setup_training(job)
    opt = torch.optim.AdamW(parts.params, lr=job.rft.optimizer.lr)
    return dataclasses.replace(parts, optimizer=opt, scheduler=make_scheduler(opt, job, 10))


def _snapshot(model, opt):
    w = {k: v.detach().clone() for k, v in model.state_dict().items()}
    o = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()} for p, st in opt.state.items()}
    return w, o


def _same(a, b) -> bool:
    (wa, oa), (wb, ob) = a, b
    return (wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and oa.keys() == ob.keys()
            and all(oa[p].keys() == ob[p].keys() and all(torch.equal(torch.as_tensor(oa[p][k]), torch.as_tensor(ob[p][k]))
                                                          for k in oa[p]) for p in oa))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "grad"])
def test_nonfinite_step_leaves_weights_and_optimizer_bit_identical(tiny_model_dir, monkeypatch, bad):
    job = _job(tiny_model_dir, optimizer={"lr": 1e-2, "warmup_steps": 4})
    job.rft.algorithm.beta = 0.0  # no reference model in this direct call
    parts = _setup(job)
    model, opt, params, sched = parts.model, parts.optimizer, parts.params, parts.scheduler
    rows = load_dataset("builtin:arithmetic", n=8).rows
    _all_learnable(monkeypatch)
    first = loop.train_step(1, rows[:2], parts)  # a real update: AdamW now has moments to compare
    assert not step_metrics(first, "has_e")["nonfinite"] and first.nonfinite is None
    before = _snapshot(model, opt)
    assert before[1], "the optimizer has state after a real step"
    _inject(monkeypatch, {2: bad})
    calls = []
    monkeypatch.setattr(opt, "step", lambda *a, **k: calls.append(1))
    res = loop.train_step(2, rows[2:4], parts)
    metrics = step_metrics(res, "has_e")
    assert res.nonfinite and metrics["nonfinite"] is True
    assert ("gradient norm" if bad == "grad" else "loss is") in res.nonfinite
    assert calls == [], "optimizer.step() must not run on a non-finite step"
    assert _same(before, _snapshot(model, opt)), "weights or optimizer state changed on a skipped step"
    assert all(p.grad is None for p in params), "no non-finite gradient is left behind"
    # Policy: the step counts; the LR schedule is a function of the step number, not of the updates applied.
    assert metrics["lr"] == pytest.approx(job.rft.optimizer.lr * sched.factor(2)) and sched.factor(2) == 0.5


def test_logged_grad_norm_is_pre_clip_and_applied_norm_is_clipped(tiny_model_dir, monkeypatch):
    job = _job(tiny_model_dir, optimizer={"lr": 1e-3, "grad_clip": 1e-4})
    job.rft.algorithm.beta = 0.0
    parts = _setup(job)
    params, opt = parts.params, parts.optimizer
    applied, computed = [], []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(ps, max_norm, *a, **k):
        ps = list(ps)
        computed.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ps if p.grad is not None]))))
        return real_clip(ps, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    opt.register_step_pre_hook(lambda o, a, k: applied.append(
        float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))))
    _all_learnable(monkeypatch)
    res = loop.train_step(1, load_dataset("builtin:arithmetic", n=4).rows[:2], parts)
    gn = step_metrics(res, "has_e")["grad_norm"]
    assert gn == pytest.approx(computed[0], rel=1e-5) and gn > 1e-4  # the norm before clipping
    assert applied and applied[0] <= 1e-4 * (1 + 1e-4)  # what the optimizer saw was clipped


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_one_nan_step_is_skipped_and_the_run_finishes(tiny_model_dir, tmp_path, monkeypatch):
    _inject(monkeypatch, {2: float("nan")})
    res = loop.run_job(_job(tiny_model_dir, steps=3, eval={"max_items": 2, "baseline": False, "final": False}),
                       output_dir=str(tmp_path / "run"), log=lambda s: None)
    rows = _rows(tmp_path / "run")
    assert res["status"] == "succeeded" and res["skipped_steps"] == 1
    assert [r["step"] for r in rows] == [1, 2, 3]  # the step counter advances past the skipped step
    assert [r["nonfinite"] for r in rows] == [False, True, False]
    assert [r["skipped_steps"] for r in rows] == [0, 1, 1]
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert any(e["level"] == "warn" and "update was skipped" in e["message"] for e in events)


def test_consecutive_nonfinite_steps_stop_the_run_and_keep_checkpoints(tiny_model_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from rft.registry import Registry

    from rft.config import TrainConfig

    assert TrainConfig().max_nonfinite_steps == 3
    _inject(monkeypatch, {2: float("nan"), 3: float("inf"), 4: "grad", 5: float("inf")})
    with pytest.raises(RftError, match="3 consecutive steps had a non-finite loss or gradient") as ei:
        loop.run_job(_job(tiny_model_dir, steps=6), output_dir=str(tmp_path / "run"), log=lambda s: None)
    run = tmp_path / "run"
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and [r["skipped_steps"] for r in rows] == [0, 1, 2, 3]
    jobs = Registry().list_jobs()
    assert jobs[0]["status"] == "failed" and "consecutive" in jobs[0]["error"]["message"]
    cks = Registry().list_checkpoints(jobs[0]["id"])
    assert [c["step"] for c in cks] == [1, 2, 3]  # saved at each evaluation; none at the aborting step 4
    active = [c for c in cks if c["status"] == "active"]
    assert [c["step"] for c in active] == [2, 3]  # keep_best=2 plus the newest
    for c in active:
        verify_checkpoint(c["path"])
    # Steps 2 and 3 were skipped: both checkpoints hold exactly the weights after step 1.
    w2, w3 = (load_file(f"{c['path']}/model.safetensors") for c in active)
    assert all(torch.equal(w2[k], w3[k]) for k in w2)
    assert not list(run.rglob("*.partial"))
    assert "rft jobs resume" in str(ei.value)
