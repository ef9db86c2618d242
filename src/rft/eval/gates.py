"""Quality gates: may a candidate checkpoint replace the baseline?

What
----
`GatesConfig` (defined in `rft.config`, re-exported here) is the job spec's `gates` section;
`evaluate_gates(cfg, comparison, ...)` turns paired comparisons (`rft.eval.compare.compare_reports`,
baseline = A, candidate = B) into a verdict
`{passed, checks: [{name, passed, value, threshold, detail}]}` that keeps the numbers behind every check:

- `not_worse` (always on): the candidate's mean score on the paired validation items is not below the
  baseline's (point estimate of candidate - baseline >= 0). A worse candidate never passes.
- `min_improvement`: the lower bound of the paired bootstrap 95% CI of candidate - baseline must be above
  `min_improvement` (strictly). The default 0.0 asks for an improvement that the data can tell from noise;
  a negative value turns the gate into a non-inferiority margin.
- `guard_regression` (when a guard comparison is given, or `guard_required`): on the guard set
  (`rft.eval.guard_file`: what must not get worse), the CI lower bound of candidate - baseline must be
  >= -max_guard_regression.
- `grader_error_rate`: the candidate's unscored fraction (grader errors) on the validation set must be
  <= max_grader_error_rate (and on the guard set, when there is one).
- `length_growth_ratio` / `length_growth_tokens`: the candidate's mean completion length may grow at most by
  this factor / this many tokens over the baseline's.
- `grader_disagreement` (when `max_grader_disagreement` is set): people's verdicts on the job's samples
  (`rft review`) must disagree with the grader on pass/fail at most this often, measured on at least
  `min_review_verdicts` verdicts with a grader score; with fewer it cannot be measured and the checkpoint is
  held (the check fails and says so). `grader_review` is what the caller measured: `{"n", "disagreement"}`
  (`rft.registry.reviews.measured_disagreement(reg, job_id)`, or `rft.review.verdicts.job_agreement(...)
  ["overall"]`); None counts as no verdicts.

Simplified: the checks are independent and each one uses the 95% CI it is given; there is no correction for
testing several gates at once (each gate has to pass, which only makes the verdict stricter). A comparison
with no item scored by both sides fails every check that needs a difference.

How to run: `python -c "from rft.eval.gates import GatesConfig; print(GatesConfig().model_dump())"`; the
training loop runs it after the final evaluation when the job spec has a `gates` section.
"""

from __future__ import annotations

import math
from typing import Any

from rft.config import GatesConfig

__all__ = ["GatesConfig", "evaluate_gates", "grader_disagreement_check"]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check(name: str, passed: bool, value: Any, threshold: Any, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "detail": detail}


def _summary(report: dict | None, comparison: dict | None, side: str) -> dict:
    """A side's summary numbers: from its eval report when given, else the comparison's copy."""
    if report:
        return report
    return (comparison or {}).get(side) or {}


def grader_disagreement_check(limit: float, min_verdicts: int, review: dict | None) -> dict[str, Any]:
    """The `grader_disagreement` check from a measured `{"n", "disagreement"}` (None: nothing reviewed)."""
    from rft.registry.reviews import disagreement_rule

    n = int((review or {}).get("n") or 0)
    d = (review or {}).get("disagreement")
    ok, why = disagreement_rule(n, d if _finite(d) else None, limit, min_verdicts)
    return _check("grader_disagreement", ok, d if _finite(d) else None, limit, why) | {"n": n}


def evaluate_gates(cfg: GatesConfig, comparison: dict, *, guard_comparison: dict | None = None,
                   candidate_report: dict | None = None, baseline_report: dict | None = None,
                   guard_required: bool = False, grader_review: dict | None = None) -> dict[str, Any]:
    """The verdict for a candidate. `comparison` (and `guard_comparison`) must be baseline = A, candidate = B.
    `guard_required`: the job has a guard set, so a missing `guard_comparison` fails the guard check."""
    checks: list[dict[str, Any]] = []
    diff = comparison.get("mean_difference")
    lo = (comparison.get("difference_ci95") or [None, None])[0]
    n = comparison.get("n_scored_pairs", 0)

    # 1. not worse (always on)
    if _finite(diff):
        checks.append(_check("not_worse", diff >= 0, diff, 0.0,
                             f"candidate - baseline mean score {diff:+.4f} on {n} paired items"))
    else:
        checks.append(_check("not_worse", False, diff, 0.0, "no item was scored for both baseline and candidate"))

    # 2. minimum improvement, by the paired CI's lower bound
    if _finite(lo):
        hi = comparison["difference_ci95"][1]
        checks.append(_check("min_improvement", lo > cfg.min_improvement, lo, cfg.min_improvement,
                             f"95% CI of candidate - baseline [{lo:+.4f}, {hi:+.4f}] ({comparison.get('ci_method', '')}); "
                             f"its lower bound must be above {cfg.min_improvement:+.4f}"))
    else:
        checks.append(_check("min_improvement", False, lo, cfg.min_improvement, "no confidence interval (no paired items)"))

    # 3. guard set regression
    if guard_comparison is not None:
        glo = (guard_comparison.get("difference_ci95") or [None, None])[0]
        gdiff = guard_comparison.get("mean_difference")
        if _finite(glo):
            ghi = guard_comparison["difference_ci95"][1]
            checks.append(_check("guard_regression", glo >= -cfg.max_guard_regression, glo, -cfg.max_guard_regression,
                                 f"guard set: candidate - baseline {gdiff:+.4f}, 95% CI [{glo:+.4f}, {ghi:+.4f}] on "
                                 f"{guard_comparison.get('n_scored_pairs', 0)} items; the lower bound must be >= "
                                 f"{-cfg.max_guard_regression:+.4f}"))
        else:
            checks.append(_check("guard_regression", False, glo, -cfg.max_guard_regression,
                                 "guard set: no item was scored for both baseline and candidate"))
    elif guard_required:
        checks.append(_check("guard_regression", False, None, -cfg.max_guard_regression,
                             "the job has a guard set but no guard comparison was given (no guard baseline?)"))

    # 4. grader error rate of the candidate
    if cfg.max_grader_error_rate is not None:
        sides = [("validation", _summary(candidate_report, comparison, "b"))]
        if guard_comparison is not None:
            sides.append(("guard", guard_comparison.get("b") or {}))
        for where, s in sides:
            rate = s.get("unscored_frac")
            name = "grader_error_rate" if where == "validation" else "guard_grader_error_rate"
            if not _finite(rate):
                checks.append(_check(name, False, rate, cfg.max_grader_error_rate,
                                     f"{where} set: the candidate's unscored fraction is unknown"))
                continue
            errs = {k: v for k, v in (s.get("error_rates") or {}).items() if v}
            by_kind = (" (" + ", ".join(f"{k} {v:.1%}" for k, v in sorted(errs.items())) + ")") if errs else ""
            checks.append(_check(name, rate <= cfg.max_grader_error_rate, rate, cfg.max_grader_error_rate,
                                 f"{where} set: {rate:.1%} of the candidate's items were unscored{by_kind}"))

    # 5. completion length growth
    if cfg.max_length_growth_ratio is not None or cfg.max_length_growth_tokens is not None:
        c_len = _summary(candidate_report, comparison, "b").get("mean_completion_tokens")
        b_len = _summary(baseline_report, comparison, "a").get("mean_completion_tokens")
        known = _finite(c_len) and _finite(b_len)
        if cfg.max_length_growth_ratio is not None:
            if known and b_len > 0:
                ratio = c_len / b_len
                checks.append(_check("length_growth_ratio", ratio <= cfg.max_length_growth_ratio, ratio,
                                     cfg.max_length_growth_ratio,
                                     f"mean completion tokens {b_len:.1f} -> {c_len:.1f} (x{ratio:.2f})"))
            else:
                checks.append(_check("length_growth_ratio", False, None, cfg.max_length_growth_ratio,
                                     f"mean completion tokens unknown or zero (baseline {b_len}, candidate {c_len})"))
        if cfg.max_length_growth_tokens is not None:
            if known:
                growth = c_len - b_len
                checks.append(_check("length_growth_tokens", growth <= cfg.max_length_growth_tokens, growth,
                                     cfg.max_length_growth_tokens,
                                     f"mean completion tokens {b_len:.1f} -> {c_len:.1f} ({growth:+.1f})"))
            else:
                checks.append(_check("length_growth_tokens", False, None, cfg.max_length_growth_tokens,
                                     f"mean completion tokens unknown (baseline {b_len}, candidate {c_len})"))

    # 6. people's disagreement with the grader (rft review)
    if cfg.max_grader_disagreement is not None:
        checks.append(grader_disagreement_check(cfg.max_grader_disagreement, cfg.min_review_verdicts, grader_review))

    return {"object": "rft.gates_verdict", "passed": all(c["passed"] for c in checks), "checks": checks,
            "config": cfg.model_dump(mode="json")}
