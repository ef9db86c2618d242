"""A tiny training job for tests that run `rft train` on the random model: four "Say <colour>" rows (used for
training and validation), an exact-match grader, two completions of up to four tokens, float32."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def tiny_job_file(tmp_path: Path, model_dir: Path, *, eval_interval: int = 1, **rft) -> Path:
    """Write data.jsonl and job.yaml under `tmp_path`; `rft` entries are added to the job's `rft:` section. The
    gate's lower bound of -1 passes: a random model never says the word, so baseline and candidates all score 0."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say {w}"}], "answer": w}) + "\n"
                            for w in ("red", "blue", "green", "gold")))
    spec = {"model": str(model_dir), "training_file": str(data), "validation_file": str(data), "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                           "reference": "{{item.answer}}", "operation": "eq"},
                "hyperparameters": {"batch_size": 2, "n_epochs": 1, "eval_interval": eval_interval}}},
            "rft": {"sampling": {"n": 2, "max_new_tokens": 4}, "train": {"dtype": "float32"},
                    "gates": {"min_improvement": -1.0}, **rft}}
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def fuzzy_job_file(tmp_path: Path, model_dir: Path, *, lr: float, **rft) -> Path:
    """The tiny job with a grader that gives a random model varied rewards (fuzzy match), 2 epochs (4 steps),
    evaluation and state every 2 steps, 4 completions of up to 6 tokens at temperature 1, `lr`, 2 eval items;
    `rft` entries are added to the job's `rft:` section (the learnability check is off)."""
    p = tiny_job_file(tmp_path, model_dir, eval_interval=2, learnability={"enabled": False},
                      checkpoint={"state_interval": 2}, **rft)
    spec = yaml.safe_load(p.read_text())
    spec["method"]["reinforcement"]["grader"] = {
        "type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
        "evaluation_metric": "fuzzy_match"}
    spec["method"]["reinforcement"]["hyperparameters"]["n_epochs"] = 2
    spec["rft"]["sampling"] = {"n": 4, "max_new_tokens": 6, "temperature": 1.0}
    spec["rft"]["optimizer"] = {"lr": lr}
    spec["rft"]["eval"] = {"max_items": 2}
    p.write_text(yaml.safe_dump(spec))
    return p
