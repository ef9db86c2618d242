"""The grader path inside training: OpenAI grader JSON unchanged in a job, a hanging python grader costs one
timeout (the rest of the step is graded), and a run whose unscored share passes the limit stops clearly.
No wall-clock bounds: what a hang costs is counted in sandbox calls and their outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rft.config import load_job
from rft.errors import RftError
from rft.graders.sandbox import SandboxPool
from rft.train.loop import run_job

ROOT = Path(__file__).parents[1]


def _overrides(tiny_model_dir, *extra):
    return [f"model={tiny_model_dir}", "rft.train.max_steps=1", "rft.sampling.n=2", "rft.sampling.max_new_tokens=4",
            "rft.train.dtype=float32", "rft.eval.max_items=4",
            f"training_file={ROOT / 'examples/capitals/train.jsonl'}",
            f"validation_file={ROOT / 'examples/capitals/validation.jsonl'}", *extra]


def test_openai_multi_grader_job_runs_unchanged(tiny_model_dir, tmp_path):
    job = load_job(ROOT / "examples/openai_graders/job.json", _overrides(tiny_model_dir))
    res = run_job(job, output_dir=str(tmp_path / "run"), log=lambda s: None)
    assert res["status"] == "succeeded"
    m = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    # multi records each sub-grader's mean; every error flag's rate is a metric
    assert "rewards/exact/mean" in m and "rewards/similar/mean" in m
    # measured, not defaulted: any real grading call takes a positive time (no upper bound is asserted)
    assert m["rewards/exact/latency_mean"] > 0 and m["rewards/similar/latency_mean"] > 0
    assert m["rewards/capital check/latency_mean"] > 0
    assert m["errors/invalid_variable_error"] == 0.0


def test_hanging_python_grader_costs_one_timeout(tiny_model_dir, tmp_path, monkeypatch):
    grader = {"type": "python", "name": "sometimes_hangs", "source": (
        "def grade(sample, item):\n"
        "    if item['country'] == HANG:\n"
        "        while True:\n"
        "            pass\n"
        "    return 1.0 if item['capital'].lower() in sample['output_text'].lower() else 0.0\n")}
    data = [json.loads(x) for x in (ROOT / "examples/capitals/train.jsonl").read_text().splitlines()]
    hang = data[0]["country"]
    grader["source"] = f"HANG = {hang!r}\n" + grader["source"]
    job_path = tmp_path / "job.json"
    job = json.loads((ROOT / "examples/openai_graders/job.json").read_text())
    job["method"]["reinforcement"]["grader"] = grader
    job["method"]["reinforcement"]["hyperparameters"]["batch_size"] = len(data)  # every row in one step
    job["validation_file"] = None
    job_path.write_text(json.dumps(job))
    # the learnability check is off: it would grade (and time out on) its own sample before the step under test
    spec = load_job(job_path, _overrides(tiny_model_dir, "rft.sandbox.timeout_s=2", "rft.train.max_unscored_frac=1.0",
                                         "validation_file=null", "rft.learnability.enabled=false"))
    outcomes = []  # the status of every sandboxed call, in order
    real_run = SandboxPool.run

    def run(self, *a, **k):
        res = real_run(self, *a, **k)
        outcomes.append(res.status)
        return res

    monkeypatch.setattr(SandboxPool, "run", run)
    res = run_job(spec, output_dir=str(tmp_path / "run"), log=lambda s: None)
    m = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    samples = [json.loads(x) for x in (tmp_path / "run" / "samples" / "step_000001.jsonl").read_text().splitlines()]
    hung = [s for s in samples if s["error"]]
    assert res["status"] == "succeeded"
    assert len(hung) == 2 and all(s["error"] == "python_grader_server_error" for s in hung)  # the 2 samples of one row
    assert all(s["reward"] is not None for s in samples if not s["error"])
    assert m["unscored_frac"] == pytest.approx(2 / len(samples))
    # one timeout per hanging sample and no retry; every other sample graded once, and answered: the hang did
    # not take a worker the others needed (none of them timed out behind it)
    assert len(outcomes) == len(samples) and outcomes.count("timeout") == 2, outcomes
    assert outcomes.count("ok") == len(samples) - 2, outcomes


def test_unscored_limit_stops_the_run(tiny_model_dir, tmp_path):
    job = load_job(ROOT / "examples/capitals/job.yaml", _overrides(
        tiny_model_dir, 'method.reinforcement.grader.reference="{{item.no_such_field}}"', "rft.train.reference_output=null"))
    with pytest.raises(RftError, match="unscored.*invalid_variable_error"):
        run_job(job, output_dir=str(tmp_path / "run"), log=lambda s: None)
    job_obj = json.loads((tmp_path / "run" / "job.json").read_text())
    assert job_obj["status"] == "failed" and "unscored" in job_obj["error"]["message"]
