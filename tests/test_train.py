"""Training on a randomly initialised 4-layer Llama: parameters change, losses are finite, and a toy reward
rises (a wrong update sign makes it fall, so this test fails for a sign error)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from rft.config import parse_job
from rft.data import load_dataset
from rft.train import loop
from rft.train.setup import make_scheduler, setup_training
from rft.train.step import step_metrics, train_step
from rft.types import GradeResult


def _job(tmp_model, grader=None, **rft):
    # A random model writes no digits; "contains an 'e'" gives rewards with variance
    grader = grader or {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                        "reference": "y", "operation": "like"}
    raw = {
        "model": str(tmp_model),
        "training_file": "builtin:arithmetic",
        "validation_file": "builtin:arithmetic",
        "seed": 0,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": grader,
            "hyperparameters": {"batch_size": 2, "eval_interval": 2}}},
        "rft": {"extraction": {"pattern": "-?\\d+"}, "sampling": {"n": 4, "max_new_tokens": 8},
                "eval": {"max_items": 8}, "train": {"max_steps": 3, "dtype": "float32"}, **rft},
    }
    return parse_job(raw)


def test_three_steps_change_parameters_and_write_run_folder(tiny_model_dir, tmp_path):
    job = _job(tiny_model_dir, optimizer={"lr": 1e-3})
    before = {k: v.clone() for k, v in _load(tiny_model_dir).state_dict().items()}
    res = loop.run_job(job, output_dir=str(tmp_path / "run"), log=lambda s: None)
    assert res["status"] == "succeeded"
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert torch.isfinite(torch.tensor(r["loss"])) and torch.isfinite(torch.tensor(r["grad_norm"]))
        for key in ("reward", "reward_std", "frac_reward_zero_std", "unscored_frac", "kl", "entropy",
                    "clip_ratio/region_mean", "completions/mean_length", "completions/max_length",
                    "completions/clipped_ratio", "grad_norm", "lr", "time/sampling", "time/grading",
                    "time/training", "time/step", "tokens_per_second", "rewards/exact/mean"):
            assert key in r, key
    after = _load(tmp_path / "run" / "checkpoints" / "final").state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter changed after 3 steps"
    for name in ("resolved_config.yaml", "events.jsonl", "report.md", "report.json", "curves.png", "eval_final.json"):
        assert (tmp_path / "run" / name).exists(), name
    assert len(list((tmp_path / "run" / "samples").glob("step_*.jsonl"))) == 3
    events = [json.loads(x)["message"] for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events[0] == "Job created" and "successfully completed" in events[-1]
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    for k in ("baseline_eval", "final_eval", "train_seconds", "config_sha256", "training_file_sha256", "grader_sha256"):
        assert rep[k] is not None, k
    assert len(rep["evals"]) == 2  # step 2 and the final one


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)


@pytest.mark.parametrize("variant", [
    {"algorithm": {"advantage": "rloo", "loss": "dr_grpo", "beta": 0.1, "num_iterations": 2}},
    {"lora": {"enabled": True, "rank": 4, "alpha": 8}, "algorithm": {"beta": 0.05}},
])
def test_variants_run(tiny_model_dir, tmp_path, variant):
    job = _job(tiny_model_dir, optimizer={"lr": 1e-3, "grad_accumulation": 1}, **variant)
    job.rft.train.max_steps = 2
    job.rft.train.micro_batch_size = 3  # uneven micro-batches
    updates = []
    hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: updates.append(1))
    try:
        res = loop.run_job(job, output_dir=str(tmp_path / "run"), log=lambda s: None)
    finally:
        hook.remove()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert res["status"] == "succeeded" and len(rows) == 2
    assert all(r["kl"] >= 0 for r in rows)
    # num_iterations optimizer passes on every step that updates (tests/test_train_update.py checks KL, LoRA and
    # the passes step by step)
    updating = [r for r in rows if not r["skipped_update"] and not r["nonfinite"]]
    assert len(updates) == job.rft.algorithm.num_iterations * len(updating)


class VowelGrader:
    """Toy reward: the share of the completion's characters that are the letter 'e' (about 1/76 at random)."""

    name = "toy"
    sha256 = "toy"

    def grade(self, sample, item):
        t = sample["output_text"]
        return GradeResult(sum(ch == "e" for ch in t) / max(1, len(t)), name=self.name)

    def close(self):
        pass


def step_parts(job, *, grader=None, lr=None, total_steps=None):
    """The parts a training run would build for `job`, with a test's own grader, or a plain AdamW(lr) and schedule."""
    parts = setup_training(job)
    if grader is not None:
        parts.inputs.close()
        parts = dataclasses.replace(parts, inputs=dataclasses.replace(parts.inputs, grader=grader))
    if lr is not None:
        opt = torch.optim.AdamW(parts.params, lr=lr)
        parts = dataclasses.replace(parts, optimizer=opt,
                                    scheduler=make_scheduler(opt, job, total_steps or parts.values.total_steps))
    return parts


def _toy_run(tiny_model_dir, sign: float, steps: int = 12, lr: float = 1e-2) -> list[float]:
    job = _job(tiny_model_dir, optimizer={"lr": lr}, sampling={"n": 8, "max_new_tokens": 6})
    torch.manual_seed(0)
    grader = VowelGrader()
    if sign < 0:
        grader.grade = lambda s, i, g=VowelGrader().grade: GradeResult(1 - g(s, i).score, name="toy")
    parts = step_parts(job, grader=grader, lr=lr, total_steps=steps)
    assert parts.values.completions_per_prompt == 8
    ds = load_dataset("builtin:arithmetic", n=64)
    rewards = []
    for step in range(1, steps + 1):
        rows = [ds.rows[(step * 4 + k) % len(ds)] for k in range(4)]
        r = step_metrics(train_step(step, rows, parts), grader.name)["reward"]
        rewards.append(r if sign > 0 else 1 - r)  # always the share of 'e'/'a'
    return rewards


def test_toy_reward_rises(tiny_model_dir):
    up = _toy_run(tiny_model_dir, +1)
    down = _toy_run(tiny_model_dir, -1)
    first, last_up, last_down = sum(up[:3]) / 3, sum(up[-3:]) / 3, sum(down[-3:]) / 3
    assert last_up > first + 0.3, up  # measured: about 0.02 -> 0.9 in 12 steps
    # Rewarding the opposite must push the same quantity the other way: a sign error would swap these.
    assert last_down <= first and last_down < 0.05, (up, down)
