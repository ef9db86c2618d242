"""Every number in the job spec has a documented range and must be finite; out of range is one error that names
the key, the value and the range. Also the cross-field checks, the context-length check, the endpoint-grader
allowlist and the README's range table.

Run: .venv/bin/python -m pytest -q tests/test_config_ranges.py
"""

from __future__ import annotations

import copy
import json
import math

import pytest
from pydantic import BaseModel

from rft.config import MAX_SEED, JobSpec, apply_overrides, check_context_length, numeric_fields, ranges_table
from rft.errors import RftError
from rft.jobcheck import parse_job  # the full check every entry point runs (schema, names, grader, cross-field)

BASE = {"training_file": "builtin:arithmetic",
        "method": {"type": "reinforcement", "reinforcement": {"grader": {
            "type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}}}}


def _job(*overrides: str):
    return parse_job(apply_overrides(copy.deepcopy(BASE), list(overrides)), "job.yaml")


def _error(*overrides: str) -> str:
    with pytest.raises(RftError) as e:
        _job(*overrides)
    return str(e.value)


def _models(cls: type[BaseModel], seen: set) -> None:
    from rft.config import _members

    seen.add(cls)
    for f in cls.model_fields.values():
        for p in _members(f.annotation):
            if p[0] == "model" and p[1] not in seen:
                _models(p[1], seen)


def test_every_number_in_the_job_spec_has_both_bounds_and_must_be_finite():
    fields = numeric_fields()
    keys = {f.key for f in fields}
    # the walk reaches every section (a walk that found nothing would pass the loop below vacuously)
    for k in ("seed", "method.reinforcement.hyperparameters.batch_size", "rft.optimizer.betas",
              "rft.sampling.temperature", "rft.sandbox.memory_mb", "rft.gates.max_grader_error_rate",
              "rft.monitor.window", "rft.lora.dropout", "rft.checkpoint.keep_states"):
        assert k in keys, k
    unbounded = [f.key for f in fields if f.lo is None or f.hi is None]
    assert not unbounded, f"numbers without a lower and an upper bound: {unbounded}"
    models: set = set()
    _models(JobSpec, models)
    assert len(models) >= 14
    for m in models:
        assert m.model_config.get("allow_inf_nan") is False, f"{m.__name__} accepts NaN/inf"


def _set(key: str, value) -> dict:
    raw = copy.deepcopy(BASE)
    if key.startswith(("method.supervised.", "method.dpo.")):  # another method's fields need its type
        raw["method"] = {"type": key.split(".")[1]}
    cur = raw
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return raw


@pytest.mark.parametrize("r", numeric_fields(), ids=lambda r: r.key)
def test_every_number_refuses_nan_inf_and_both_sides_of_its_range(r):
    bad = [math.nan, math.inf, -math.inf, r.hi * 10 + 1 if r.hi > 0 else 1e9, r.lo - 1 if r.lo > -1 else -1e9]
    if r.hi_open is False and r.kind == "float":
        bad.append(float(r.hi) * (1 + 1e-9) + 1e-12)
    for v in bad:
        value = [v] * r.count if r.count > 1 else v
        with pytest.raises(RftError) as e:
            parse_job(_set(r.key, value), "job.yaml")
        assert r.key in str(e.value) and r.interval() in str(e.value), (v, str(e.value))
    # the bounds themselves (closed ones) and the default are accepted
    closed = [[x] * r.count if r.count > 1 else x for x, open_ in ((r.lo, r.lo_open), (r.hi, r.hi_open)) if not open_]
    for value in closed + [list(r.default) if isinstance(r.default, tuple) else r.default]:
        if r.key == "rft.sampling.n" or r.key.endswith("compute_multiplier") or r.key.endswith("batch_size") or \
                r.key.endswith("prompts_per_step"):
            continue  # bounded again by completions per step (test_completions_are_bounded)
        if r.key == "rft.algorithm.epsilon_high" and value is not None and value < 0.2:
            continue  # must also be >= epsilon
        parse_job(_set(r.key, value), "job.yaml")


@pytest.mark.parametrize("override, message", [
    ("rft.sampling.temperature=1e9", "field 'rft.sampling.temperature': must be in (0, 100], got 1e9"),
    ("rft.sampling.temperature=0", "field 'rft.sampling.temperature': must be in (0, 100], got 0"),
    ("rft.sampling.temperature=.nan", "field 'rft.sampling.temperature': must be a finite number in (0, 100], got nan"),
    ("rft.optimizer.lr=-inf", "field 'rft.optimizer.lr': must be a finite number in (0, 1], got -inf"),
    ("rft.optimizer.lr=2", "field 'rft.optimizer.lr': must be in (0, 1], got 2"),
    ("seed=4294967296", "field 'seed': must be in [0, 2**32 - 1], got 4294967296"),
    ("seed=-1", "field 'seed': must be in [0, 2**32 - 1], got -1"),
    ("seed=" + "9" * 400, "field 'seed': must be in [0, 2**32 - 1], got an integer of 400 digits"),
    ("rft.sampling.top_p=0", "field 'rft.sampling.top_p': must be in (0, 1], got 0"),
    ("rft.sampling.top_k=-1", "field 'rft.sampling.top_k': must be in [0, 1_000_000], got -1"),
    ("rft.sampling.max_new_tokens=100000", "field 'rft.sampling.max_new_tokens': must be in [1, 32768], got 100000"),
    ("rft.sampling.n=1", "field 'rft.sampling.n': must be in [2, 256], got 1"),
    ("rft.optimizer.betas=[0.9, 1.0]", "field 'rft.optimizer.betas.1': must be in [0, 1), got 1.0"),
    ("method.reinforcement.hyperparameters.batch_size=0",
     "field 'method.reinforcement.hyperparameters.batch_size': must be in [1, 4096] or \"auto\", got 0"),
    ("method.reinforcement.hyperparameters.n_epochs=1.5",
     "field 'method.reinforcement.hyperparameters.n_epochs': must be an integer in [1, 1000] or \"auto\", got 1.5"),
    ("method.reinforcement.hyperparameters.learning_rate_multiplier=0",
     "learning_rate_multiplier': must be in (0, 10] or \"auto\", got 0"),
    ("rft.algorithm.epsilon=0", "field 'rft.algorithm.epsilon': must be in (0, 1], got 0"),
    ("rft.algorithm.num_iterations=65", "field 'rft.algorithm.num_iterations': must be in [1, 64], got 65"),
    ("rft.train.max_unscored_frac=1.5", "field 'rft.train.max_unscored_frac': must be in [0, 1], got 1.5"),
    ("rft.sandbox.memory_mb=1", "field 'rft.sandbox.memory_mb': must be in [64, 1_048_576], got 1"),
    ("rft.sandbox.timeout_s=.inf", "field 'rft.sandbox.timeout_s': must be a finite number in (0, 86400], got inf"),
    ("rft.gates.max_grader_error_rate=2", "field 'rft.gates.max_grader_error_rate': must be in [0, 1] or null, got 2"),
    ("rft.monitor.zero_std_frac=0", "field 'rft.monitor.zero_std_frac': must be in (0, 1], got 0"),
    ("rft.eval.max_new_tokens=0", "field 'rft.eval.max_new_tokens': must be in [1, 32768] or null, got 0"),
    ("rft.sampling.temperature=hot", "field 'rft.sampling.temperature': must be a number in (0, 100], got hot"),
])
def test_out_of_range_messages(override, message):
    text = _error(override)
    assert message in text, text
    assert len(text.splitlines()) == 2  # the headline and one problem: a union member does not repeat it


def test_greedy_eval_temperature_and_range_edges_are_accepted():
    job = _job("rft.eval.temperature=0", "rft.sampling.temperature=100", "rft.sampling.top_p=1", f"seed={MAX_SEED}",
               "rft.sampling.max_new_tokens=32768", "rft.optimizer.betas=[0, 0.999]")
    assert job.seed == MAX_SEED and job.rft.eval.temperature == 0


def test_cross_field_checks():
    assert "field 'rft.algorithm.epsilon_high': must be >= rft.algorithm.epsilon (0.3), got 0.2" in \
        _error("rft.algorithm.epsilon=0.3", "rft.algorithm.epsilon_high=0.2")
    _job("rft.algorithm.epsilon=0.2", "rft.algorithm.epsilon_high=0.28")
    assert "learning rate" in _error("rft.optimizer.lr=0.5",
                                     "method.reinforcement.hyperparameters.learning_rate_multiplier=4")


def test_completions_are_bounded():
    text = _error("rft.sampling.n=64", "method.reinforcement.hyperparameters.compute_multiplier=8")
    assert "compute_multiplier" in text and "= 512 must be at most 256" in text
    text = _error("rft.sampling.n=256", "method.reinforcement.hyperparameters.batch_size=128")
    assert "batch_size" in text and "128 prompts x 256 completions = 32768" in text
    text = _error("rft.sampling.n=16", "rft.train.prompts_per_step=2048")
    assert "rft.train.prompts_per_step" in text
    _job("rft.sampling.n=256", "rft.train.prompts_per_step=64")


def test_check_context_length():
    job = _job("rft.sampling.max_new_tokens=2048", "rft.eval.max_new_tokens=512")
    check_context_length(job, 4096)
    with pytest.raises(RftError) as e:
        check_context_length(job, 2048, "job.yaml")
    text = str(e.value)
    assert "context length (2048 tokens)" in text and "field 'rft.sampling.max_new_tokens'" in text
    assert "rft.eval.max_new_tokens" not in text
    with pytest.raises(RftError, match="rft.eval.max_new_tokens"):
        check_context_length(job, 500)


def test_network_allowlist_entries_are_validated():
    job = _job("rft.network.allow_private_hosts=[localhost, 10.0.0.0/8, '::1', 192.168.1.5, grader.internal, "
               "'fd00::/8']")
    assert job.rft.network.allow_private_hosts[1] == "10.0.0.0/8"
    assert _job().rft.network.allow_private_hosts == []
    for bad in ("'a b'", "'10.0.0.0/33'", "'http://x'", "''", "'-bad-.host'", "'x' * 300"):
        text = _error(f"rft.network.allow_private_hosts=[{bad}]")
        assert "rft.network.allow_private_hosts" in text, (bad, text)
    assert "not an IP address" in _error("rft.network.allow_private_hosts=['a b']")


def test_ranges_table_lists_every_number():
    table = ranges_table()
    lines = table.splitlines()
    assert lines[0] == "| key | type | range | default |"
    for r in numeric_fields():
        assert f"| `{r.key}` |" in table
    assert "| `rft.sampling.temperature` | number | (0, 100] | 1.0 |" in table
    assert "| `method.reinforcement.hyperparameters.batch_size` | integer | [1, 4096] or \"auto\" | \"auto\" |" in table


def test_out_of_range_through_the_cli(tmp_path):
    from tests.clitools import assert_user_error, run_rft

    p = tmp_path / "job.json"
    p.write_text(json.dumps(BASE))
    r = run_rft("train", str(p), "rft.sampling.temperature=1e9", "seed=-1", "rft.optimizer.lr=.nan")
    assert_user_error(r, f"invalid job spec {p}", "field 'rft.sampling.temperature': must be in (0, 100], got 1e9",
                      "field 'seed': must be in [0, 2**32 - 1], got -1",
                      "field 'rft.optimizer.lr': must be a finite number in (0, 1], got nan")
    assert not (tmp_path / "runs").exists()
