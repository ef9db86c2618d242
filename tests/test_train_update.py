"""The policy update of one training step, on the randomly initialised tiny Llama, driven through
`train_step(step, rows, parts)` with the parts a real run builds (`setup_training`):

- rft.algorithm.num_iterations = n makes n optimizer passes per step (AdamW's step counter reaches n);
- beta > 0 gives a KL of 0 while the policy equals the reference and a positive one once it has moved, with a
  frozen copy as reference and with LoRA (the base model under `disable_adapter`);
- LoRA leaves every base weight bit-identical while the adapter changes;
- rft.optimizer.grad_accumulation = k splits the step into k micro-batches whose summed gradients give the
  single-batch update (up to float rounding).

Every group is made learnable (rewards 0, 1, 2, ... per group), so the update passes always run.
Run: `.venv/bin/python -m pytest -q tests/test_train_update.py`.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rft import algo
from rft.config import parse_job
from rft.data import load_dataset
from rft.train import step as step_mod
from rft.train.setup import make_scheduler, setup_training
from rft.train.step import train_step

GRADER = {"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}", "reference": "e",
          "operation": "like"}
REAL_ADVANTAGES = algo.compute_advantages


def _job(model_dir, *, batch_size=2, **rft):
    rft = {"sampling": {"n": 4, "max_new_tokens": 6}, "train": {"max_steps": 4, "dtype": "float32"},
           "algorithm": {"beta": 0.0}, **rft}
    return parse_job({
        "model": str(model_dir), "training_file": "builtin:arithmetic", "seed": 0,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": GRADER, "hyperparameters": {"batch_size": batch_size}}},
        "rft": rft})


@pytest.fixture
def learnable(monkeypatch):
    monkeypatch.setattr(algo, "compute_advantages", lambda name, r: REAL_ADVANTAGES(
        name, torch.arange(r.numel(), dtype=torch.float32).view_as(r)))


@pytest.fixture
def rows():
    return load_dataset("builtin:arithmetic", n=8).rows


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("iterations", [1, 2])
def test_num_iterations_makes_that_many_optimizer_passes(tiny_model_dir, learnable, rows, iterations):
    parts = setup_training(_job(tiny_model_dir, algorithm={"beta": 0.0, "num_iterations": iterations}))
    calls = []
    parts.optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))
    st = train_step(1, rows[:2], parts)
    assert len(calls) == iterations and st.update.updates == iterations and st.update.passes == iterations
    adam_steps = {float(s["step"]) for s in parts.optimizer.state.values()}
    assert adam_steps == {float(iterations)}, adam_steps  # every parameter took `iterations` AdamW steps
    st = train_step(2, rows[2:4], parts)
    assert len(calls) == 2 * iterations


@pytest.mark.parametrize("lora", [False, True], ids=["frozen_copy", "lora_disable_adapter"])
def test_beta_gives_a_positive_kl_once_the_policy_has_moved(tiny_model_dir, learnable, rows, lora):
    job = _job(tiny_model_dir, algorithm={"beta": 0.1}, optimizer={"lr": 1e-3},
               lora={"enabled": lora, "rank": 4, "alpha": 8})
    parts = setup_training(job)
    if lora:
        assert not isinstance(parts.reference, torch.nn.Module)  # the base model under disable_adapter
    else:
        assert all(not p.requires_grad for p in parts.reference.parameters())
    first = train_step(1, rows[:2], parts).update
    second = train_step(2, rows[2:4], parts).update
    assert first.kl < 1e-7, first.kl  # the policy still is the reference on the first pass of step 1
    assert second.kl > 1e-6, second.kl  # ... and has moved away from it after one update


def test_lora_leaves_base_weights_untouched_and_trains_the_adapter(tiny_model_dir, learnable, rows):
    job = _job(tiny_model_dir, lora={"enabled": True, "rank": 4, "alpha": 8}, optimizer={"lr": 1e-2})
    parts = setup_training(job)
    before = _weights(parts.model)
    base = [n for n in before if "lora_" not in n]
    adapter = [n for n in before if "lora_" in n]
    assert base and adapter
    for k in (1, 2):
        assert train_step(k, rows[2 * k - 2 : 2 * k], parts).update.updates == 1
    after = _weights(parts.model)
    changed_base = [n for n in base if not torch.equal(before[n], after[n])]
    assert not changed_base, changed_base[:5]  # bit for bit
    assert [n for n in adapter if not torch.equal(before[n], after[n])], "no adapter weight changed"


@pytest.mark.parametrize("k", [2, 4])
def test_grad_accumulation_gives_the_single_batch_update(tiny_model_dir, learnable, rows, monkeypatch, k):
    """4 prompts x 4 completions in one micro-batch, or in k; plain SGD, so the weight change is lr x gradient."""
    real = step_mod.micro_batch_loss
    micro = []
    monkeypatch.setattr(step_mod, "micro_batch_loss", lambda parts, sub, *a, **kw: (
        micro.append(sub.n_prompts), real(parts, sub, *a, **kw))[1])
    results = {}
    for acc in (1, k):
        job = _job(tiny_model_dir, batch_size=4, optimizer={"lr": 1.0, "grad_accumulation": acc, "grad_clip": 0.0})
        parts = setup_training(job)
        sgd = torch.optim.SGD(parts.params, lr=0.5)
        parts = dataclasses.replace(parts, optimizer=sgd, scheduler=make_scheduler(sgd, job, 4))
        before = _weights(parts.model)
        micro.clear()
        st = train_step(1, rows[:4], parts)
        after = _weights(parts.model)
        results[acc] = (st, {n: after[n] - before[n] for n in before}, list(micro))
    (st1, d1, mb1), (stk, dk, mbk) = results[1], results[k]
    assert mb1 == [4] and mbk == [4 // k] * k  # k micro-batches of whole groups, one optimizer step
    assert stk.update.updates == 1 and st1.update.updates == 1
    assert [c.token_ids for c in st1.completions] == [c.token_ids for c in stk.completions]  # the same rollouts
    assert any(d.abs().max() > 0 for d in d1.values())
    for n in d1:
        torch.testing.assert_close(dk[n], d1[n], rtol=1e-4, atol=1e-7, msg=n)
    assert stk.update.loss == pytest.approx(st1.update.loss, rel=1e-5, abs=1e-8)
    assert stk.update.grad_norm == pytest.approx(st1.update.grad_norm, rel=1e-5)
