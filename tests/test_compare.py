"""Evaluation statistics against independent computations: Student-t quantiles against printed tables, pass@k by
brute-force enumeration, McNemar
against scipy's binomial test and chi-square distribution, the paired bootstrap CI against scipy.stats.bootstrap
and by its coverage over simulated datasets with a known mean difference."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
from scipy import stats as sps

from rft.errors import RftError
from rft.eval.compare import compare_reports, mcnemar, paired_bootstrap_ci
from rft.eval.report import comparison_markdown
from rft.eval.runner import mean_pass_at_k, pass_ks
from rft.eval.stats import mean_ci, pass_at_k, t_quantile_975


# ------------------------------------------------------------------------------- Student-t intervals
# 97.5% quantiles of Student's t to 4 decimals, as printed in statistics tables (not computed by scipy): a lookup
# that used df 10's 2.2281 for df 11-14 (as rft once did) or a normal-based approximation fails these.
T975 = {1: 12.7062, 2: 4.3027, 5: 2.5706, 10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314,
        29: 2.0452, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantiles_are_exact(df):
    assert t_quantile_975(df) == pytest.approx(T975[df], abs=5e-5)


@pytest.mark.parametrize("n", [12, 13, 14, 15])
def test_mean_ci_uses_the_t_quantile_of_its_degrees_of_freedom(n):
    """Non-binary scores of n items: the interval is mean +- t(0.975, n-1) * s / sqrt(n) with n-1 in 11..14."""
    xs = [round(0.1 + 0.8 * ((7 * i) % n) / n, 3) for i in range(n)]  # not all 0/1: the t interval, not Wilson
    ci = mean_ci(xs)
    mean = sum(xs) / n
    half = T975[n - 1] * float(np.std(xs, ddof=1)) / n ** 0.5
    assert (ci.mean, ci.n) == (pytest.approx(mean), n)
    assert ci.low == pytest.approx(mean - half, abs=1e-4) and ci.high == pytest.approx(mean + half, abs=1e-4)


def test_mean_ci_of_unit_scores_stays_within_0_and_1_and_others_are_not_clipped():
    near_one = [1.0] * 13 + [0.5]  # a partial-credit grader near the top: mean + half-width would pass 1
    ci = mean_ci(near_one)
    assert ci.high == 1.0 and 0.0 < ci.low < ci.mean < 1.0
    near_zero = [0.0] * 13 + [0.5]
    assert mean_ci(near_zero).low == 0.0
    wide = [0.0] * 13 + [2.0]  # scores outside [0, 1]: the plain t interval, below 0
    assert mean_ci(wide).low < 0.0


# ------------------------------------------------------------------------------------------- pass@k
def _pass_at_k_brute(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c of them correct) that hold a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(1 for s in subsets if any(i < c for i in s)) / len(subsets)


def test_pass_at_k_matches_enumeration():
    for n in range(1, 9):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_brute(n, c, k), abs=1e-12), (n, c, k)


def test_mean_pass_at_k_and_ks():
    assert pass_ks(0) == [] and pass_ks(1) == [1] and pass_ks(2) == [1, 2]
    assert pass_ks(6) == [1, 2, 4, 6] and pass_ks(8) == [1, 2, 4, 8]
    correct = [0, 1, 3, 5, 2]
    for k in pass_ks(5):
        want = sum(_pass_at_k_brute(5, c, k) for c in correct) / len(correct)
        assert mean_pass_at_k(correct, 5, k) == pytest.approx(want)


# ------------------------------------------------------------------------------------------- McNemar
def test_mcnemar_exact_matches_scipy_binomtest():
    for b in range(0, 15):
        for c in range(0, 15):
            if b + c == 0 or b + c >= 25:
                continue
            r = mcnemar(b, c)
            assert r["method"] == "exact_binomial"
            want = sps.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
            assert r["p_value"] == pytest.approx(want, rel=1e-9, abs=1e-15), (b, c)


def test_mcnemar_chi2_matches_scipy():
    for b, c in [(10, 15), (0, 25), (30, 12), (100, 80), (13, 13), (40, 0)]:
        r = mcnemar(b, c)
        assert r["method"] == "chi2_continuity"
        stat = (abs(b - c) - 1) ** 2 / (b + c)
        assert r["statistic"] == pytest.approx(stat)
        assert r["p_value"] == pytest.approx(sps.chi2.sf(stat, df=1), rel=1e-9)
    # the switch point is configurable, and no discordant pairs means no evidence at all
    assert mcnemar(10, 15, exact_below=100)["method"] == "exact_binomial"
    assert mcnemar(0, 0)["p_value"] == 1.0


# ------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(1)
    d = rng.choice([-1.0, 0.0, 1.0], size=120, p=[0.2, 0.5, 0.3])
    lo, hi = paired_bootstrap_ci(d, resamples=10_000, seed=3)
    ref = sps.bootstrap((d,), np.mean, method="percentile", n_resamples=10_000, confidence_level=0.95,
                        random_state=np.random.default_rng(11)).confidence_interval
    # two independent Monte Carlo estimates of the same quantiles: close, not identical
    assert lo == pytest.approx(ref.low, abs=0.02) and hi == pytest.approx(ref.high, abs=0.02)
    assert lo < d.mean() < hi
    assert paired_bootstrap_ci(d, resamples=10_000, seed=3) == (lo, hi)  # seeded: reproducible


@pytest.mark.parametrize("kind", ["pass_fail", "continuous"])
def test_bootstrap_ci_coverage_near_95_percent(kind):
    """Simulate many datasets with a known mean difference; the interval should cover it about 95% of the time.
    The percentile bootstrap runs a little narrow at small n, so the accepted band is [0.90, 0.985]
    (with 400 datasets the standard error of the coverage is ~0.011; the seeds are fixed)."""
    rng = np.random.default_rng(2024)
    sims, n, covered = 400, 80, 0
    if kind == "pass_fail":
        # A and B pass/fail per item, correlated through item difficulty; true mean of B - A is 0.6 - 0.45
        true = 0.15
    else:
        true = 0.1
    for s in range(sims):
        if kind == "pass_fail":
            easy = rng.random(n)
            a = (easy < 0.45).astype(float)
            b = (easy < 0.6).astype(float)
            flip = rng.random(n) < 0.2  # some items change independently of difficulty
            b[flip] = (rng.random(flip.sum()) < 0.6).astype(float)
            a_flip = rng.random(n) < 0.2
            a[a_flip] = (rng.random(a_flip.sum()) < 0.45).astype(float)
            d = b - a
        else:
            d = rng.normal(true, 0.4, size=n)
        lo, hi = paired_bootstrap_ci(d, resamples=1000, seed=s)
        covered += lo <= true <= hi
    cov = covered / sims
    assert 0.90 <= cov <= 0.985, cov


def test_bootstrap_degenerate_cases():
    assert all(np.isnan(paired_bootstrap_ci([])))
    assert paired_bootstrap_ci([0.5]) == (0.5, 0.5)
    assert paired_bootstrap_ci([0.0] * 30) == (0.0, 0.0)


# ------------------------------------------------------------------------------------------- compare_reports
def _report(scores, *, ids=None, fields=None, sha="s1", model="m", tokens=10.0, errors=None):
    items = []
    for i, s in enumerate(scores):
        it = {"index": i, "score": s, "error": (errors or {}).get(i) if s is None else None,
              "completion": f"out{i}-{s}", "answer": str(i)}
        if ids is not None:
            it["id"] = ids[i]
        if fields is not None:
            it["fields"] = fields[i]
        items.append(it)
    return {"model": model, "dataset_sha256": sha, "items": items, "mean_completion_tokens": tokens,
            "unscored_frac": sum(1 for s in scores if s is None) / len(scores)}


def test_compare_reports_numbers_by_hand():
    a = [1, 0, 1, 0, 1, None, 0.5, 1]
    b = [1, 1, 0, 1, 1, 1, 1.0, None]
    topics = [{"topic": t} for t in "xxyyxyxy"]
    r = compare_reports(_report(a, fields=topics), _report(b, fields=topics), by=["topic"], seed=0, resamples=2000)
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    diffs = [y - x for x, y in pairs]
    assert r["paired_by"] == "index" and r["n_paired"] == 8 and r["n_scored_pairs"] == len(pairs) == 6
    assert r["mean_difference"] == pytest.approx(sum(diffs) / len(diffs))
    assert r["mean_a"] == pytest.approx(sum(x for x, _ in pairs) / 6)
    assert [it["index"] for it in r["improved"]] == [1, 3, 6]
    assert [it["index"] for it in r["regressed"]] == [2]
    assert r["n_unchanged"] == 2
    assert [it["index"] for it in r["became_unscored"]] == [7]
    assert r["unscored"] == {"a_only": 1, "b_only": 1, "both": 0}
    # McNemar on pass/fail (score >= 1): item 6 (0.5 -> 1.0) is an improvement as well
    assert (r["mcnemar"]["improved"], r["mcnemar"]["regressed"]) == (3, 1)
    assert r["mcnemar"]["p_value"] == pytest.approx(sps.binomtest(1, 4, 0.5).pvalue)
    lo, hi = r["difference_ci95"]
    assert lo <= r["mean_difference"] <= hi
    # slices: topic x holds items 0, 1, 4, 6 -> diffs 0, 1, 0, 0.5
    sx = r["slices"]["topic"]["x"]
    assert sx["n_scored_pairs"] == 4 and sx["mean_difference"] == pytest.approx(1.5 / 4)
    sy = r["slices"]["topic"]["y"]  # items 2, 3 scored by both (5 and 7 are not): diffs -1, +1
    assert sy["n_scored_pairs"] == 2 and sy["mean_difference"] == pytest.approx(0.0)
    md = comparison_markdown(r)
    assert "By `topic`" in md and "Regressed items (1)" in md and r["mcnemar"]["method"] in md
    json.dumps(r)  # JSON-ready


def test_compare_pairs_by_id_whatever_the_order():
    rng = random.Random(0)
    ids = [f"q{i}" for i in range(40)]
    a = [rng.random() < 0.5 for _ in ids]
    b = [x or rng.random() < 0.3 for x in a]
    ra = _report([float(x) for x in a], ids=ids)
    order = list(range(40))
    rng.shuffle(order)
    rb = _report([float(b[i]) for i in order], ids=[ids[i] for i in order], sha="s2")  # another file, same ids
    r = compare_reports(ra, rb, resamples=500)
    assert r["paired_by"] == "id"
    assert r["mean_difference"] == pytest.approx((sum(b) - sum(a)) / 40)
    assert {it["id"] for it in r["improved"]} == {ids[i] for i in range(40) if b[i] and not a[i]}
    assert any("datasets differ" in w for w in r["warnings"])


def test_compare_refuses_different_datasets_without_ids():
    with pytest.raises(RftError, match="different datasets"):
        compare_reports(_report([1, 0]), _report([1, 0], sha="other"))
    with pytest.raises(RftError, match="per-item"):
        compare_reports({"items": []}, _report([1]))
    with pytest.raises(RftError, match="field 'topic'"):
        compare_reports(_report([1, 0]), _report([0, 1]), by=["topic"])


def test_compare_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(5)
    n = 300
    a = (rng.random(n) < 0.4).astype(float)
    better = a.copy()
    better[(a == 0) & (rng.random(n) < 0.5)] = 1.0  # B fixes about half of A's failures
    r = compare_reports(_report(list(a)), _report(list(better)), resamples=2000)
    assert r["difference_ci95"][0] > 0 and r["mcnemar"]["p_value"] < 1e-6 and r["n_regressed"] == 0
    same = compare_reports(_report(list(a)), _report(list(a)), resamples=2000)
    assert same["difference_ci95"] == [0.0, 0.0] and same["mcnemar"]["p_value"] == 1.0


def test_run_report_markdown_shows_comparison_and_verdict(tmp_path):
    from rft.eval.gates import GatesConfig, evaluate_gates
    from rft.eval.report import write_markdown

    base, final = _report([1, 0, 0, 1, 0] * 8), _report([1, 1, 0, 0, 1] * 8)
    c = compare_reports(base, final, resamples=500)
    job = {"id": "ftjob-x", "model": "m", "status": "succeeded", "training_file": "t.jsonl",
           "improved_items": c["improved"], "regressed_items": c["regressed"],
           "final_comparison": {k: v for k, v in c.items() if k not in ("improved", "regressed")},
           "final_verdict": evaluate_gates(GatesConfig(), c)}
    write_markdown(job, tmp_path / "report.md")
    md = (tmp_path / "report.md").read_text()
    assert "Final against baseline" in md and "McNemar" in md and "Quality gates" in md
    assert f"regressed: {len(c['regressed'])} items" in md and "regressed item 3" in md
