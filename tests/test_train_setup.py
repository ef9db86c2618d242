"""The shared training setup (`rft.train.setup`) and the typed values around the loop:

- `setup_training` builds AdamW with the job's betas and weight decay, and a reference without gradients in the
  compute dtype; `rft preflight` times its steps on exactly those parts;
- the resolved values are written as before (the same keys in the same order, so resolved_config.yaml and its
  sha256 do not change);
- the data cursor restores through its own method; the loop state round-trips through trainer_state.json.

Run: `.venv/bin/python -m pytest -q tests/test_train_setup.py`.
"""

from __future__ import annotations

import json

import pytest
import torch

from rft import preflight
from rft.config import config_sha256, parse_job, resolve, resolved_dict
from rft.train.cursor import DataCursor
from rft.train.setup import setup_training
from rft.train.state import LoopState

GRADER = {"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}", "reference": "e",
          "operation": "like"}


def _job(model_dir, **rft):
    rft = {"sampling": {"n": 2, "max_new_tokens": 4}, "train": {"max_steps": 3, "dtype": "float32"}, **rft}
    return parse_job({
        "model": str(model_dir), "training_file": "builtin:arithmetic", "seed": 0,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": GRADER, "hyperparameters": {"batch_size": 2}}},
        "rft": rft})


def _check_parts(parts, job):
    group = parts.optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.95) and group["weight_decay"] == 0.1
    assert group["lr"] == pytest.approx(parts.values.learning_rate)
    assert [id(p) for p in parts.params] == [id(p) for p in parts.model.parameters() if p.requires_grad]
    ref = parts.reference
    assert isinstance(ref, torch.nn.Module) and not ref.training
    assert all(not p.requires_grad for p in ref.parameters())  # a frozen reference: no gradients, no grad memory
    assert {p.dtype for p in ref.parameters()} == {parts.compute_dtype}
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), parts.model.parameters()))  # the base model


def test_setup_builds_the_optimizer_and_reference_the_job_names(tiny_model_dir):
    job = _job(tiny_model_dir, algorithm={"beta": 0.05}, optimizer={"betas": [0.8, 0.95], "weight_decay": 0.1})
    parts = setup_training(job)
    try:
        _check_parts(parts, job)
        assert parts.values == resolve(job, len(parts.inputs.train_ds))
    finally:
        parts.inputs.close()


def test_preflight_times_steps_on_the_training_setup(tiny_model_dir, monkeypatch):
    job = _job(tiny_model_dir, algorithm={"beta": 0.05}, optimizer={"betas": [0.8, 0.95], "weight_decay": 0.1})
    built = []
    real = preflight.setup_training
    monkeypatch.setattr(preflight, "setup_training", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    steps = []
    real_step = preflight.train_step
    monkeypatch.setattr(preflight, "train_step", lambda k, rows, parts: steps.append(parts) or real_step(k, rows, parts))
    rep = preflight.run_preflight(job, prompts=2, timing_steps=2, log=lambda s: None)
    assert len(built) == 1 and len(steps) == 2 and all(p is built[0] for p in steps)
    parts = built[0]
    group = parts.optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.95) and group["weight_decay"] == 0.1
    assert all(not p.requires_grad for p in parts.reference.parameters())
    assert rep["group_size"] == 2 and rep["prompts_sampled"] == 2 and len(rep["step"]["measured_seconds"]) == 2
    assert rep["forecast"]["total_steps"] == 3
    mem = rep["memory"]  # the memory forecast, checked before the model loaded; beta > 0: a reference copy
    assert mem["fits"] and mem["components"]["reference"] > 0 and mem["peak_bytes"] > mem["components"]["weights"]


def test_setup_applies_the_memory_settings(tiny_model_dir):
    """bf16 weights with an 8-bit optimizer (an exact fp32 master around it), gradient checkpointing on every
    layer, the engine's batch bounded by rft.train.rollout_batch_size; LoRA adapters stay fp32 on a bf16 base."""
    from rft.train.optim import SplitMaster

    job = _job(tiny_model_dir, train={"max_steps": 3, "weights_dtype": "bfloat16",
                                      "gradient_checkpointing": True, "rollout_batch_size": 4},
               optimizer={"name": "adamw_8bit"})
    parts = setup_training(job)
    try:
        assert {p.dtype for p in parts.model.parameters()} == {torch.bfloat16}
        assert parts.compute_dtype == torch.bfloat16  # bf16 weights compute in bf16 (rft.train.dtype only if set)
        assert isinstance(parts.optimizer, SplitMaster) and type(parts.optimizer.inner).__name__ == "Adam8bit"
        assert all(layer.gradient_checkpointing for layer in parts.model.model.layers)
        assert parts.engine.max_batch_size == 4
    finally:
        parts.inputs.close()
    job = _job(tiny_model_dir, train={"max_steps": 3, "dtype": "float32", "weights_dtype": "bfloat16"},
               lora={"enabled": True, "rank": 2})
    parts = setup_training(job)
    try:
        assert parts.params and {p.dtype for p in parts.params} == {torch.float32}
        assert torch.bfloat16 in {p.dtype for p in parts.model.parameters() if not p.requires_grad}
        assert isinstance(parts.optimizer, torch.optim.AdamW)
    finally:
        parts.inputs.close()


def test_resolved_values_are_written_in_the_old_order(tiny_model_dir):
    job = _job(tiny_model_dir)
    values = resolve(job, 101)
    old = {"prompts_per_step": 2, "completions_per_prompt": 2, "n_epochs": 1, "steps_per_epoch": 51,
           "total_steps": 3, "learning_rate": 2e-5, "eval_interval": 1, "eval_samples": values.eval_samples}
    d = resolved_dict(job, values)
    assert json.dumps(d["resolved"]) == json.dumps(old)  # same keys, same order, same types
    assert config_sha256(d) == config_sha256(job.model_dump(mode="json") | {"resolved": old})


def test_data_cursor_restores_through_its_own_method():
    a = DataCursor(5, seed=3)
    a.take(7)  # into the second epoch
    b = DataCursor(5, seed=3)
    assert b.restore(a.state()) and (b.epoch, b.pos) == (1, 2)
    assert b.take(6) == a.take(6)  # the same order from there on, across the next epoch boundary
    c = DataCursor(6, seed=3)
    assert not c.restore(a.state()) and (c.epoch, c.pos) == (0, 0)  # other data: the position does not apply


def test_loop_state_round_trips_and_reads_older_states():
    st = LoopState(step=4, t_train=1.5, trained_tokens=99, evals=[{"step": 2}], last={"loss": 0.1},
                   baseline={"accuracy": 0.5}, skipped_steps=1, nonfinite_streak=1)
    assert LoopState.from_dict(json.loads(json.dumps(st.as_dict()))) == st
    old = {"step": 2, "t_train": 1.0, "trained_tokens": 5, "evals": [], "last": {}, "baseline": None,
           "guard_baseline": None}  # saved before the non-finite counters existed
    assert LoopState.from_dict(old) == LoopState(step=2, t_train=1.0, trained_tokens=5)
