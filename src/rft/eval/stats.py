"""Statistics for evaluation reports.

- `wilson_ci(k, n)`: Wilson score interval for a pass rate (good coverage at small n and near 0 or 1).
- `mean_ci(xs)`: mean with a 95% interval; Wilson when every score is 0 or 1, else a Student-t interval
  (exact quantiles from `scipy.stats.t`), kept within [0, 1] when every score is (a mean of such scores cannot
  leave it: partial-credit graders near 1 would otherwise report an upper bound above 1).
- `pass_at_k(n, c, k)`: the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021).

Simplified: the intervals assume independent items; paired comparisons live in `rft.eval.compare`.
How to run: `python -c "from rft.eval.stats import mean_ci; print(mean_ci([0.2, 0.5, 0.9]))"`.
"""

from __future__ import annotations

import math

from rft.types import MetricCI

Z95 = 1.959963984540054


def wilson_ci(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def t_quantile_975(df: int) -> float:
    """The Student-t 97.5% quantile with `df` degrees of freedom (the half-width factor of a 95% interval)."""
    from scipy.stats import t  # imported on first use: scipy.stats takes most of a second to load

    return float(t.ppf(0.975, df))


def mean_ci(xs: list[float]) -> MetricCI:
    n = len(xs)
    if n == 0:
        return MetricCI(float("nan"), float("nan"), float("nan"), 0)
    mean = sum(xs) / n
    if all(x in (0.0, 1.0) for x in xs):
        lo, hi = wilson_ci(int(sum(xs)), n)
        return MetricCI(mean, lo, hi, n)
    if n == 1:
        return MetricCI(mean, float("nan"), float("nan"), 1)
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    half = t_quantile_975(n - 1) * math.sqrt(var / n)
    lo, hi = mean - half, mean + half
    if all(0.0 <= x <= 1.0 for x in xs):
        lo, hi = max(0.0, lo), min(1.0, hi)
    return MetricCI(mean, lo, hi, n)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) passes."""
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod
