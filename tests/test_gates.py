"""Quality gates: a worse candidate fails, a clearly better one passes, and each check reports its numbers."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from rft.eval.compare import compare_reports
from rft.eval.gates import GatesConfig, evaluate_gates
from rft.eval.report import gates_markdown


def _report(scores, *, tokens=20.0, errors=0):
    items = [{"index": i, "score": float(s), "error": None} for i, s in enumerate(scores)]
    for it in items[:errors]:
        it["score"], it["error"] = None, "sample_parse_error"
    n = len(items)
    return {"model": "m", "dataset_sha256": "d", "items": items, "mean_completion_tokens": tokens,
            "unscored_frac": errors / n, "error_rates": {"sample_parse_error": errors / n}}


def _base(n=200, p=0.4, seed=0):
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def _flip(a, *, fix=0, break_=0, seed=1):
    """A copy of `a` with `fix` failures turned into passes and `break_` passes into failures."""
    rng = np.random.default_rng(seed)
    b = a.copy()
    b[rng.permutation(np.flatnonzero(a == 0))[:fix]] = 1.0
    b[rng.permutation(np.flatnonzero(a == 1))[:break_]] = 0.0
    return b


def _checks(v):
    return {c["name"]: c for c in v["checks"]}


def _gate(cfg, base, cand, guard=None, **kw):
    cmp = compare_reports(base, cand, resamples=2000, seed=0)
    g = compare_reports(*guard, resamples=2000, seed=0) if guard else None
    return evaluate_gates(cfg, cmp, guard_comparison=g, candidate_report=cand, baseline_report=base, **kw), cmp


def test_clearly_better_candidate_passes():
    a = _base()
    v, cmp = _gate(GatesConfig(), _report(a), _report(_flip(a, fix=40, break_=3)))
    assert v["passed"], v
    c = _checks(v)
    assert c["min_improvement"]["value"] == cmp["difference_ci95"][0] > 0
    assert c["not_worse"]["value"] == pytest.approx((40 - 3) / 200)
    assert c["grader_error_rate"]["value"] == 0.0
    assert "passed" in gates_markdown(v)


def test_worse_candidate_fails_even_with_a_lenient_margin():
    a = _base()
    worse = _report(_flip(a, fix=2, break_=30))
    v, cmp = _gate(GatesConfig(), _report(a), worse)
    c = _checks(v)
    assert not v["passed"] and not c["not_worse"]["passed"] and not c["min_improvement"]["passed"]
    assert c["not_worse"]["value"] == pytest.approx(-28 / 200)
    # a non-inferiority margin wide enough for the CI still does not let a worse candidate through
    v, _ = _gate(GatesConfig(min_improvement=-0.5), _report(a), worse)
    c = _checks(v)
    assert c["min_improvement"]["passed"] and not c["not_worse"]["passed"] and not v["passed"]
    assert "FAILED" in gates_markdown(v)


def test_identical_candidate_is_not_an_improvement():
    a = _base()
    v, _ = _gate(GatesConfig(), _report(a), _report(a))
    c = _checks(v)
    assert c["not_worse"]["passed"] and not c["min_improvement"]["passed"] and not v["passed"]


def test_min_improvement_threshold_is_applied_to_the_ci_lower_bound():
    a = _base()
    base, cand = _report(a), _report(_flip(a, fix=40))
    v, cmp = _gate(GatesConfig(min_improvement=0.0), base, cand)
    lo = cmp["difference_ci95"][0]
    assert v["passed"]
    v, _ = _gate(GatesConfig(min_improvement=round(lo + 0.01, 4)), base, cand)
    assert not _checks(v)["min_improvement"]["passed"]


def test_guard_regression():
    a, g = _base(), _base(seed=7, p=0.7)
    base, cand = _report(a), _report(_flip(a, fix=40))
    g_base, g_cand = _report(g), _report(_flip(g, break_=40, seed=3))  # the guard set gets much worse
    v, _ = _gate(GatesConfig(max_guard_regression=0.02), base, cand, guard=(g_base, g_cand))
    c = _checks(v)
    assert not v["passed"] and not c["guard_regression"]["passed"] and c["min_improvement"]["passed"]
    assert c["guard_regression"]["threshold"] == -0.02 and c["guard_regression"]["value"] < -0.02
    # a small guard change within the allowed regression passes
    v, _ = _gate(GatesConfig(max_guard_regression=0.05), base, cand, guard=(g_base, _report(_flip(g, break_=1, seed=3))))
    assert _checks(v)["guard_regression"]["passed"] and v["passed"]
    # a configured guard set that was never evaluated fails rather than passing silently
    v, _ = _gate(GatesConfig(), base, cand, guard_required=True)
    assert not _checks(v)["guard_regression"]["passed"] and not v["passed"]


def test_grader_error_rate():
    a = _base()
    b = _flip(a, fix=60)
    v, _ = _gate(GatesConfig(max_grader_error_rate=0.05), _report(a), _report(b, errors=20))
    c = _checks(v)
    assert not c["grader_error_rate"]["passed"] and c["grader_error_rate"]["value"] == pytest.approx(0.1)
    assert "sample_parse_error" in c["grader_error_rate"]["detail"]
    v, _ = _gate(GatesConfig(max_grader_error_rate=None), _report(a), _report(b, errors=20))
    assert "grader_error_rate" not in _checks(v)


def test_length_growth():
    a = _base()
    b = _flip(a, fix=40)
    cfg = GatesConfig(max_length_growth_ratio=1.5, max_length_growth_tokens=8)
    v, _ = _gate(cfg, _report(a, tokens=20.0), _report(b, tokens=27.0))
    c = _checks(v)
    assert c["length_growth_ratio"]["passed"] and c["length_growth_ratio"]["value"] == pytest.approx(1.35)
    assert c["length_growth_tokens"]["passed"] and c["length_growth_tokens"]["value"] == pytest.approx(7.0)
    v, _ = _gate(cfg, _report(a, tokens=20.0), _report(b, tokens=40.0))
    c = _checks(v)
    assert not c["length_growth_ratio"]["passed"] and not c["length_growth_tokens"]["passed"] and not v["passed"]


def test_gates_use_the_comparison_summaries_when_reports_are_not_given():
    a = _base()
    cmp = compare_reports(_report(a, tokens=10.0), _report(_flip(a, fix=40), tokens=30.0, errors=30), resamples=1000)
    v = evaluate_gates(GatesConfig(max_length_growth_ratio=2.0), cmp)
    c = _checks(v)
    assert c["grader_error_rate"]["value"] == pytest.approx(0.15) and not c["grader_error_rate"]["passed"]
    assert c["length_growth_ratio"]["value"] == pytest.approx(3.0) and not c["length_growth_ratio"]["passed"]


def test_gates_config_is_strict():
    with pytest.raises(ValidationError, match="min_improvment"):
        GatesConfig(min_improvment=0.1)
    with pytest.raises(ValidationError):
        GatesConfig(max_guard_regression=-0.1)
    assert GatesConfig.model_validate({"min_improvement": 0.02}).min_improvement == 0.02
