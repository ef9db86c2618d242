"""The table's statistics: paired difference to the base, latency percentiles, the Pareto front, the recommendation.

- `paired_difference(base_report, row_report)`: the row's mean score minus the base's over the same items, with
  the paired bootstrap 95% CI and McNemar's test of `rft.eval.compare.compare_reports` (reused, not re-derived).
- `percentile(xs, q)`: linear interpolation between order statistics (numpy's default), for p50 / p95 latency.
- `pareto_front(points)`: the indices of points (cost, accuracy) that no other point dominates (another is at most
  as costly and at least as accurate, and strictly better in one); NaN points are never on the front.
- `recommend(rows)`: the cheapest strategy whose accuracy is within the 95% CI of the best one. "Best" is the
  highest accuracy among the deployable rows (a row marked `upper_bound`, best-of-N with the grader selector,
  reads the reference answers and cannot be deployed, so it is neither best nor recommended). "Within the CI"
  means accuracy >= the best row's CI lower bound. "Cheapest" is the lowest `usd_per_1k`; ties go to fewer
  tokens per 1,000 requests (a row without that measurement last), then to the row listed first (the table
  lists base first).
- `answer_spread(answers, references)`: how concentrated a row's answers are. A row is `collapsed` when at least
  10 items were answered, one answer covers >= 80% of them, and that is >= 30 points more than the most common
  reference answer covers: the model says one thing whatever it is asked (a fine-tuned model that learnt the most
  common answer). Its accuracy is what a constant scores, so `recommend` leaves collapsed rows out of both "best"
  and "recommended", and says so.
- `cost_key(rows)`: the cost axis of the front and the plot: USD per 1,000 requests, or tokens per 1,000 when
  every USD cost is 0 (then the recommendation's tie-break on tokens decides, consistently with the plot).

Simplified: the rule compares each row's point estimate with the best row's interval, not the rows' paired
difference (the paired CI is in the table for the reader); training cost is a one-off and is not part of
"cheapest", which is per request.
"""

from __future__ import annotations

import math
from typing import Any, Sequence


def paired_difference(base_report: dict, row_report: dict, *, seed: int = 0, resamples: int = 10_000) -> dict[str, Any]:
    """Row - base over the paired items: {mean, ci95, n, improved, regressed, mcnemar_p}."""
    from rft.eval.compare import compare_reports

    c = compare_reports(base_report, row_report, by=[], seed=seed, resamples=resamples)
    return {"mean": c["mean_difference"], "ci95": list(c["difference_ci95"]), "n": c["n_scored_pairs"],
            "improved": c["n_improved"], "regressed": c["n_regressed"], "mcnemar_p": c["mcnemar"]["p_value"],
            "method": c["ci_method"]}


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics; NaN for no data."""
    s = sorted(xs)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


COLLAPSE_MIN_ITEMS, COLLAPSE_TOP_FRAC, COLLAPSE_MARGIN = 10, 0.8, 0.3


def answer_spread(answers: Sequence[str | None], references: Sequence[str | None] = ()) -> dict[str, Any]:
    """{top, top_count, top_frac, distinct, n, reference_top_frac, collapsed} over the items' final answers
    (None: no answer; compared whitespace-stripped). `references` (may be empty) are the items' reference answers."""
    from collections import Counter

    got = [a.strip() for a in answers if a is not None and a.strip()]
    refs = [r.strip() for r in references if r is not None and str(r).strip()]
    n = len(got)
    top, top_count = (Counter(got).most_common(1)[0] if got else (None, 0))
    top_frac = top_count / n if n else 0.0
    ref_top = Counter(refs).most_common(1)[0][1] / len(refs) if refs else 0.0
    collapsed = n >= COLLAPSE_MIN_ITEMS and top_frac >= COLLAPSE_TOP_FRAC and top_frac >= ref_top + COLLAPSE_MARGIN
    return {"top": top, "top_count": top_count, "top_frac": top_frac, "distinct": len(set(got)), "n": n,
            "reference_top_frac": ref_top, "collapsed": collapsed}


def collapse_note(row: dict) -> str | None:
    """One sentence for a collapsed row (None otherwise)."""
    a = row.get("answers") or {}
    if not a.get("collapsed"):
        return None
    return (f"{row['label']} answers {a['top']!r} to {a['top_count']} of {a['n']} items (the most common reference "
            f"answer covers {a['reference_top_frac']:.0%}): its accuracy is what a constant answer scores, so it is "
            "left out of the recommendation")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x) and not math.isinf(x)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of the points (cost, accuracy) on the Pareto front: lower cost and higher accuracy
    are better; a point is dominated when another is <= in cost, >= in accuracy, and better in one of them."""
    front = []
    for i, (ci, ai) in enumerate(points):
        if not (_finite(ci) and _finite(ai)):
            continue
        dominated = any(_finite(cj) and _finite(aj) and cj <= ci and aj >= ai and (cj < ci or aj > ai)
                        for j, (cj, aj) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def cost_key(rows: Sequence[dict]) -> str:
    """The cost the Pareto front and the plot use: `usd_per_1k`, or `tokens_per_1k` when every finished row's USD
    cost is 0 (a price table of zeros makes every row equally cheap in USD; tokens still tell them apart)."""
    usd = [r.get("usd_per_1k") for r in rows if r.get("status", "ok") == "ok" and _finite(r.get("usd_per_1k"))]
    return "tokens_per_1k" if usd and all(u == 0 for u in usd) else "usd_per_1k"


def recommend(rows: Sequence[dict]) -> dict[str, Any] | None:
    """The cheapest deployable row whose accuracy is within the best deployable row's 95% CI (see the module
    docstring). Rows need `label`, `accuracy`, `accuracy_ci95`, `upper_bound`, `usd_per_1k`, `tokens_per_1k`;
    rows with a NaN accuracy or cost (skipped, failed) are ignored. None when no row qualifies."""
    ok = [(i, r) for i, r in enumerate(rows) if not r.get("upper_bound") and _finite(r.get("accuracy"))
          and _finite(r.get("usd_per_1k")) and not (r.get("answers") or {}).get("collapsed")]
    excluded = [n for n in (collapse_note(r) for r in rows) if n]
    if not ok:
        return None
    bi, best = max(ok, key=lambda t: (t[1]["accuracy"], -t[0]))
    floor = best["accuracy_ci95"][0]
    if not _finite(floor):
        floor = best["accuracy"]
    within = [(i, r) for i, r in ok if r["accuracy"] >= floor]
    ri, rec = min(within, key=lambda t: (t[1]["usd_per_1k"], _tokens(t[1]), t[0]))
    tok = _tokens(rec)
    tok_text = f", {tok:.0f} tokens" if _finite(tok) else ""
    return {"label": rec["label"], "best": best["label"], "best_accuracy": best["accuracy"], "threshold": floor,
            "within_ci": [r["label"] for _, r in within], "excluded": excluded,
            "rule": "the cheapest deployable strategy (USD per 1,000 requests) whose accuracy is at least the lower "
                    "95% CI bound of the most accurate deployable strategy; upper-bound rows are excluded, and so are "
                    "rows that give one answer to nearly every item (collapsed)",
            "reason": f"{rec['label']}: accuracy {rec['accuracy']:.3f} >= {floor:.3f} (the CI lower bound of the best, "
                      f"{best['label']} at {best['accuracy']:.3f}), at ${rec['usd_per_1k']:.4f}{tok_text} per 1,000 "
                      "requests"}


def _tokens(row: dict) -> float:
    """The tie-break after USD: tokens per 1,000 requests; a row without a measurement sorts last."""
    t = row.get("tokens_per_1k")
    return t if _finite(t) else math.inf
