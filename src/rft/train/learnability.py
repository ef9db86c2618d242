"""The learnability check: will GRPO get a signal from this job, and if not, what fixes it?

Group-relative RL learns only from groups whose completions got different rewards. When the base model nearly
never passes (or nearly always passes) the grader, nearly every group is all-zero (all-one), its advantages are
zero, and a run spends its steps learning nothing. This module measures that before training and picks remedies.

    measure(parts, rows) -> Measurement       G sampled completions per row at the training temperature, graded
                                              (the same measurement `rft preflight` reports)
    verdict(m, job) -> Verdict                pure: is the signal too sparse, which remedies fit, stop or not
    check(parts, job) -> Verdict              measure on `rft.learnability.prompts` training rows, then verdict
    apply_remedies(job, overrides) -> JobSpec the job with the remedies made concrete (what the run records)
    reference_template(job) -> str | None     the reference output, when the job makes it known

Remedies applied automatically (when `rft.learnability.remedies`; each is an ordinary config value, so the
resolved config, report and lineage record it):
  - a supervised warm start on reference outputs (`rft.warm_start`), when the reference output is known
    (`rft.warm_start.reference_output`, `rft.train.reference_output`, or an exact-match `string_check` `eq` whose
    input is `{{sample.output_text}}`: its reference is the output that passes) and the groups are nearly all-zero;
  - dynamic sampling (`rft.algorithm.dynamic_sampling`, DAPO): extra prompts are drawn until a step has its groups
    whose rewards differ;
  - larger groups (`rft.sampling.n`, up to `rft.learnability.max_group`), when no warm start applies and the
    measured pass rate is above 0 (the smallest group whose expected share of differing groups reaches
    `min_signal_frac`).
Named but never applied (they change what is measured): answer extraction (`rft.extraction`) and a
partial-credit grader. The run stops (RftError, exit 2) only when no remedy can give a signal: every sampled
completion failed and no warm start is possible, or every one passed.

Simplified: the pass rate is measured once, on the base model, before any warm start; the larger-groups remedy
assumes every prompt has the mean pass rate.
Run: through `rft train JOB.yaml` (the check runs first; `rft.learnability.enabled=false` turns it off).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rft.config import JobSpec, parse_job
from rft.errors import RftError
from rft.train.cursor import DataCursor
from rft.train.step import rollout
from rft.types import ERROR_KINDS

# The advice every no-signal message ends with (the learnability check, the monitor's alarm).
ADVICE = ("remedies: a supervised warm start on reference outputs (rft.warm_start.reference_output, e.g. "
          "\"{{item.answer}}\"), dynamic sampling (rft.algorithm.dynamic_sampling=true), larger groups "
          "(rft.sampling.n), answer extraction (rft.extraction.pattern, grading {{sample.extracted}}), or a "
          "partial-credit grader (text_similarity, a python grader, or multi)")


@dataclass(frozen=True)
class Measurement:
    """Pass rates of sampled completions, one per row (NaN when a row had no scored completion)."""

    group: int  # G, completions per row
    pass_rates: list[float]
    zero_variance: int  # rows whose scored rewards all equal (or fewer than 2 scored)
    unscored_frac: float = 0.0
    error_rates: dict = field(default_factory=dict)
    completion_tokens_mean: float = 0.0
    sampling_seconds: float = 0.0
    grading_seconds: float = 0.0
    grader_latency_ms_mean: float = 0.0

    @property
    def rows(self) -> int:
        return len(self.pass_rates)

    @property
    def pass_rate(self) -> float:
        v = [r for r in self.pass_rates if r == r]
        return sum(v) / len(v) if v else float("nan")

    @property
    def signal_frac(self) -> float:
        """Share of groups whose rewards differ."""
        return 1 - self.zero_variance / max(1, self.rows)


def measure(parts, rows: list[dict], *, seed: int) -> Measurement:
    """G completions per row at the training sampling settings, graded with the job's grader (the training
    step's own rollout, so tools and response_format apply exactly as they will in training)."""
    G = parts.values.completions_per_prompt
    ro = rollout(parts, rows, seed)
    flat, grades, t_sample, t_grade = ro.completions, ro.grades, ro.t_sampling, ro.t_grading
    pass_rates, zero_var = [], 0
    threshold = getattr(parts.grader, "pass_threshold", None) or 1.0
    for i in range(len(rows)):
        g = [x.score for x in grades[i * G:(i + 1) * G] if x.score is not None]
        pass_rates.append(sum(1 for v in g if v >= threshold) / len(g) if g else float("nan"))
        if len(g) < 2 or max(g) - min(g) < 1e-6:
            zero_var += 1
    n = max(1, len(grades))
    return Measurement(
        group=G, pass_rates=pass_rates, zero_variance=zero_var,
        unscored_frac=sum(1 for g in grades if g.score is None) / n,
        error_rates={k: sum(1 for g in grades if g.error == k) / n for k in ERROR_KINDS},
        completion_tokens_mean=sum(len(c.token_ids) for c in flat) / max(1, len(flat)),
        sampling_seconds=t_sample, grading_seconds=t_grade,
        grader_latency_ms_mean=1000 * sum(g.latency_s for g in grades) / n)


def reference_template(job: JobSpec) -> str | None:
    """The output that passes, as a template over the row, when the job makes it known."""
    if job.rft.warm_start.reference_output:
        return job.rft.warm_start.reference_output
    if job.rft.train.reference_output:
        return job.rft.train.reference_output
    g = job.grader
    if (g.get("type") == "string_check" and g.get("operation") == "eq" and isinstance(g.get("input"), str)
            and "".join(g["input"].split()) == "{{sample.output_text}}" and isinstance(g.get("reference"), str)
            and "sample." not in g["reference"]):
        return g["reference"]
    return None


@dataclass(frozen=True)
class Verdict:
    kind: str  # "learnable" | "sparse_zero" (nearly all groups all-fail) | "sparse_one" (nearly all all-pass)
    message: str
    numbers: dict
    overrides: dict  # dotted config key -> value: the remedies applied
    applied: list[str]  # their names
    advice: list[str]  # remedies named, not applied
    stop: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _p_signal(p: float, G: int) -> float:
    """Probability that a group of G completions with pass probability p has rewards that differ."""
    return 1 - p ** G - (1 - p) ** G


def verdict(m: Measurement, job: JobSpec) -> Verdict:
    """Decide from a measurement (pure: tests inject pass rates)."""
    lc = job.rft.learnability
    G, p = m.group, m.pass_rate
    numbers = {"prompts": m.rows, "group": G, "pass_rate": p, "signal_frac": m.signal_frac,
               "zero_variance_frac": 1 - m.signal_frac, "min_signal_frac": lc.min_signal_frac,
               "unscored_frac": m.unscored_frac}
    if p != p or m.signal_frac >= lc.min_signal_frac:
        return Verdict("learnable", f"{m.signal_frac:.0%} of {m.rows} sampled groups of {G} have rewards that differ "
                       f"(pass rate {p:.3f}): the task gives a learning signal", numbers, {}, [], [], False)
    low = p < 0.5
    kind = "sparse_zero" if low else "sparse_one"
    side = "fail every completion" if low else "pass every completion"
    head = (f"nearly all groups would {side}: only {m.signal_frac:.0%} of {m.rows} sampled groups of {G} have rewards "
            f"that differ (pass rate {p:.3f} at temperature {job.rft.sampling.temperature:g}; GRPO learns only from "
            f"groups that differ, below {lc.min_signal_frac:.0%} is too sparse)")
    overrides: dict[str, Any] = {}
    applied: list[str] = []
    ref = reference_template(job)
    ws = job.rft.warm_start.enabled
    warm = low and ref is not None and ws != False  # noqa: E712 - "auto" | True
    if lc.remedies:
        if warm and ws == "auto":
            overrides["rft.warm_start.enabled"] = True
            overrides["rft.warm_start.reference_output"] = ref
            applied.append(f"a supervised warm start on the reference outputs {ref!r} "
                           f"({job.rft.warm_start.steps} steps)")
        if job.rft.algorithm.dynamic_sampling == "auto":
            overrides["rft.algorithm.dynamic_sampling"] = True
            applied.append(f"dynamic sampling (up to {job.rft.algorithm.max_extra_draws} extra prompts per step)")
        cm = job.hp.compute_multiplier
        if not warm and 0 < p < 1 and cm == "auto":
            g2 = G
            while g2 < lc.max_group and _p_signal(p, g2) < lc.min_signal_frac:
                g2 = min(lc.max_group, g2 * 2)
            if g2 > G:
                overrides["rft.sampling.n"] = g2
                applied.append(f"larger groups ({G} -> {g2} completions per prompt: expected share of groups that "
                               f"differ {_p_signal(p, G):.0%} -> {_p_signal(p, g2):.0%})")
    advice = []
    if low:
        if not warm:
            advice.append("a supervised warm start on reference outputs (rft.warm_start.reference_output)")
        if not job.rft.extraction.pattern:
            advice.append("answer extraction (rft.extraction.pattern; grade {{sample.extracted}})")
        advice.append("a partial-credit grader (text_similarity, a python grader, or multi)")
    else:
        advice.append("harder prompts, or a stricter grader")
    # No remedy can give a signal: not one sampled completion passed and no warm start can teach the output,
    # or every one passed.
    stop = (p == 0 and not warm) or p == 1
    if stop:
        why = "not one sampled completion passed" if p == 0 else "every sampled completion passed"
        msg = f"{head}; {why} and no remedy rft can apply gives a signal: stopping before training"
    elif applied:
        msg = f"{head}; applied: {'; '.join(applied)}"
    elif not lc.remedies:
        msg = f"{head}; remedies are off (rft.learnability.remedies=false)"
    else:
        msg = head
    if advice:
        msg += f"; other remedies: {'; '.join(advice)}"
    return Verdict(kind, msg, numbers, overrides, applied, advice, stop)


def check(parts, job: JobSpec) -> tuple[Verdict, Measurement]:
    """Measure the base model on `rft.learnability.prompts` training rows and decide."""
    ds = parts.inputs.train_ds
    cursor = DataCursor(len(ds), job.seed + 1)
    rows = [ds.rows[i] for i in cursor.take(min(job.rft.learnability.prompts, len(ds)))]
    m = measure(parts, rows, seed=job.seed * 100_003 + 977)
    return verdict(m, job), m


def stop_error(v: Verdict) -> RftError:
    return RftError(f"the learnability check found no learning signal: {v.message}",
                    hint="fix the task or grader as advised, or skip the check with rft.learnability.enabled=false")


def apply_remedies(job: JobSpec, overrides: dict) -> JobSpec:
    """The job with dotted-key overrides set (validated as a whole again)."""
    if not overrides:
        return job
    d = job.model_dump(mode="json")
    for key, value in overrides.items():
        cur = d
        *path, last = key.split(".")
        for part in path:
            if not isinstance(cur.get(part), dict):
                cur[part] = {}
            cur = cur[part]
        cur[last] = value
    return parse_job(d, "the job with the learnability remedies")


def signal_share(p: float, G: int) -> float:
    """Exposed for reports: the expected share of groups of G that differ at pass probability p."""
    return _p_signal(p, G) if 0 <= p <= 1 else math.nan
