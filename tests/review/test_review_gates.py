"""The max_grader_disagreement gate (rft.eval.gates) and alias promotion policy (rft.registry.access): held
with too few verdicts (saying so), held above the limit (naming the measured rate and n), passed within it;
and the disagreement count below the review layer agrees with rft.review.agreement."""

from __future__ import annotations

import random

import pytest

from rft.config import GatesConfig
from rft.errors import RftError
from rft.eval.gates import evaluate_gates
from rft.registry import Registry
from rft.registry.access import PolicyRefused
from rft.registry.reviews import add_verdict, measured_disagreement, pass_fail_counts
from rft.review.agreement import agreement

COMPARISON = {"mean_difference": 0.1, "difference_ci95": [0.05, 0.15], "n_scored_pairs": 40,
              "b": {"unscored_frac": 0.0, "error_rates": {}}}


def _check(verdict, name="grader_disagreement"):
    return next(c for c in verdict["checks"] if c["name"] == name)


def test_gate_off_by_default_and_held_without_enough_verdicts():
    assert all(c["name"] != "grader_disagreement" for c in evaluate_gates(GatesConfig(), COMPARISON)["checks"])
    cfg = GatesConfig(max_grader_disagreement=0.1)
    v = evaluate_gates(cfg, COMPARISON)
    c = _check(v)
    assert not v["passed"] and not c["passed"] and c["n"] == 0
    assert "cannot be measured yet: 0 reviewed item(s)" in c["detail"] and "at least 20 needed" in c["detail"]
    c = _check(evaluate_gates(cfg, COMPARISON, grader_review={"n": 19, "disagreement": 0.0}))
    assert not c["passed"] and "19 reviewed item(s)" in c["detail"]


def test_gate_measures_the_disagreement():
    cfg = GatesConfig(max_grader_disagreement=0.1, min_review_verdicts=10)
    held = evaluate_gates(cfg, COMPARISON, grader_review={"n": 25, "disagreement": 0.2})
    c = _check(held)
    assert not held["passed"] and c["value"] == 0.2 and c["threshold"] == 0.1
    assert "disagree with the grader on 20.0% of 25 reviewed items (above the limit 10.0%)" in c["detail"]
    ok = evaluate_gates(cfg, COMPARISON, grader_review={"n": 10, "disagreement": 0.1})
    assert ok["passed"] and _check(ok)["passed"]  # at the limit passes
    with pytest.raises(ValueError):
        GatesConfig(max_grader_disagreement=1.5)


def test_pass_fail_counts_agree_with_agreement():
    rng = random.Random(0)
    rows = [{"human_score": rng.choice([0.0, 1.0, 0.6, 0.3]), "grader_score": rng.choice([None, 0.0, 1.0, 0.5, 0.49])}
            for _ in range(200)]
    n, differ = pass_fail_counts(rows)
    a = agreement([r["human_score"] for r in rows], [r["grader_score"] for r in rows])
    assert n == a["n"] and differ == len(a["disagreements"])
    assert differ / n == pytest.approx(a["disagreement"])


def _approved_ckpt(reg, tmp_path):
    reg.create_job("ftjob-gate", spec={}, model="m", run_dir=str(tmp_path / "run"))
    d = tmp_path / "ck"
    d.mkdir()
    cid = reg.add_checkpoint("ftjob-gate", 1, str(d), "0" * 64, is_final=True)
    reg.add_verdict(cid, {"passed": True, "checks": []})
    reg.approve(cid, by="ann", note="ok")
    return cid


def _verdicts(reg, n, differ, t0):
    for i in range(n):
        add_verdict(reg, job_id="ftjob-gate", item_key=f"train:1:{i}", source="train", reviewer="rev",
                    human_score=0.0 if i < differ else 1.0, grader_score=1.0, now=t0 + i)


def test_promotion_policy_measures_the_disagreement(tmp_path):
    reg = Registry()
    cid = _approved_ckpt(reg, tmp_path)
    reg.set_policy("production", {"max_grader_disagreement": 0.1}, by="ada")
    with pytest.raises(PolicyRefused, match=r"cannot be measured yet: 0 reviewed item\(s\).*at least 20 needed"):
        reg.promote(cid, "production", by="ada")
    _verdicts(reg, 20, differ=6, t0=1000.0)
    assert measured_disagreement(reg, "ftjob-gate") == {"n": 20, "disagreement": pytest.approx(0.3)}
    c = _check(evaluate_gates(GatesConfig(max_grader_disagreement=0.1), COMPARISON,
                              grader_review=measured_disagreement(reg, "ftjob-gate")))
    assert not c["passed"] and "30.0% of 20" in c["detail"]
    with pytest.raises(PolicyRefused, match=r"disagree with the grader on 30.0% of 20 reviewed items \(above"):
        reg.promote(cid, "production", by="ada")
    _verdicts(reg, 20, differ=0, t0=2000.0)  # the same 20 items reviewed again: the newest verdicts replace the old ones
    assert reg.promote(cid, "production", by="ada")["checkpoint_id"] == cid
    with pytest.raises(RftError):
        reg.set_policy("production", {"max_grader_disagreement": 2}, by="ada")
