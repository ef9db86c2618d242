"""`rft strategies` through the installed entry point: a small table on the tiny random Llama (base,
best-of-2 with both selectors, SFT and DPO for one step each; the other rows share these code paths and are run by
tests/test_strategies.py on a scripted engine and by the demonstration), and the
mistakes a user can make (exit 2, one error line, nothing run)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from clitools import assert_user_error, run_rft
from jobspecs import tiny_job_file


def test_tiny_table_end_to_end(tmp_path, tiny_model_dir):
    job = tiny_job_file(tmp_path, tiny_model_dir, learnability={"enabled": False})
    out = tmp_path / "table"
    r = run_rft("strategies", str(job), "--only", "best_of_n,sft,dpo", "--n", "2", "--latency-items", "1",
                "--train-steps", "1", "--train-rows", "4", "-o", str(out), "--json", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = json.loads(r.stdout)
    rows = {x["label"]: x for x in table["rows"]}
    assert list(rows) == ["base", "best_of_2/majority", "best_of_2/grader", "sft", "dpo"]
    for x in rows.values():
        assert x["status"] == "ok", x
        assert 0.0 <= x["accuracy"] <= 1.0 and x["n"] == 4 and x["latency"]["n"] == 1
        assert x["tokens_per_request"] > 0 and x["seconds_per_1k"] > 0 and x["eval_id"] in table["eval_ids"]
    assert rows["best_of_2/grader"]["upper_bound"] and not rows["best_of_2/majority"]["upper_bound"]
    assert rows["best_of_2/majority"]["tokens_per_request"] <= 2 * 4  # two samples of at most 4 tokens
    sft = rows["sft"]
    assert sft["job_id"] in table["job_ids"] and sft["training"]["steps"] == 1 and sft["model"].startswith("ckpt:")
    # the random model never passes, so no prompt's samples differ; the job makes its reference answers known
    # (the grader's reference), so the DPO pairs prefer them to the base model's worst sample: a pair a prompt
    dpo = rows["dpo"]
    info = dpo["training"]["pairs"]
    assert info["preferred"] == "auto" and info["pairs"] == 4 and info["pairs_preferring_reference"] == 4, dpo
    pairs = [json.loads(x) for x in (out / "data" / "dpo_pairs.jsonl").read_text().splitlines()]
    assert pairs[0]["preferred_output"] == [{"role": "assistant", "content": "red"}]
    assert dpo["job_id"] in table["job_ids"] and dpo["training"]["steps"] == 1
    assert Path(table["paths"]["plot"]).stat().st_size > 1000
    assert (out / "table.md").read_text().startswith("# Strategies for")
    assert [json.loads(x)["messages"][-1] for x in (out / "data" / "sft_train.jsonl").read_text().splitlines()][0] == \
        {"role": "assistant", "content": "red"}


def test_user_errors_exit_2_with_one_line(tmp_path, tiny_model_dir):
    job = tiny_job_file(tmp_path, tiny_model_dir)
    assert_user_error(run_rft("strategies", str(job), "--only", "base,best_of"), "did you mean 'best_of_n'")
    assert_user_error(run_rft("strategies", str(job), "--budgets", "4,x"), "--budgets")
    prices = tmp_path / "prices.yaml"
    prices.write_text("per_machine_hour: 1\nper_token: 2\n")
    assert_user_error(run_rft("strategies", str(job), "--prices", str(prices)), f"{prices}:2", "per_token")
    spec = yaml.safe_load(job.read_text())
    spec.pop("validation_file")
    nov = tmp_path / "noval.yaml"
    nov.write_text(yaml.safe_dump(spec))
    assert_user_error(run_rft("strategies", str(nov)), "no validation_file")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert_user_error(run_rft("strategies", str(job), "-o", str(full)), str(full))
