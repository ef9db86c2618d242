"""Job spec parsing, OpenAI hyperparameter mapping, overrides and the resolved-config hash."""

from __future__ import annotations

import pytest

from rft.config import apply_overrides, config_sha256, load_job, parse_job, resolve, resolved_dict
from rft.errors import RftError

BASE = {"training_file": "builtin:arithmetic",
        "method": {"type": "reinforcement", "reinforcement": {"grader": {
            "type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}}}}


def _raw(**kw):
    import copy

    r = copy.deepcopy(BASE)
    r.update(kw)
    return r


def test_auto_hyperparameters_resolve_to_concrete_values():
    job = parse_job(_raw())
    d = resolve(job, n_train_rows=100)
    assert d["prompts_per_step"] == 2 and d["n_epochs"] == 1 and d["total_steps"] == 50
    assert d["learning_rate"] == pytest.approx(2e-5) and d["completions_per_prompt"] == 8
    assert d["eval_interval"] == 12


def test_openai_hyperparameters_map():
    raw = _raw()
    raw["method"]["reinforcement"]["hyperparameters"] = {
        "batch_size": 4, "n_epochs": 2, "learning_rate_multiplier": 0.5, "eval_interval": 5, "eval_samples": 3,
        "compute_multiplier": 2.0}
    d = resolve(parse_job(raw), n_train_rows=10)
    assert d == {"prompts_per_step": 4, "completions_per_prompt": 16, "n_epochs": 2, "steps_per_epoch": 3,
                 "total_steps": 6, "learning_rate": pytest.approx(1e-5), "eval_interval": 5, "eval_samples": 3}


def test_unknown_keys_everywhere_are_errors():
    with pytest.raises(RftError) as e:
        parse_job(_raw(rft={"sampling": {"temprature": 1.0}, "optimiser": {}}))
    text = str(e.value)
    assert "did you mean 'temperature'" in text and "did you mean 'optimizer'" in text
    with pytest.raises(RftError, match="batch_sise"):
        raw = _raw()
        raw["method"]["reinforcement"]["hyperparameters"] = {"batch_sise": 3}
        parse_job(raw)


def test_bad_values_and_algorithm_names():
    with pytest.raises(RftError, match="rft.algorithm.loss"):
        parse_job(_raw(rft={"algorithm": {"loss": "ppo"}}))
    with pytest.raises(RftError, match="rft.sampling.n"):
        parse_job(_raw(rft={"sampling": {"n": 1}}))
    with pytest.raises(RftError, match="suffix"):
        parse_job(_raw(suffix="x" * 65))


def test_overrides_and_hash(tmp_path):
    import json

    p = tmp_path / "job.json"
    p.write_text(json.dumps(BASE))
    job = load_job(p, ["rft.sampling.temperature=0.5", "seed=7", 'rft.sampling.stop=["\\n"]'])
    assert job.rft.sampling.temperature == 0.5 and job.seed == 7 and job.rft.sampling.stop == ["\n"]
    h1 = config_sha256(resolved_dict(job, resolve(job, 10)))
    h2 = config_sha256(resolved_dict(load_job(p, ["rft.sampling.temperature=0.5", "seed=7", 'rft.sampling.stop=["\\n"]']), resolve(job, 10)))
    h3 = config_sha256(resolved_dict(load_job(p, ["seed=8"]), resolve(job, 10)))
    assert h1 == h2 != h3
    with pytest.raises(RftError):
        apply_overrides({}, ["novalue"])


def test_quickstart_example_parses():
    from pathlib import Path

    job = load_job(Path(__file__).parents[1] / "examples" / "quickstart.yaml")
    assert job.grader["type"] == "string_check"
