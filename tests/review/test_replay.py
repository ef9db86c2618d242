"""Replay: a fixed grader re-grades a job's stored samples. Flips, advantage sign flips, rewards and agreement are
checked against values worked out by hand on tests/review/replaytools.py's job; per-item new scores against
grading each item from scratch; and a replay with the job's own grader must change nothing."""

from __future__ import annotations

import json

import pytest

from replaytools import BUGGY, FIXED, make_job
from rft.errors import RftError


def _replay(tmp_path, grader=FIXED, **kw):
    from rft.review.replay import replay_job

    job = make_job(tmp_path, **kw)
    return job, replay_job(job["id"], grader)


def test_flips_by_hand(tmp_path):
    # group A (answer 5): "5", "1 2 3 4 5 6", "4", "15"  contains -> 1 1 0 1   last number == 5 -> 1 0 0 0
    # group B (answer 9): "9", "8", "9", "19"  stored 1 0 0 1 (B2 was a flaky 0)        last number == 9 -> 1 0 1 0
    _, res = _replay(tmp_path)
    tr = res["training"]
    assert tr["flips"]["pass_to_fail_keys"] == ["train:1:1", "train:1:3", "train:1:7"]
    assert tr["flips"]["fail_to_pass_keys"] == ["train:1:6"]
    assert tr["overall"]["old_mean"] == pytest.approx(5 / 8) and tr["overall"]["new_mean"] == pytest.approx(3 / 8)
    assert tr["overall"]["mean_difference"] == pytest.approx(-2 / 8)
    lo, hi = tr["overall"]["difference_ci95"]
    assert -1.0 <= lo < -2 / 8 < hi <= 1.0  # the paired bootstrap interval around the differences 0 -1 0 -1 0 0 +1 -1
    assert [s["step"] for s in tr["steps"]] == [1]


def test_advantage_sign_flips_by_hand(tmp_path):
    # grpo, A old [1,1,0,1]: mean .75, std .5 -> [+,+,-,+];  new [1,0,0,0]: mean .25, std .5 -> [+,-,-,-]
    #       B old [1,0,0,1]: mean .5 -> [+,-,-,+];            new [1,0,1,0] -> [+,-,+,-]
    _, res = _replay(tmp_path)
    a = res["training"]["advantages"]
    assert a["sign_flipped_keys"] == ["train:1:1", "train:1:3", "train:1:6", "train:1:7"]
    assert a["groups_with_sign_flip_keys"] == ["train:1:group0", "train:1:group1"]
    assert a["gained_signal"] == 0 and a["lost_signal"] == 0 and a["groups"] == 2 and a["samples"] == 8
    item = {r["key"]: r for r in res["items"]}
    eps = 1e-4
    assert item["train:1:1"]["old_advantage"] == pytest.approx(0.25 / (0.5 + eps))
    assert item["train:1:1"]["new_advantage"] == pytest.approx(-0.25 / (0.5 + eps))
    assert item["train:1:0"]["new_advantage"] == pytest.approx(0.75 / (0.5 + eps))


def test_advantage_flips_function_gains_and_losses():
    from rft.review.replay import advantage_flips

    # group 0: no variance before (nothing to learn), some after: every scored sample gains a signal
    # group 1: variance before, none after: both lose it; an unscored sample has zero advantage either way
    af = advantage_flips("rloo", [1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0], 2)
    assert af["gained_signal"] == [0, 1] and af["lost_signal"] == [2, 3] and af["sign_flipped"] == []
    af = advantage_flips("grpo", [1.0, 0.0, None, 1.0], [0.0, 1.0, None, 0.0], 2)
    # group 1 has one scored member either way: no signal before or after
    assert af["sign_flipped"] == [0, 1] and af["lost_signal"] == [] and af["old"][2:] == [0.0, 0.0]


def test_evaluation_items_regraded(tmp_path):
    # baseline: "2" "2 4 6 8 10" "8" "1 12 24" for 2, 8, 8, 12: contains passes all; last number passes 0 and 2
    _, res = _replay(tmp_path)
    (ev,) = res["evaluations"]
    assert ev["name"] == "eval_baseline" and ev["old"]["accuracy"] == 1.0 and ev["new"]["accuracy"] == 0.5
    assert ev["flips"]["pass_to_fail_keys"] == ["eval:eval_baseline:1", "eval:eval_baseline:3"]
    assert ev["paired"]["mean_difference"] == pytest.approx(-0.5) and ev["paired"]["n_regressed"] == 2
    assert res["flips"]["pass_to_fail"] == 5 and res["flips"]["fail_to_pass"] == 1


def test_new_scores_equal_grading_from_scratch(tmp_path):
    from rft import graders
    from rft.config import ExtractionConfig
    from rft.extraction import sample_from_text

    from replaytools import EVAL, STEP1, TRAIN, VAL

    _, res = _replay(tmp_path)
    g = graders.build(FIXED)
    ext = ExtractionConfig(pattern="-?\\d+", occurrence="last")
    expected = {f"train:1:{i}": g.grade(sample_from_text(c, ext), TRAIN[i // 4]).score for i, (c, _) in enumerate(STEP1)}
    expected |= {f"eval:eval_baseline:{i}": g.grade(sample_from_text(c, ext), VAL[i]).score for i, (c, _) in enumerate(EVAL)}
    got = {r["key"]: r["new_score"] for r in res["items"]}
    assert got == expected
    assert {r["key"]: r["old_score"] for r in res["items"] if r["source"] == "train"} == \
        {f"train:1:{i}": s for i, (_, s) in enumerate(STEP1)}


def test_written_and_recorded(tmp_path):
    from rft.registry import Registry
    from rft.registry.replays import list_replays

    job, res = _replay(tmp_path)
    lines = [json.loads(x) for x in open(res["paths"]["items"])]
    assert [x["key"] for x in lines] == [r["key"] for r in res["items"]] and len(lines) == 12
    assert json.load(open(res["paths"]["summary"]))["flips"]["pass_to_fail"] == 5
    (row,) = list_replays(Registry(), job_id=job["id"])
    from rft.graders import spec_sha256

    assert row["old_grader_sha256"] == spec_sha256(BUGGY) and row["new_grader_sha256"] == spec_sha256(FIXED)
    assert row["summary"]["flips"]["pass_to_fail"] == 5 and "pass_to_fail_keys" not in row["summary"]["flips"]
    assert Registry().grader(spec_sha256(FIXED))["type"] == "string_check"


def test_same_grader_changes_nothing(tmp_path):
    from rft.review.replay import replay_job

    job = make_job(tmp_path)
    # stored rewards that the buggy grader really gives (B2's flaky 0 becomes its real 1 = one fail -> pass)
    res = replay_job(job["id"], BUGGY)
    assert res["same_grader"] is True
    assert res["training"]["flips"]["pass_to_fail"] == 0 and res["training"]["flips"]["fail_to_pass_keys"] == ["train:1:6"]
    assert res["evaluations"][0]["flips"]["pass_to_fail"] == 0


def test_agreement_with_human_verdicts(tmp_path):
    from rft.registry import Registry
    from rft.registry.reviews import add_verdict

    job = make_job(tmp_path)
    reg = Registry()
    # a person judged four samples by the arithmetic: right answers pass, lists of numbers fail
    for key, h in (("train:1:0", 1.0), ("train:1:1", 0.0), ("train:1:3", 0.0), ("train:1:6", 1.0)):
        add_verdict(reg, job_id=job["id"], item_key=key, source="train", human_score=h, reviewer="ann")
    from rft.review.replay import replay_job

    ag = replay_job(job["id"], FIXED)["agreement"]
    # old grader scores 1, 1, 1, 0: agrees only on train:1:0; the fixed one 1, 0, 0, 1: agrees on all four
    assert ag["n_matched"] == 4
    assert ag["old"]["accuracy"] == 0.25 and sorted(ag["old"]["disagreements"]) == ["train:1:1", "train:1:3", "train:1:6"]
    assert ag["new"]["accuracy"] == 1.0 and ag["new"]["disagreements"] == []


def test_reference_answers_must_pass_the_new_grader(tmp_path):
    from rft.review.replay import replay_job

    job = make_job(tmp_path)
    wrong = dict(FIXED, reference="{{item.op}}")  # compares with the operator: no reference answer passes
    with pytest.raises(RftError, match=r"reference answer.*train.jsonl:1"):
        replay_job(job["id"], wrong)


def test_eval_replay(tmp_path):
    from rft.review.replay import replay_eval

    job = make_job(tmp_path)
    rep = json.loads((job["run_dir"] / "eval_baseline.json").read_text())
    rep |= {"id": "eval-test-1", "dataset": str(job["val"]), "settings": {"extract": "-?\\d+", "split": "validation"},
            "grader": {"type": "string_check", "name": "contains", "sha256": "a" * 64}}
    d = tmp_path / "evals" / "eval-test-1"
    d.mkdir(parents=True)
    (d / "report.json").write_text(json.dumps(rep))
    res = replay_eval(str(d / "report.json"), FIXED)
    assert res["eval_id"] == "eval-test-1" and res["flips"]["pass_to_fail"] == 2
    assert res["evaluations"][0]["new"]["accuracy"] == 0.5
    assert (d / "replays" / res["id"] / "items.jsonl").exists()


def test_replay_of_a_real_tiny_training_run(tmp_path, tiny_model_dir):
    """A tiny random model trained 2 steps with the buggy grader (a guard set judged by the fixed one): replaying the
    job's own grader reproduces every stored score and advantage; the fixed grader's scores equal grading from
    scratch; explain reads the same run's validation and guard evaluations."""
    import rft
    from rft import graders
    from rft.config import ExtractionConfig
    from rft.extraction import sample_from_text
    from rft.data import load_dataset
    from rft.review.explain import explain
    from rft.review.replay import replay_job

    job = {"model": str(tiny_model_dir), "training_file": "builtin:arithmetic?n=8",
           "validation_file": "builtin:arithmetic?n=4",
           "method": {"type": "reinforcement", "reinforcement": {"grader": BUGGY,
                                                                 "hyperparameters": {"eval_interval": 1}}},
           "rft": {"extraction": {"pattern": "-?\\d+"}, "sampling": {"n": 4, "max_new_tokens": 6},
                   "eval": {"max_items": 4, "guard_file": "builtin:arithmetic?n=4", "guard_grader": FIXED},
                   "gates": {"min_improvement": -1.0, "max_guard_regression": 1.0},
                   "learnability": {"enabled": False}, "train": {"dtype": "float32", "max_steps": 2}}}
    res = rft.train(job, output_dir=tmp_path / "run")
    same = replay_job(res["id"], BUGGY)
    train_items = [r for r in same["items"] if r["source"] == "train"]
    assert len(train_items) == 2 * 2 * 4 and same["flips"]["pass_to_fail"] == same["flips"]["fail_to_pass"] == 0
    val_items = [r for r in same["items"] if r["source"] == "eval" and "guard" not in r["report"]]
    assert all(r["new_score"] == r["old_score"] for r in train_items + val_items)
    assert all(r["old_advantage"] == pytest.approx(r["stored_advantage"], abs=1e-5) for r in train_items)
    assert {e["kind"] for e in same["evaluations"]} >= {"baseline", "checkpoint", "final", "guard_baseline", "guard"}

    fixed = replay_job(res["id"], FIXED)
    g = graders.build(FIXED)
    ext = ExtractionConfig(pattern="-?\\d+")
    rows = {r["messages"][-1]["content"]: r for r in load_dataset("builtin:arithmetic?n=8").rows}
    for r in fixed["items"]:
        if r["source"] == "train":
            full = [x for x in (tmp_path / "run" / "samples" / f"step_{r['step']:06d}.jsonl").read_text().splitlines()]
            s = json.loads(full[r["index"]])
            assert r["new_score"] == g.grade(sample_from_text(s["completion"], ext), rows[s["prompt"]]).score
    guard = [e for e in fixed["evaluations"] if e["dataset"] == "guard"]
    assert guard and all(e["flips"]["pass_to_fail"] == e["flips"]["fail_to_pass"] == 0 for e in guard)

    e = explain(res["fine_tuned_model_checkpoint"])
    assert {c["set"] for c in e["comparisons"]} == {"validation", "guard"}
