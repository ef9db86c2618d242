"""Agreement between people and the grader: accuracy and Cohen's kappa on pass/fail, with 95% intervals.

Call `agreement(human, grader, threshold=0.5, keys=None)`: `human[i]` is a person's verdict on item i (1.0 pass,
0.0 fail, or a score in [0, 1]), `grader[i]` the grader's score on the same item, or None when the grader could
not score it (an error or timeout: unscored is not zero, so such items are counted in `unscored` and left out
of every statistic). Both sides become pass/fail at `threshold` (score >= threshold passes). The human verdict
is the truth of the confusion matrix: tp = both pass, fp = the grader passes what the person failed, fn = the
grader fails what the person passed, tn = both fail.

The returned dict:
  n               pairs where both sides are scored
  unscored        items whose grader score is None
  accuracy        (tp + tn) / n                                   None when n = 0
  accuracy_ci95   Wilson score interval, z = 1.959964            None when n = 0
  kappa           Cohen's kappa (po - pe) / (1 - pe)             None when undefined (n = 0, or pe = 1: both
                                                                 sides put every item in the same one class)
  kappa_ci95      kappa -/+ z * SE, SE = sqrt(po (1 - po) / (n (1 - pe)^2)) (Cohen 1960's large-sample
                  standard error), clipped to [-1, 1]             None when kappa is None
  disagreement    1 - accuracy                                    None when n = 0
  confusion       {"tp", "fp", "fn", "tn"}
  disagreements   the keys (or, without `keys`, the integer indices) of the scored items where the two differ
  threshold, method   what was used, for the report

Simplified: the kappa interval is the large-sample normal approximation (not a bootstrap), so it is rough
for small n (below ~30) and collapses to a point when po is 0 or 1; the Wilson interval for accuracy stays
sensible at small n and at 0% / 100%. Scores between the two classes are thresholded, not weighted (no
weighted kappa). Every degenerate case returns the documented values above and never divides by zero.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the two-sided 95% normal quantile
METHOD = ("accuracy: Wilson score interval; kappa: Cohen's kappa on pass/fail at the threshold, 95% CI from the "
          "large-sample standard error sqrt(po(1-po)/(n(1-pe)^2)), clipped to [-1, 1]")


def wilson(k: int, n: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval for k successes in n trials ([lo, hi]); None when n = 0."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def cohen_kappa(tp: int, fp: int, fn: int, tn: int, z: float = Z95) -> tuple[float | None, list[float] | None]:
    """Cohen's kappa of a 2x2 table and its large-sample 95% interval; (None, None) when undefined."""
    n = tp + fp + fn + tn
    if n == 0:
        return None, None
    po = (tp + tn) / n
    human_pass, grader_pass = (tp + fn) / n, (tp + fp) / n
    pe = human_pass * grader_pass + (1 - human_pass) * (1 - grader_pass)
    if pe >= 1.0 - 1e-12:  # both raters used one and the same class for every item: chance explains everything
        return None, None
    kappa = (po - pe) / (1 - pe)
    se = math.sqrt(max(po * (1 - po), 0.0) / (n * (1 - pe) ** 2))
    return kappa, [max(-1.0, kappa - z * se), min(1.0, kappa + z * se)]


def agreement(human: list[float], grader: list[float | None], *, threshold: float = 0.5,
              keys: list[str] | None = None) -> dict:
    """Agreement of people (`human`, the truth) with the grader on pass/fail at `threshold`; see the module."""
    if len(human) != len(grader):
        raise ValueError(f"agreement: {len(human)} human verdicts but {len(grader)} grader scores")
    if keys is not None and len(keys) != len(human):
        raise ValueError(f"agreement: {len(keys)} keys for {len(human)} verdicts")
    tp = fp = fn = tn = unscored = 0
    differ: list = []
    for i, (h, g) in enumerate(zip(human, grader)):
        if g is None or (isinstance(g, float) and math.isnan(g)):
            unscored += 1
            continue
        hp, gp = float(h) >= threshold, float(g) >= threshold
        if hp and gp:
            tp += 1
        elif gp:
            fp += 1
        elif hp:
            fn += 1
        else:
            tn += 1
        if hp != gp:
            differ.append(keys[i] if keys is not None else i)
    n = tp + fp + fn + tn
    acc = (tp + tn) / n if n else None
    kappa, kci = cohen_kappa(tp, fp, fn, tn)
    return {"n": n, "unscored": unscored, "accuracy": acc, "accuracy_ci95": wilson(tp + tn, n),
            "kappa": kappa, "kappa_ci95": kci, "disagreement": None if acc is None else 1.0 - acc,
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}, "disagreements": differ,
            "threshold": threshold, "method": METHOD}
