"""OpenAI's three methods in one job body: the schema (types, sections, "auto" values, did-you-mean), the checks
only jobcheck makes, OpenAI's own bodies valid as they are, the resolved values, and POST /v1/fine_tuning/jobs
with supervised and dpo bodies through the official SDK (the job object's `method` echoes the body)."""

from __future__ import annotations

import json
import time

import pytest

from rft.config import DPO_BETA_AUTO, Hyperparameters, parse_schema, resolve
from rft.errors import RftError
from rft.jobcheck import parse_job

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
          "operation": "eq"}
# OpenAI's bodies, as in their fine-tuning guide
SUPERVISED = {"model": "smollm2-135m-instruct", "training_file": "file-abc123",
              "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}}
DPO = {"model": "smollm2-135m-instruct", "training_file": "file-abc123",
       "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}}


def _problems(raw: dict) -> str:
    with pytest.raises(RftError) as e:
        parse_job(raw, "job.yaml")
    return str(e.value)


def test_openai_bodies_are_valid_as_they_are():
    sft = parse_job(json.loads(json.dumps(SUPERVISED)))
    assert sft.method.type == "supervised" and sft.grader is None and sft.hp.n_epochs == 2
    assert isinstance(sft.hp, Hyperparameters) and sft.hp.batch_size == "auto"
    assert sft.hp_field == "method.supervised.hyperparameters" and sft.response_format is None
    dpo = parse_job(json.loads(json.dumps(DPO)))
    assert dpo.dpo_beta == 0.1 and dpo.grader is None
    # the method section may be left out: every hyperparameter auto
    bare = parse_job({"training_file": "x.jsonl", "method": {"type": "dpo"}})
    assert bare.dpo_beta == DPO_BETA_AUTO and bare.hp.learning_rate_multiplier == "auto"
    # rft's optional evaluation grader sits next to the hyperparameters
    graded = parse_job({"training_file": "x.jsonl", "method": {"type": "supervised", "supervised": {"grader": GRADER}}})
    assert graded.grader == GRADER and graded.grader_field == "method.supervised.grader"


def test_resolved_values_per_method():
    sft = parse_job({"training_file": "x", "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "batch_size": 4, "n_epochs": 3, "learning_rate_multiplier": 2}}}})
    v = resolve(sft, 10)
    assert (v.prompts_per_step, v.completions_per_prompt, v.steps_per_epoch, v.total_steps) == (4, 1, 3, 9)
    assert v.learning_rate == pytest.approx(4e-5)
    auto = resolve(parse_job({"training_file": "x", "method": {"type": "dpo"}}), 20)
    assert (auto.prompts_per_step, auto.total_steps, auto.eval_interval) == (8, 3, 1)


def test_unknown_types_and_fields_fail_with_did_you_mean():
    assert "field 'method.type'" in _problems({"training_file": "x", "method": {"type": "sft"}})
    assert "unknown key 'betta' (did you mean 'beta'?)" in _problems(
        {"training_file": "x", "method": {"type": "dpo", "dpo": {"hyperparameters": {"betta": 0.1}}}})
    assert "unknown key 'graderr' (did you mean 'grader'?)" in _problems(
        {"training_file": "x", "method": {"type": "supervised", "supervised": {"graderr": GRADER}}})
    assert "field 'method.dpo.hyperparameters.beta': must be in (0, 100]" in _problems(
        {"training_file": "x", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}})
    # a grader of a supervised job is checked like a reinforcement grader, named by its own field
    assert "field 'method.supervised.grader.type'" in _problems(
        {"training_file": "x", "method": {"type": "supervised", "supervised": {"grader": {"type": "string_chek"}}}})


def test_a_section_of_another_type_is_refused_not_ignored():
    text = _problems({"training_file": "x", "method": {"type": "dpo", "supervised": {}}})
    assert "field 'method.supervised': method.type is 'dpo', so method.supervised would be ignored" in text
    assert parse_schema({"training_file": "x", "method": {"type": "dpo", "supervised": {}}})  # the schema alone
    text = _problems({"training_file": "x", "method": {"type": "supervised"}, "rft": {"eval": {"guard_file": "g"}}})
    assert "field 'rft.eval.guard_file'" in text
    assert "method.reinforcement" in _problems({"training_file": "x", "method": {"type": "reinforcement"}})


def test_fine_tuning_jobs_api_runs_supervised_and_dpo_bodies(tmp_path, tiny_model_dir):
    import openai

    from rft.serve import create_app
    from tests.livetools import run_live

    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say {w}"},
                                                    {"role": "assistant", "content": w}], "answer": w}) + "\n"
                           for w in ("red", "blue", "green", "gold")))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"input": {"messages": [{"role": "user", "content": f"Say {w}"}]},
                                         "preferred_output": [{"role": "assistant", "content": w}],
                                         "non_preferred_output": [{"role": "assistant", "content": "no"}]}) + "\n"
                             for w in ("red", "blue")))
    rft = {"train": {"dtype": "float32"}, "sampling": {"max_new_tokens": 4}}
    token = "method-jobs-token-0123456789"
    with run_live(create_app(str(tiny_model_dir), token=token)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0)
        bodies = [
            ({"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 2, "n_epochs": 1},
                                                   "grader": GRADER}}, sft),
            ({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "batch_size": 2}}}, pairs),
        ]
        jobs = [client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=str(f), validation_file=str(f),
                                               method=m, seed=0, extra_body={"rft": rft}) for m, f in bodies]
        for (m, _), job in zip(bodies, jobs):
            assert job.status == "queued"
            deadline = time.monotonic() + 300
            while True:  # the deadline only bounds the wait; nothing is asserted about time
                done = client.fine_tuning.jobs.retrieve(job.id)
                if done.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert done.status == "succeeded", done
            echoed = done.model_dump()["method"]
            assert echoed["type"] == m["type"]
            sec = echoed[m["type"]]
            assert {k: sec["hyperparameters"][k] for k in m[m["type"]]["hyperparameters"]} == \
                m[m["type"]]["hyperparameters"]
            assert sec.get("grader") == m[m["type"]].get("grader")
            assert done.hyperparameters.batch_size == 2
        client.close()
