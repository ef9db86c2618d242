"""The command line: bad input gives a clear message and exit code 2, never a traceback.

Every case runs the installed `rft` console script (tests/clitools.py), as a user types it. Usage errors and
hostile files have their own files: test_cli_frontdoor.py, test_cli_files.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.clitools import assert_user_error, run_rft

GOOD_GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.extracted}}",
               "reference": "{{item.answer}}", "operation": "eq"}


def run(*args, cwd=None):
    return run_rft(*[str(a) for a in args], cwd=cwd)


def _job(tmp_path: Path, **over) -> Path:
    job = {"model": "smollm2-135m-instruct", "training_file": "builtin:arithmetic",
           "method": {"type": "reinforcement", "reinforcement": {"grader": GOOD_GRADER}}}
    job.update(over)
    p = tmp_path / "job.json"
    p.write_text(json.dumps(job))
    return p


def _assert_user_error(r, *needles):
    assert_user_error(r, *needles)
    assert r.stderr.startswith("error: "), r.stderr  # the message, on stderr, first


def test_missing_job_file(tmp_path):
    _assert_user_error(run("train", str(tmp_path / "nope.yaml")), "nope.yaml", "not found")


def test_unknown_config_key_with_did_you_mean(tmp_path):
    p = _job(tmp_path)
    _assert_user_error(run("train", str(p), "rft.sampling.temprature=0.5"), "temprature", "did you mean 'temperature'")
    raw = json.loads(p.read_text())
    raw["valdation_file"] = "x"
    p.write_text(json.dumps(raw))
    _assert_user_error(run("train", str(p)), "valdation_file", "validation_file")


def test_unknown_grader_type(tmp_path):
    p = _job(tmp_path, method={"type": "reinforcement", "reinforcement": {"grader": {"type": "string_chek"}}})
    _assert_user_error(run("train", str(p)), "unknown grader type 'string_chek'", "string_check")


def test_invalid_jsonl_names_line_and_field(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}], "answer": "1"}\n{not json}\n{"answer": 2}\n')
    r = run("data", "validate", str(data))
    _assert_user_error(r, "train.jsonl:2", "train.jsonl:3", "messages")
    p = _job(tmp_path, training_file=str(data))
    _assert_user_error(run("train", str(p)), "train.jsonl:2")


def test_missing_data_file(tmp_path):
    p = _job(tmp_path, training_file=str(tmp_path / "missing.jsonl"))
    _assert_user_error(run("train", str(p)), "missing.jsonl", "training data not found")
    assert json.loads(run("jobs", "list", "--json").stdout) == []  # refused before the job was recorded


def test_model_reference_that_does_not_exist(tmp_path):
    # the wording is rft.models' (tested there); here: exit 2, no traceback, the reference named
    p = _job(tmp_path, model="meta-llama/Llama-3-8B")
    _assert_user_error(run("train", str(p), "rft.train.max_steps=1"), "meta-llama/Llama-3-8B")
    p = _job(tmp_path, model=str(tmp_path / "no_such_model"))
    _assert_user_error(run("train", str(p), "rft.train.max_steps=1"), "no_such_model")


def test_bad_override_syntax(tmp_path):
    _assert_user_error(run("train", str(_job(tmp_path)), "justakey"), "key=value")


def test_data_validate_ok_and_json(tmp_path):
    data = tmp_path / "ok.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}], "answer": "1"}\n')
    r = run("data", "validate", str(data), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == 1


def test_models_list_json():
    r = run("models", "list", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)[0]["id"] == "smollm2-135m-instruct"


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for c in ("train", "demo", "eval", "models", "data", "grader"):
        assert f"\n  {c} " in r.stdout


def _tiny_job(tmp_path, tiny_model_dir) -> Path:
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps({
        "model": str(tiny_model_dir), "training_file": "builtin:arithmetic", "validation_file": "builtin:arithmetic",
        "method": {"type": "reinforcement", "reinforcement": {"grader": GOOD_GRADER}},
        "rft": {"extraction": {"pattern": "-?\\d+"}, "sampling": {"n": 2, "max_new_tokens": 4},
                "eval": {"max_items": 4}, "train": {"max_steps": 1, "dtype": "float32"}},
    }))
    return p


def test_train_json_prints_the_job_object(tmp_path, tiny_model_dir):
    r = run("train", str(_tiny_job(tmp_path, tiny_model_dir)), "--json", "--output-dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["object"] == "fine_tuning.job" and job["status"] == "succeeded"
    for k in ("id", "model", "created_at", "finished_at", "hyperparameters", "trained_tokens", "training_file",
              "validation_file", "seed", "result_files", "run_dir", "baseline_eval", "final_eval", "fine_tuned_model"):
        assert k in job, k
    assert job["run_dir"] == str(tmp_path / "run")


def test_eval_command_on_a_checkpoint(tmp_path, tiny_model_dir):
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(GOOD_GRADER))
    r = run("eval", str(tiny_model_dir), "--data", "builtin:arithmetic", "--grader", str(grader), "--limit", "6",
            "--extract", "-?\\d+", "--max-new-tokens", "4", "--n", "2", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["n"] == 6 and 0 <= rep["accuracy"] <= 1 and set(rep["pass_at_k"]) == {"1", "2"}


def test_grader_validate_and_run(tmp_path):
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"type": "string_check", "name": "s", "input": "{{sample.output_text}}",
                             "reference": "{{item.answer}}", "operation": "ilike"}))
    assert run("grader", "validate", str(g)).returncode == 0
    r = run("grader", "run", str(g), "--sample", "The answer is ABC", "--item", '{"answer": "abc"}')
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["reward"] == 1.0 and out["metadata"]["type"] == "string_check"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "multi", "graders": {"a": GOOD_GRADER}, "calculate_output": "a +* 2"}))
    _assert_user_error(run("grader", "validate", str(bad)), "calculate_output")
