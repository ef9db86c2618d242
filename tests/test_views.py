"""rft.views: the rows and tables `rft` prints and an HTTP API returns, checked against a real registry (SQLite in
the per-test RFT_HOME) and against hand-written reports, value by value."""

from __future__ import annotations

import math
import time

import pytest

from rft import views
from rft.errors import RftError
from rft.registry import Registry


@pytest.fixture()
def reg(tmp_path):
    """One job with three checkpoints: step 1 (gates passed, approved, promoted), step 2 (pruned, no score, no
    verdict) and step 3 (final, gates failed)."""
    r = Registry()
    r.create_job("ftjob-20250101-120000-abcdef", spec={}, model="tiny", run_dir=str(tmp_path / "run"),
                 status="succeeded", total_steps=3)
    c1 = r.add_checkpoint("ftjob-20250101-120000-abcdef", 1, str(tmp_path / "c1"), "a" * 64,
                          val={"mean": 0.75, "low": 0.5, "high": 0.9})
    c2 = r.add_checkpoint("ftjob-20250101-120000-abcdef", 2, str(tmp_path / "c2"), "b" * 64)
    c3 = r.add_checkpoint("ftjob-20250101-120000-abcdef", 3, str(tmp_path / "c3"), "c" * 64, is_final=True,
                          val={"mean": 0.25, "low": 0.125, "high": 0.5})
    r.update_checkpoint(c2, status="pruned")
    r.add_verdict(c1, {"passed": True, "checks": [{"name": "not_worse", "passed": True, "value": 0.1, "threshold": 0.0}]})
    r.add_verdict(c3, {"passed": False, "checks": [{"name": "not_worse", "passed": False, "value": -0.5,
                                                    "threshold": 0.0}]})
    r.approve(c1, by="ann", note="good")
    r.promote(c1, "production", by="ann")
    r.ids = (c1, c2, c3)
    return r


def test_id_shapes_are_checked_before_the_registry_is_asked():
    assert views.job_ref("  ftjob-1 ") == "ftjob-1"
    assert views.checkpoint_ref("ckpt:ckpt-1a2b") == "ckpt-1a2b"
    assert views.alias_ref("alias:prod.v2") == "prod.v2"
    for fn, bad, needle in ((views.job_ref, "bad id!", "not a valid job id"),
                            (views.checkpoint_ref, "ckpt:x y", "not a valid checkpoint id"),
                            (views.alias_ref, "a b", "not a valid alias name"),
                            (views.job_ref, "-leading-dash", "not a valid job id"),
                            (views.alias_ref, "x" * 65, "not a valid alias name")):
        with pytest.raises(RftError, match=needle):
            fn(bad)


def test_job_rows_and_detail(reg, tmp_path):
    c1, c2, c3 = reg.ids
    row = views.job_row(reg.get_job("ftjob-20250101-120000-abcdef"))
    assert tuple(row) == views.JOB_FIELDS
    assert (row["id"], row["status"], row["step"], row["total_steps"], row["run_dir"]) == \
        ("ftjob-20250101-120000-abcdef", "succeeded", 0, 3, str(tmp_path / "run"))
    detail = views.job_detail(reg, "ftjob-2025")  # a unique prefix
    assert detail["id"] == "ftjob-20250101-120000-abcdef"
    # every checkpoint, the pruned one too, in step order
    assert detail["checkpoints"] == [{"id": c1, "step": 1, "status": "active"}, {"id": c2, "step": 2, "status": "pruned"},
                                     {"id": c3, "step": 3, "status": "active"}]
    with pytest.raises(RftError, match="not a valid job id"):
        views.job_detail(reg, "no such!")

    t = views.jobs_table([row])
    assert t.columns == ("id", "status", "step", "model", "created", "run dir")
    assert t.rows == (("ftjob-20250101-120000-abcdef", "succeeded", "0/3", "tiny", views.when(row["created_at"]),
                       str(tmp_path / "run")),)
    assert views.jobs_table([row | {"total_steps": None, "run_dir": None}]).rows[0][2::3] == ("0/?", "")

    d = dict(views.job_detail_table(detail).rows)
    assert d["status"] == "succeeded" and d["pid"] == str(detail["pid"]) and d["finished_at"] == "-"
    assert d["checkpoints"].startswith('[{"id": "' + c1)
    assert d["created_at"] == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(detail["created_at"]))


def test_checkpoint_rows_carry_score_ci_gates_and_approval(reg, tmp_path):
    c1, c2, c3 = reg.ids
    jid, rows = views.checkpoint_rows(reg, "ftjob-20250101-120000-abcdef")
    assert jid == "ftjob-20250101-120000-abcdef"
    assert [r["id"] for r in rows] == [c1, c3]  # pruned ones only with include_pruned
    first, final = rows
    assert first == {"id": c1, "status": "active", "job_id": jid, "step": 1, "is_final": False,
                     "validation_score": 0.75, "validation_ci95": [0.5, 0.9], "gates": "passed",
                     "verdict_id": first["verdict_id"], "approval_status": "approved", "path": str(tmp_path / "c1"),
                     "manifest_sha256": "a" * 64}
    assert first["verdict_id"].startswith("verdict-")
    assert (final["gates"], final["approval_status"], final["is_final"]) == ("failed", "none", True)
    _, everything = views.checkpoint_rows(reg, jid, include_pruned=True)
    pruned = everything[1]
    assert (pruned["id"], pruned["gates"], pruned["validation_score"], pruned["validation_ci95"]) == (c2, None, None,
                                                                                                     [None, None])

    t = views.checkpoints_table(jid, everything)
    assert t.title == f"checkpoints of {jid}"
    assert t.rows == ((c1, "1", "0.750 [0.500, 0.900]", "passed", "approved", "active"),
                      (c2, "2", "-", "-", "none", "pruned"),
                      (c3, "3 (final)", "0.250 [0.125, 0.500]", "failed", "none", "active"))


def test_checkpoint_detail_has_the_gate_verdict_and_approvals(reg):
    c1, c2, c3 = reg.ids
    d = views.checkpoint_detail(reg, f"ckpt:{c3}")
    assert d["gates"] == "failed"
    assert d["verdict"]["checks"] == [{"name": "not_worse", "passed": False, "value": -0.5, "threshold": 0.0}]
    assert d["approvals"] == []
    d = views.checkpoint_detail(reg, c1)
    assert [(a["by"], a["note"], a["checkpoint_id"]) for a in d["approvals"]] == [("ann", "good", c1)]
    assert views.checkpoint_detail(reg, c2)["verdict"] is None
    with pytest.raises(RftError, match="not a valid checkpoint id"):
        views.checkpoint_detail(reg, "ckpt:x y")


def test_aliases_and_audit(reg):
    c1, _, _ = reg.ids
    rows = views.alias_rows(reg)
    assert [(r["id"], r["status"], r["checkpoint_id"], r["version"]) for r in rows] == [("production", "live", c1, 1)]
    assert views.aliases_table(rows).rows == (("production", c1, views.when(rows[0]["updated_at"]), "1"),)
    a = reg.alias("production")
    assert views.alias_row(a) == {"id": "production", "status": "live", **a}

    log = views.audit_rows(reg)
    assert [r["status"] for r in log] == ["checkpoint.approve", "alias.promote"]
    assert all(r["id"] == r["seq"] and r["status"] == r["action"] for r in log)
    assert [r["action"] for r in views.audit_rows(reg, "alias:production")] == ["alias.promote"]
    cells = views.audit_table(log).rows[0]
    assert cells[1:4] == ("ann", "checkpoint.approve", c1) and cells[4] == '{"approval_status": "none", "approvers": []}'


def test_events():
    e = {"seq": 7, "level": "warn", "created_at": None, "message": "slow step", "type": "x"}
    assert views.event_row(e) == {"id": 7, "status": "warn", **e}
    assert views.event_line(e) == "-  warn  slow step"


def _train_result(**kw) -> dict:
    r = {"id": "ftjob-x", "status": "succeeded", "train_seconds": 10.0, "trained_steps": 4,
         "baseline_eval": {"accuracy": 0.5, "accuracy_ci95": [0.25, 0.75], "n": 8},
         "final_eval": {"accuracy": 0.75, "accuracy_ci95": [0.5, 0.875], "n": 8},
         "improved_items": [1, 2], "regressed_items": [3], "final_checkpoint_id": "ckpt-1",
         "final_verdict": {"passed": False}, "paths": {"report": "r.md", "plot": "p.png", "checkpoint": "ck/final"}}
    return r | kw


def test_training_summary():
    t = views.training_summary(_train_result())
    assert t.title == "rft job ftjob-x: succeeded" and t.columns == ("", "value")
    assert t.rows == (("baseline accuracy (greedy, 95% CI)", "0.500 [0.250, 0.750]"),
                      ("final accuracy (greedy, 95% CI)", "0.750 [0.500, 0.875]"),
                      ("change", "+0.250  (2 items improved, 1 regressed)"),
                      ("validation items", "8"),
                      ("training time", "10.0 s for 4 steps (2.5 s/step)"),
                      ("report", "r.md"), ("plot", "p.png"),
                      ("final checkpoint", "ckpt:ckpt-1  gates FAILED\nck/final"))
    assert views.training_next_steps(_train_result()).startswith("next: rft checkpoints list ftjob-x  |  "
                                                                 "rft checkpoints approve ckpt-1 ")
    bare = dict(views.training_summary(_train_result(final_eval=None, final_checkpoint_id=None, trained_steps=0,
                                                     final_verdict={"passed": True})).rows)
    assert "change" not in bare and bare["final accuracy (greedy, 95% CI)"] == "-"
    assert bare["training time"] == "10.0 s for 0 steps (10.0 s/step)"  # no division by zero
    assert bare["final checkpoint"] == "ck/final"
    assert views.training_next_steps(_train_result(final_checkpoint_id=None)) is None
    passed = dict(views.training_summary(_train_result(final_verdict={"passed": True})).rows)
    assert passed["final checkpoint"] == "ckpt:ckpt-1  gates passed\nck/final"


def test_eval_and_compare_tables():
    rep = {"accuracy": 0.5, "accuracy_ci95": [0.2, 0.8], "items": [0] * 6, "n": 5, "unscored_frac": 1 / 6,
           "error_rates": {"other_error": 1 / 6, "sample_parse_error": 0.0}, "pass_at_k": {"1": 0.5, "2": math.nan},
           "mean_completion_tokens": 12.25, "slices": {"topic": {"a": {"accuracy": 1.0, "accuracy_ci95": [0.5, 1.0],
                                                                         "n": 2}}},
           "seconds": 3.0, "paths": {"json": "r.json"}}
    t = views.eval_table(rep, "eval M on D")
    assert t.title == "eval M on D" and t.columns == ("metric", "value")
    assert t.rows == (("accuracy (greedy, 95% CI)", "0.500  [0.200, 0.800]"), ("items (scored)", "6 (5)"),
                      ("unscored", "0.167"), ("  other_error", "16.7%"), ("pass@1", "0.500"), ("pass@2", "n/a"),
                      ("mean completion tokens", "12.2"), ("topic=a", "1.000  [0.500, 1.000]  (n=2)"),
                      ("seconds", "3.0"), ("report (json)", "r.json"))

    res = {"a": {"model": "base"}, "b": {"model": "ckpt:1"}, "n_paired": 6, "n_scored_pairs": 5, "paired_by": "id",
           "mean_a": 0.4, "mean_b": 0.6, "mean_difference": 0.2, "difference_ci95": [-0.1, 0.5], "ci_method": "bootstrap",
           "mcnemar": {"improved": 2, "regressed": 1, "p_value": 0.03125, "method": "exact"}, "n_improved": 2,
           "n_regressed": 1, "n_unchanged": 3, "slices": {"topic": {"a": {"mean_difference": 0.25,
                                                                          "difference_ci95": [-0.5, 0.0],
                                                                          "n_scored_pairs": 2}}},
           "warnings": ["few items"], "paths": {"json": "c.json"}}
    t = views.compare_table(res)
    assert t.title == "compare B - A: ckpt:1 vs base"
    assert t.rows == (("paired items (scored by both)", "6 (5), by id"), ("mean score A / B", "0.400 / 0.600"),
                      ("B - A (95% CI)", "+0.200  [-0.100, +0.500]  (bootstrap)"),
                      ("McNemar", "2 improved / 1 regressed pass-fail, p = 0.03125 (exact)"),
                      ("by score", "2 improved, 1 regressed, 3 unchanged"),
                      ("topic=a", "+0.250  [-0.500, +0.000]  (n=2)"), ("warning", "few items"), ("json", "c.json"))


def test_preflight_and_grader_tables():
    rep = {"prompts_sampled": 4, "group_size": 2, "pass_rate_mean": 0.25, "pass_rate_histogram": {"0": 3, "1": 1},
           "zero_variance_group_frac": 0.75, "unscored_frac": 0.0, "grader_error_rates": {},
           "grader_latency_ms_mean": 0.5, "step": {"completions": 8, "tokens": 64, "measured_seconds": [1.0, 2.0],
                                                   "sampling_seconds": 1.5, "grading_seconds": 0.01,
                                                   "training_seconds": 0.5, "forecast_seconds": 2.0},
           "forecast": {"total_steps": 30, "train_seconds": 60.0, "eval_seconds": 30.0},
           "recommendations": ["raise the temperature"], "seconds": 5.0}
    d = views.preflight_table(rep, "preflight job.yaml").rows
    assert d[0] == ("prompts sampled x group size", "4 x 2") and d[2] == ("pass-rate histogram (prompts)", "0: 3  1: 1")
    assert d[3] == ("groups with zero reward variance", "75.0%") and d[4] == ("unscored samples", "0.0%")
    assert dict(d)["step time (measured)"] == "1.0s, 2.0s  (sampling 1.5s, grading 0.01s, training 0.5s)"
    assert dict(d)["run forecast"] == "30 steps: ~1.0 min training + ~0.5 min evaluation"
    assert d[-2:] == (("recommendation", "raise the temperature"), ("preflight took", "5.0 s"))

    s = {"grader": {"type": "string_check", "name": "exact"}, "mean_score": None, "pass_rate": 0.5, "unscored": 1,
         "unscored_frac": 0.25, "error_rates": {"other_error": 0.25, "sample_parse_error": 0},
         "latency_mean_s": 0.001, "latency_p95_s": 0.0025, "seconds": 0.125}
    t = views.grader_file_table(s, 4)
    assert t.title == "string_check grader 'exact' on 4 samples"
    assert t.rows == (("mean score (scored samples)", "-"), ("pass rate", "0.500"), ("unscored", "1 (25.0%)"),
                      ("  other_error", "25.0%"), ("latency mean / p95", "1.00 ms / 2.50 ms"), ("seconds", "0.12"))
