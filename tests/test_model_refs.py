"""Model references a user can get wrong, through the installed `rft` command: each is one line naming the
reference and what to do, exit 2, no traceback. And a job that fails validation (bad data, a reference answer
that fails its grader, a bad or unloadable model) is recorded in the registry as `failed` with that message,
never left looking active (which `rft jobs list` would show as interrupted).

Run: `.venv/bin/python -m pytest -q tests/test_model_refs.py`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from rft.registry import Registry
from tests.clitools import assert_user_error, run_rft


def _grader(tmp_path: Path) -> Path:
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
                             "reference": "{{item.answer}}", "operation": "eq"}))
    return g


def _model_variant(tiny: Path, tmp_path: Path, kind: str) -> str:
    d = tmp_path / kind
    if kind == "missing":
        return str(d)
    if kind == "file":
        d.write_text("not a model")
        return str(d)
    if kind == "empty":
        d.mkdir()
        return str(d)
    shutil.copytree(tiny, d)
    cfg = d / "config.json"
    if kind == "no_config":
        cfg.unlink()
    elif kind == "binary_config":
        cfg.write_bytes(b"\x00\x01\x02binary")
    elif kind == "list_config":
        cfg.write_text("[1, 2]")
    elif kind == "invalid_json_config":
        cfg.write_text('{"model_type": ')
    elif kind == "no_model_type":
        c = json.loads(cfg.read_text())
        del c["model_type"]
        cfg.write_text(json.dumps(c))
    return str(d)


REFS = {
    "missing": ("does not exist", "check the path"),
    "file": ("is a file; expected a model directory", "config.json"),
    "empty": ("is empty", "config.json"),
    "no_config": ("has no config.json", "Hugging Face model directory"),
    "binary_config": ("config.json", "looks binary"),
    "list_config": ("config.json", "must be an object"),
    "invalid_json_config": ("config.json", "not valid JSON"),
    "no_model_type": ("config.json has no model_type", '"model_type": "llama"'),
}


@pytest.mark.parametrize("kind", sorted(REFS))
def test_bad_model_directory(tiny_model_dir, tmp_path, kind):
    ref = _model_variant(tiny_model_dir, tmp_path, kind)
    r = run_rft("eval", ref, "--data", "builtin:arithmetic?n=4", "--grader", str(_grader(tmp_path)))
    assert_user_error(r, ref, *REFS[kind])
    assert len([x for x in r.stderr.splitlines() if x.startswith("error:")]) == 1


@pytest.mark.parametrize("ref,needles", [
    ("ckpt:ckpt-nope", ("no checkpoint 'ckpt-nope'", "rft checkpoints list")),
    ("alias:nope", ("no alias 'nope'", "rft promote")),
    ("someorg/some-model", ("'someorg/some-model' looks like a hub id", "huggingface-cli download")),
    ("not-a-model", ("model 'not-a-model' not found", "smollm2-135m-instruct")),
    ("m" * 300, ("is longer than the file system allows", "(300 characters)")),
])
def test_bad_model_reference(tmp_path, ref, needles):
    r = run_rft("eval", ref, "--data", "builtin:arithmetic?n=4", "--grader", str(_grader(tmp_path)))
    assert_user_error(r, *needles)


# ------------------------------------------------------------------------ failed validation is `failed`
def _job(tmp_path: Path, model: str, **over) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{a}+{a}?"}], "answer": str(2 * a)})
                            + "\n" for a in range(1, 5)))
    spec = {"model": model, "training_file": str(data), "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": {"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
                           "reference": "{{item.answer}}", "operation": "eq"},
                "hyperparameters": {"batch_size": 2}}},
            "rft": {"sampling": {"n": 2, "max_new_tokens": 4}, "train": {"max_steps": 1, "dtype": "float32"}}}
    for k, v in over.items():
        spec[k] = v
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _only_job() -> dict:
    jobs = Registry().list_jobs()
    assert len(jobs) == 1, jobs
    return jobs[0]


def _mismatched_model(tiny: Path, tmp_path: Path) -> str:
    """Passes every static check, but its weights do not fit its config: transformers refuses to load it."""
    d = tmp_path / "mismatched"
    shutil.copytree(tiny, d)
    c = json.loads((d / "config.json").read_text())
    c["hidden_size"] = 96
    (d / "config.json").write_text(json.dumps(c))
    return str(d)


@pytest.mark.parametrize("case", ["missing_training_file", "reference_fails_grader", "hub_model", "unloadable_model"])
def test_failed_validation_is_recorded_as_failed(tiny_model_dir, tmp_path, case):
    model = str(tiny_model_dir)
    over, extra, needles = {}, [], []
    if case == "missing_training_file":
        over["training_file"] = str(tmp_path / "nope.jsonl")
        needles = ["nope.jsonl", "not found"]
    elif case == "reference_fails_grader":
        extra = ["rft.train.reference_output=wrong"]
        needles = ["reference answer(s) fail the grader", "train.jsonl:1"]
    elif case == "hub_model":
        model = "someorg/some-model"
        needles = ["looks like a hub id"]
    else:
        model = _mismatched_model(tiny_model_dir, tmp_path)
        needles = ["cannot load the model from", "mismatched"]
    r = run_rft("train", str(_job(tmp_path, model, **over)), *extra, "-q")
    assert_user_error(r, *needles)
    rows = Registry().list_jobs()
    if rows:  # recorded: then as failed with the same message, not as an active (later "interrupted") job
        job = _only_job()
        assert job["status"] == "failed", job
        assert needles[0] in job["error"]["message"]


def test_resume_that_fails_validation_stays_failed(tiny_model_dir, tmp_path):
    r = run_rft("train", str(_job(tmp_path, str(tiny_model_dir))), "rft.train.reference_output=wrong", "-q")
    assert_user_error(r, "fail the grader")
    job = _only_job()
    r = run_rft("jobs", "resume", job["id"])
    assert_user_error(r, "fail the grader")
    after = Registry().get_job(job["id"])
    assert after["status"] == "failed" and "fail the grader" in after["error"]["message"]
