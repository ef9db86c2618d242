"""Sparse rewards (issue 17): dynamic sampling, the learnability check's verdicts, the supervised warm start and the
early stop, on a tiny random model (the rollouts of the dynamic-sampling tests come from a scripted engine)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from clitools import assert_user_error, run_rft

from rft.config import parse_job
from rft.train import loop
from rft.train.learnability import Measurement, apply_remedies, reference_template, verdict
from rft.train.setup import setup_training
from rft.train.step import step_metrics, train_step
from rft.train.warm_start import reference_loss, warm_start
from rft.types import Completion

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}
ROWS = [("What is 2 + 3?", "5"), ("What is 4 * 2?", "8"), ("What is 9 - 7?", "2"), ("What is 6 + 1?", "7")]


def _data(tmp_path, rows=ROWS):
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}], "answer": a}) + "\n"
                         for q, a in rows))
    return p


def _raw(model_dir, data, grader=EXACT, **rft):
    return {"model": str(model_dir), "training_file": str(data), "validation_file": str(data), "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": grader, "hyperparameters": {"batch_size": 2, "n_epochs": 1, "eval_interval": 2}}},
            "rft": {"sampling": {"n": 4, "max_new_tokens": 6}, "eval": {"max_items": 4},
                    "train": {"dtype": "float32"}, **rft}}


# ------------------------------------------------------------------------------------------ dynamic sampling
class _ScriptedEngine:
    """Completions decided by the prompt: a prompt containing MIX gets alternating "y"/"n", any other all "n"."""

    def __init__(self, tok):
        self.tok, self.calls = tok, []

    def generate_ids(self, prompt_ids, sp):
        self.calls.append(len(prompt_ids))
        out = []
        for p in prompt_ids:
            mix = "MIX" in self.tok.decode(p)
            texts = [("y" if (mix and j % 2 == 0) else "n") for j in range(sp.n)]
            out.append([Completion(text=t, token_ids=tuple(self.tok(t, add_special_tokens=False)["input_ids"]),
                                   logprobs=(-1.0,), finish_reason="stop") for t in texts])
        return out

    def sync_weights(self):
        pass


def _row(kind: str, i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"{kind} {i}"}], "answer": "y"}


@pytest.fixture()
def scripted_parts(tiny_model_dir, tmp_path):
    def make(**algorithm):
        grader = {"type": "string_check", "name": "y", "input": "{{sample.output_text}}", "reference": "y",
                  "operation": "eq"}
        job = parse_job(_raw(tiny_model_dir, _data(tmp_path), grader, algorithm=algorithm,
                             learnability={"enabled": False}))
        parts = setup_training(job)
        return dataclasses.replace(parts, engine=_ScriptedEngine(parts.tokenizer))
    return make


def test_dynamic_sampling_draws_until_the_groups_differ(scripted_parts):
    parts = scripted_parts(dynamic_sampling=True, max_extra_draws=8)
    pool = iter([_row("dead", 1), _row("MIX", 2), _row("dead", 3), _row("MIX", 4), _row("MIX", 5)])
    asked = []

    def draw(k):
        asked.append(k)
        return [next(pool) for _ in range(k)]

    st = train_step(1, [_row("dead", 0), _row("dead", 9)], parts, draw=draw)
    assert asked == [2, 2]  # the step's 2 prompts, then 2 more twice: 2 differing groups found
    assert [r["messages"][0]["content"] for r in st.rows] == ["MIX 2", "MIX 4"]
    assert st.sampling.draws == 3 and st.sampling.extra_prompts == 4 and not st.sampling.cap_hit
    assert st.update.updates == 1  # the differing groups were learned from
    m = step_metrics(st, "y")
    assert m["frac_reward_zero_std"] == pytest.approx(4 / 6)  # of every group drawn, not only those kept
    assert m["dynamic_sampling/extra_prompts"] == 4 and m["dynamic_sampling/draws"] == 3
    assert m["dynamic_sampling/cap_hit"] is False


def test_dynamic_sampling_respects_the_cap(scripted_parts):
    parts = scripted_parts(dynamic_sampling=True, max_extra_draws=3)
    asked = []

    def draw(k):
        asked.append(k)
        return [_row("dead", 10 + i) for i in range(k)]

    st = train_step(1, [_row("dead", 0), _row("dead", 1)], parts, draw=draw)
    assert asked == [2, 1] and st.sampling.extra_prompts == 3 and st.sampling.cap_hit
    assert [r["messages"][0]["content"] for r in st.rows] == ["dead 0", "dead 1"]  # nothing differed: its own rows
    assert st.update.passes == 0  # nothing to learn, no KL: no update
    assert step_metrics(st, "y")["frac_reward_zero_std"] == 1.0


def test_without_dynamic_sampling_nothing_more_is_drawn(scripted_parts):
    parts = scripted_parts(dynamic_sampling=False)
    st = train_step(1, [_row("dead", 0), _row("MIX", 1)], parts, draw=lambda k: pytest.fail("drew"))
    assert st.sampling.draws == 1 and st.sampling.extra_prompts == 0 and len(st.rows) == 2
    assert step_metrics(st, "y")["frac_reward_zero_std"] == 0.5


# ---------------------------------------------------------------------------------------- learnability verdicts
def _job(grader=EXACT, **rft):
    return parse_job(_raw("smollm2-135m-instruct", "train.jsonl", grader, **rft))


LIKE = {"type": "string_check", "name": "like", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
        "operation": "like"}


def _m(rates, G=8):
    zero = sum(1 for r in rates if r in (0.0, 1.0))
    return Measurement(group=G, pass_rates=list(rates), zero_variance=zero)


def test_all_zero_with_a_known_reference_applies_warm_start_and_dynamic_sampling():
    job = _job()
    v = verdict(_m([0.0] * 16), job)
    assert v.kind == "sparse_zero" and not v.stop
    assert v.overrides == {"rft.warm_start.enabled": True, "rft.warm_start.reference_output": "{{item.answer}}",
                           "rft.algorithm.dynamic_sampling": True}
    assert "0% of 16 sampled groups of 8" in v.message and "pass rate 0.000" in v.message
    assert "answer extraction" in v.message and "partial-credit grader" in v.message
    job2 = apply_remedies(job, v.overrides)
    assert job2.rft.warm_start.enabled is True and job2.rft.algorithm.dynamic_sampling is True
    assert reference_template(job2) == "{{item.answer}}"


def test_all_zero_without_a_reference_stops_with_the_advice():
    v = verdict(_m([0.0] * 16), _job(LIKE))
    assert v.stop and v.kind == "sparse_zero"
    assert "warm start" in v.message and "answer extraction" in v.message and "partial-credit" in v.message


def test_all_one_stops_and_mixed_is_learnable():
    v = verdict(_m([1.0] * 16), _job())
    assert v.stop and v.kind == "sparse_one" and "harder prompts" in v.message
    v = verdict(_m([0.5, 0.25, 0.0, 1.0, 0.75, 0.5, 0.0, 0.125]), _job())
    assert v.kind == "learnable" and not v.stop and v.overrides == {}


def test_rare_passes_without_a_reference_grow_the_groups():
    rates = [0.125] + [0.0] * 15  # pass rate 1/128
    v = verdict(_m(rates), _job(LIKE, learnability={"max_group": 64}))
    assert not v.stop and v.overrides["rft.algorithm.dynamic_sampling"] is True
    assert v.overrides["rft.sampling.n"] == 64  # 1 - (1 - 1/128)^64 = 39% >= 25%; 32 gives 22%
    assert verdict(_m(rates), _job(LIKE, learnability={"remedies": False})).overrides == {}


def test_explicit_settings_are_kept():
    v = verdict(_m([0.0] * 16), _job(algorithm={"dynamic_sampling": False}, warm_start={"enabled": False}))
    assert v.stop and v.overrides == {}  # the user turned both off: nothing can give a signal


# --------------------------------------------------------------------------------------------- warm start
def test_warm_start_lowers_the_reference_loss(tiny_model_dir, tmp_path):
    job = parse_job(_raw(tiny_model_dir, _data(tmp_path), warm_start={"steps": 8, "lr": 3e-3, "batch_size": 4}))
    parts = setup_training(job)
    try:
        rows = list(parts.inputs.train_ds.rows)
        before = reference_loss(parts, rows, "{{item.answer}}")
        rec = warm_start(parts, rows, "{{item.answer}}", seed=0, log=lambda s: None)
        after = reference_loss(parts, rows, "{{item.answer}}")
    finally:
        parts.inputs.close()
    assert after < before - 0.5, (before, after)
    assert rec["steps"] == 8 and len(rec["losses"]) == 8 and rec["loss_last_mean"] < rec["loss_first"]


def test_warm_start_is_recorded_in_the_run(tiny_model_dir, tmp_path):
    raw = _raw(tiny_model_dir, _data(tmp_path), learnability={"enabled": False},
               warm_start={"enabled": True, "reference_output": "{{item.answer}}", "steps": 3, "lr": 1e-3})
    res = loop.run_job(parse_job(raw), output_dir=str(tmp_path / "run"), log=lambda s: None)
    assert res["status"] == "succeeded"
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["warm_start"]["steps"] == 3 and len(rep["warm_start"]["losses"]) == 3
    resolved = yaml.safe_load((tmp_path / "run" / "resolved_config.yaml").read_text())
    assert resolved["rft"]["warm_start"]["enabled"] is True
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert sum(1 for e in events if "warm_start_loss" in (e.get("data") or {})) == 3
    meta = json.loads((tmp_path / "run" / "checkpoints" / "final" / "rft_checkpoint.json").read_text())
    assert meta["warm_start"]["steps"] == 3  # every checkpoint carries it (its lineage)


def test_learnability_remedies_are_applied_and_recorded(tiny_model_dir, tmp_path):
    """A random model never writes the bare answer: the check applies the warm start and dynamic sampling."""
    raw = _raw(tiny_model_dir, _data(tmp_path), warm_start={"steps": 2, "lr": 1e-3})
    res = loop.run_job(parse_job(raw), output_dir=str(tmp_path / "run"), log=lambda s: None)
    assert res["status"] == "succeeded"
    resolved = yaml.safe_load((tmp_path / "run" / "resolved_config.yaml").read_text())
    assert resolved["learnability"]["kind"] == "sparse_zero"
    assert resolved["rft"]["warm_start"]["enabled"] is True and resolved["rft"]["algorithm"]["dynamic_sampling"] is True
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["learnability"]["applied"] and rep["warm_start"]["steps"] == 2
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("dynamic_sampling/draws" in m for m in metrics)


def test_no_signal_stops_early_through_the_cli(tiny_model_dir, tmp_path):
    never = {"type": "string_check", "name": "never", "input": "{{sample.output_text}}", "reference": "QQQQQ",
             "operation": "like"}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_raw(tiny_model_dir, _data(tmp_path), never)))
    r = run_rft("train", str(job), "-o", str(tmp_path / "run"), "-q")
    assert_user_error(r, "learnability", "not one sampled completion passed", "answer extraction",
                      "partial-credit grader")
    assert "Traceback" not in r.stderr
