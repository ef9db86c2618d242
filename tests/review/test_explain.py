"""Explain: a synthetic checkpoint whose '*' items regressed (completions cut short into lists of numbers) while
'+' items held; the explanation must find op=* as the top slice, list those items with their keys and kinds,
the length and truncation change, the alarm step and the metric onset, and the files."""

from __future__ import annotations

import json

import pytest

from rft.errors import RftError


def _items(scores, *, long_star: bool):
    out = []
    for i, s in enumerate(scores):
        op = "*" if i % 2 else "+"
        star_moved = long_star and op == "*"
        out.append({"index": i, "id": None, "score": s, "passed": s >= 1.0, "error": None,
                    "completion": "1 2 3 4 5 6 7 8 9 10 11 12" if star_moved else str(i),
                    "completion_tokens": 12 if star_moved else 2,
                    "finish_reason": "length" if star_moved else "stop", "answer": str(i),
                    "fields": {"op": op, "a": i % 3, "answer": str(i)}})
    return out


def _report(items, step):
    acc = sum(it["score"] for it in items) / len(items)
    return {"accuracy": acc, "accuracy_ci95": [acc - 0.1, acc + 0.1], "pass_threshold": 1.0, "step": step,
            "dataset_sha256": "d" * 64, "items": items}


def make_regressed(tmp_path):
    from rft.registry import Registry

    reg = Registry()
    run = tmp_path / "run"
    run.mkdir(parents=True)
    reg.create_job("ftjob-explain", spec={"model": "m"}, model="m", run_dir=str(run), status="succeeded")
    n = 20
    base = _report(_items([1.0] * n, long_star=False), 0)
    # 8 of the 10 '*' items regress; one '+' item regresses and one '+' item that failed at baseline improves
    cand_scores = [1.0] * n
    for i in range(1, 17, 2):
        cand_scores[i] = 0.0
    cand_scores[4] = 0.0
    base["items"][6]["score"], base["items"][6]["passed"] = 0.0, False
    cand = _report(_items(cand_scores, long_star=True), 10)
    (run / "eval_baseline.json").write_text(json.dumps(base))
    reg.add_eval_report("baseline", base, job_id="ftjob-explain", path=str(run / "eval_baseline.json"))
    cid = reg.add_checkpoint("ftjob-explain", 10, str(run / "checkpoints" / "step_000010"), "m" * 64)
    reg.add_eval_report("checkpoint", cand, job_id="ftjob-explain", checkpoint_id=cid)
    reg.add_verdict(cid, {"passed": False, "checks": [{"name": "min_improvement", "passed": False, "value": -0.45,
                                                       "threshold": 0.0}]})
    (run / "events.jsonl").write_text(json.dumps({"type": "alarm", "message": "Reward-integrity alarm",
                                                  "data": {"step": 7, "kind": "length_explosion"}}) + "\n")
    metrics = [{"step": s, "completions/mean_length": 4.0 if s < 6 else 12.0, "reward": 0.5} for s in range(1, 11)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run / "samples").mkdir()
    return cid, run


def test_explain_finds_the_planted_slice(tmp_path):
    from rft.review.explain import explain

    cid, run = make_regressed(tmp_path)
    e = explain(f"ckpt:{cid}")
    assert e["regressed"] is True and e["gate_passed"] is False
    assert e["failed_checks"][0]["name"] == "min_improvement"
    top = e["top_slice"]
    assert (top["field"], top["value"]) == ("op", "*") and top["n_regressed"] == 8 and top["n"] == 10
    assert top["share_of_regressions"] == pytest.approx(8 / 9)
    (c,) = e["comparisons"]
    assert c["n_regressed"] == 9 and c["n_improved"] == 1
    # identifier-like fields (answer: one value per item) are not slices
    assert {s["field"] for s in c["slices"]} <= {"op", "a"}
    assert c["regressed_keys"] == [f"eval:{c['report']}:{i}" for i in [1, 3, 4, 5, 7, 9, 11, 13, 15]]
    assert c["move_kinds"]["regressed"] == {"now_truncated": 8, "answer_changed": 1}
    assert c["length"]["before"]["clipped_frac"] == 0.0 and c["length"]["after"]["clipped_frac"] == 0.5
    assert c["length"]["regressed_after"]["mean_completion_tokens"] == pytest.approx((8 * 12 + 2) / 9)
    assert e["onset"]["first_alarm_step"] == 7
    assert e["onset"]["metrics"][0]["metric"] == "completions/mean_length" and e["onset"]["metrics"][0]["step"] == 6
    assert e["files"]["events"] == str(run / "events.jsonl")
    # the baseline's file; the checkpoint's report is in the registry only
    assert e["files"]["reports"] == sorted([str(run / "eval_baseline.json"), f"registry:{c['report']}"])
    assert any("op=*" in line for line in e["summary"])


def test_explain_a_checkpoint_that_did_not_regress(tmp_path):
    from rft.registry import Registry
    from rft.review.explain import explain

    reg = Registry()
    run = tmp_path / "run"
    run.mkdir()
    reg.create_job("ftjob-fine", spec={"model": "m"}, model="m", run_dir=str(run), status="succeeded")
    rep = _report(_items([1.0] * 6, long_star=False), 0)
    reg.add_eval_report("baseline", rep, job_id="ftjob-fine")
    cid = reg.add_checkpoint("ftjob-fine", 5, str(run / "ck"), "m" * 64)
    reg.add_eval_report("checkpoint", rep, job_id="ftjob-fine", checkpoint_id=cid)
    e = explain(cid)
    assert e["regressed"] is False and e["top_slice"] is None and e["comparisons"][0]["regressed_keys"] == []
    assert "no regression" in e["summary"][0]


def test_explain_needs_evaluations(tmp_path):
    from rft.registry import Registry
    from rft.review.explain import explain

    reg = Registry()
    reg.create_job("ftjob-noeval", spec={"model": "m"}, model="m", run_dir=str(tmp_path), status="succeeded")
    cid = reg.add_checkpoint("ftjob-noeval", 1, str(tmp_path / "ck"), "m" * 64)
    with pytest.raises(RftError, match="no evaluation to compare"):
        explain(f"ckpt:{cid}")
    with pytest.raises(RftError, match="explain needs a checkpoint"):
        explain("smollm2-135m-instruct")


def test_metric_onsets_by_hand():
    from rft.review.explain import metric_onsets

    rows = [{"step": s, "completions/clipped_ratio": 0.0 if s < 5 else 0.5, "entropy": 1.0} for s in range(1, 9)]
    # ratio: early mean 0 (steps 1-3); the rolling mean from step 4 on is 0 at step 4, (0 + .5) / 2 = .25 at step 5
    (m,) = metric_onsets(rows)
    assert m["metric"] == "completions/clipped_ratio" and m["step"] == 5
