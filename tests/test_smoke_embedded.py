"""One end-to-end smoke test on the real embedded model (SmolLM2-135M-Instruct): load, one training step,
one evaluation. Runs in CI (about half a minute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rft.config import load_job
from rft.train.loop import run_job

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_embedded_model_one_step_and_eval(tmp_path):
    job = load_job(ROOT / "examples" / "quickstart.yaml", [
        "rft.train.max_steps=1", "method.reinforcement.hyperparameters.batch_size=2", "rft.sampling.n=4",
        "rft.sampling.max_new_tokens=16", "rft.eval.max_items=16",
    ])
    res = run_job(job, output_dir=str(tmp_path / "run"), log=lambda s: None)
    assert res["status"] == "succeeded"
    assert res["baseline_eval"]["n"] == 16 and res["final_eval"]["n"] == 16
    # The embedded model is a real instruct model: it gets a fair share of single-digit sums right.
    assert res["baseline_eval"]["accuracy"] >= 0.25, res["baseline_eval"]
    m = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert m["step"] == 1 and m["completions/mean_length"] > 0
    ckpt = Path(res["paths"]["checkpoint"])
    assert (ckpt / "model.safetensors").exists() and (ckpt / "manifest.json").exists()


def test_own_jsonl_files_train_and_report(tiny_model_dir, tmp_path):
    """rft train on user JSONL files with a string_check grader (capitals example, tiny model for speed)."""
    job = load_job(ROOT / "examples" / "capitals" / "job.yaml", [
        f"model={tiny_model_dir}", "rft.train.max_steps=2", "rft.sampling.n=4", "rft.sampling.max_new_tokens=8",
        f"training_file={ROOT / 'examples' / 'capitals' / 'train.jsonl'}",
        f"validation_file={ROOT / 'examples' / 'capitals' / 'validation.jsonl'}",
    ])
    res = run_job(job, output_dir=str(tmp_path / "run"), log=lambda s: None)
    assert res["status"] == "succeeded" and res["final_eval"]["n"] == 10
    assert res["training_file_sha256"] and (tmp_path / "run" / "report.md").exists()
