"""Evaluation: greedy accuracy with a 95% confidence interval, optional pass@k, per-item records."""

from rft.eval.runner import evaluate
from rft.eval.stats import mean_ci, pass_at_k, wilson_ci

__all__ = ["evaluate", "mean_ci", "pass_at_k", "wilson_ci"]
