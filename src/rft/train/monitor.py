"""Reward-integrity monitor: alarms for the ways an RL run goes wrong while its training reward looks fine.

What
----
`RewardMonitor(cfg)` is fed every step's metrics (`observe_step(step, metrics)`, the dict the training loop
logs to metrics.jsonl) and every evaluation (`observe_eval(step, val_score, guard_score)`), and returns the
`Alarm`s that start at that point:

- `reward_hacking`: the training reward rose by >= `min_reward_rise` while the validation (or guard) score
  fell by >= `min_score_drop`, comparing this evaluation with the one `eval_window` evaluations earlier (the
  baseline at step 0 counts; with fewer evaluations, the first one). The training reward "at" an evaluation
  is the mean of the last `window` step rewards up to it (for the baseline: of the first `window` steps).
- `entropy_collapse` / `entropy_explosion`: the mean policy entropy of the last `window` steps fell below
  `entropy_collapse_ratio` x / rose above `entropy_explosion_ratio` x its early value (the mean of the first
  `early_steps` steps that updated the policy).
- `kl_limit`: a step's KL to the reference is above `kl_max`.
- `length_explosion`: the mean completion length of the last `window` steps is above `length_growth_ratio`
  x its early value.
- `reward_variance_vanished`: for `zero_variance_steps` (default 3) consecutive steps, (nearly) every group had
  the same reward for all its completions (`frac_reward_zero_std >= zero_std_frac`, or the mean within-group
  std `reward_std_within_group` below `min_group_std` when the loop logs it), so GRPO has nothing to learn.
  Its message names the remedies (`rft.train.learnability.ADVICE`). With dynamic sampling,
  `frac_reward_zero_std` counts every group the step drew, so the alarm still sees a sparse signal.

An alarm fires when its condition starts to hold and again only after the condition has cleared, so a
persistent problem is one alarm, not one per step. Its `action` is `cfg.actions[kind]` if set, else
`cfg.policy`: "warn" (log it) or "pause" (the loop should stop after saving a resumable state).

- `grader_disagreement` (when `max_grader_disagreement` is set): at each step, the people's verdicts on this
  job's samples (`rft review`, table review_verdicts) are compared with the grader; once at least
  `min_review_verdicts` have a grader score and they disagree on pass/fail more often than the limit, the alarm
  fires. Its default action is pause (setting a limit asks for a stop; `actions: {grader_disagreement: warn}`
  only logs it). The verdicts come from `review_source` (a callable returning verdict rows) when the loop hands
  one over; otherwise the monitor finds its job in the registry as the one running job owned by this process
  (`rft.registry.reviews.job_run_by_this_process`) and checks it with one cheap count query per step, reading
  the verdicts only when that count changed.

Metric names read from `observe_step`: reward, entropy (None when the update was skipped), kl,
completions/mean_length, frac_reward_zero_std, reward_std_within_group (optional).

Simplified: thresholds are fixed numbers (no learned baselines or significance tests); validation scores are
noisy, so `min_score_drop` should be larger than the evaluation's CI half-width to avoid false alarms.

How to run: `python -c "from rft.train.monitor import RewardMonitor, MonitorConfig; m = RewardMonitor(MonitorConfig()); print(m.observe_step(1, {'reward': 0.1}))"`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rft.config import ALARM_KINDS, MonitorConfig  # noqa: F401 - re-exported: the monitor's settings
from rft.config import AlarmAction as Action
from rft.train.learnability import ADVICE


@dataclass(frozen=True)
class Alarm:
    kind: str  # one of ALARM_KINDS
    step: int
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)
    action: Action = "warn"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(x: Any) -> float | None:
    """A finite float, or None for missing / None / NaN values (a skipped update logs entropy None)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


class RewardMonitor:
    """`kinds`: only these alarms are raised (None: all). The loop runs one with only `reward_variance_vanished`
    when the job has no `rft.monitor` section, so a run without a learning signal always says so early."""

    def __init__(self, cfg: MonitorConfig | None = None, kinds: tuple[str, ...] | None = None, *,
                 review_source=None):
        self.cfg = cfg or MonitorConfig()
        self.review_source = review_source  # () -> verdict rows; None: found in the registry (see the docstring)
        self._review_seen: int | None = None  # the verdict count last read (nothing new: nothing to recompute)
        self._review_job: str | None = None
        self.kinds = None if kinds is None else set(kinds)
        self.rewards: list[tuple[int, float]] = []  # (step, mean training reward)
        self.entropy: list[float] = []
        self.lengths: list[float] = []
        self.evals: list[tuple[int, float | None, float | None]] = []  # (step, validation score, guard score)
        self.zero_var_run = 0  # consecutive steps with vanished reward variance
        self.active: set[str] = set()  # latched conditions (kind or kind:signal)
        self.alarms: list[Alarm] = []  # every alarm fired so far

    # ------------------------------------------------------------------------------------- plumbing
    def _fire(self, key: str, kind: str, holds: bool, step: int, message: str, numbers: dict) -> list[Alarm]:
        """Latch: an alarm when `holds` turns true; nothing while it stays true; re-armed when it clears."""
        if not holds or (self.kinds is not None and kind not in self.kinds):
            self.active.discard(key)
            return []
        if key in self.active:
            return []
        self.active.add(key)
        default = "pause" if kind == "grader_disagreement" else self.cfg.policy  # a disagreement limit is a stop rule
        alarm = Alarm(kind, step, message, numbers, self.cfg.actions.get(kind, default))
        self.alarms.append(alarm)
        return [alarm]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume monitoring exactly where it was (JSON-serialisable)."""
        return {"rewards": [list(x) for x in self.rewards], "entropy": list(self.entropy), "lengths": list(self.lengths),
                "evals": [list(x) for x in self.evals], "zero_var_run": self.zero_var_run,
                "active": sorted(self.active), "alarms": [a.as_dict() for a in self.alarms]}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.rewards = [(int(a), float(b)) for a, b in s["rewards"]]
        self.entropy = [float(x) for x in s["entropy"]]
        self.lengths = [float(x) for x in s["lengths"]]
        self.evals = [(int(a), b, c) for a, b, c in s["evals"]]
        self.zero_var_run = int(s["zero_var_run"])
        self.active = set(s["active"])
        self.alarms = [Alarm(**a) for a in s["alarms"]]

    # ------------------------------------------------------------------------------------- steps
    def observe_step(self, step: int, metrics: dict[str, Any]) -> list[Alarm]:
        if not self.cfg.enabled:
            return []
        c, out = self.cfg, []
        r = _num(metrics.get("reward"))
        if r is not None:
            self.rewards.append((step, r))

        ent = _num(metrics.get("entropy"))
        if ent is not None:
            self.entropy.append(ent)
            if len(self.entropy) >= c.early_steps:
                early, now = _mean(self.entropy[: c.early_steps]), _mean(self.entropy[-c.window :])
                nums = {"entropy": now, "early_entropy": early, "ratio": now / early if early > 0 else None}
                if c.entropy_collapse_ratio is not None:
                    out += self._fire("entropy_collapse", "entropy_collapse", now < c.entropy_collapse_ratio * early, step,
                                      f"step {step}: policy entropy collapsed to {now:.4g} (mean of the last {c.window} "
                                      f"steps) from {early:.4g} early on (limit x{c.entropy_collapse_ratio})",
                                      nums | {"threshold": c.entropy_collapse_ratio * early})
                if c.entropy_explosion_ratio is not None:
                    out += self._fire("entropy_explosion", "entropy_explosion", now > c.entropy_explosion_ratio * early,
                                      step, f"step {step}: policy entropy rose to {now:.4g} (mean of the last {c.window} "
                                      f"steps) from {early:.4g} early on (limit x{c.entropy_explosion_ratio})",
                                      nums | {"threshold": c.entropy_explosion_ratio * early})

        kl = _num(metrics.get("kl"))
        if kl is not None and c.kl_max is not None:
            out += self._fire("kl_limit", "kl_limit", kl > c.kl_max, step,
                              f"step {step}: KL to the reference {kl:.4g} is above the limit {c.kl_max:.4g}",
                              {"kl": kl, "threshold": c.kl_max})

        length = _num(metrics.get("completions/mean_length"))
        if length is not None:
            self.lengths.append(length)
            if c.length_growth_ratio is not None and len(self.lengths) >= c.early_steps:
                early, now = _mean(self.lengths[: c.early_steps]), _mean(self.lengths[-c.window :])
                out += self._fire("length_explosion", "length_explosion", now > c.length_growth_ratio * early, step,
                                  f"step {step}: mean completion length {now:.1f} tokens (last {c.window} steps) is more "
                                  f"than x{c.length_growth_ratio} its early value {early:.1f}",
                                  {"mean_length": now, "early_mean_length": early,
                                   "ratio": now / early if early > 0 else None,
                                   "threshold": c.length_growth_ratio * early})

        if c.zero_variance_steps is not None:
            frac = _num(metrics.get("frac_reward_zero_std"))
            gstd = _num(metrics.get("reward_std_within_group"))
            if frac is not None or gstd is not None:
                vanished = (frac is not None and frac >= c.zero_std_frac) or (gstd is not None and gstd < c.min_group_std)
                self.zero_var_run = self.zero_var_run + 1 if vanished else 0
                out += self._fire("reward_variance_vanished", "reward_variance_vanished",
                                  self.zero_var_run >= c.zero_variance_steps, step,
                                  f"step {step}: for {self.zero_var_run} consecutive steps the rewards within groups "
                                  f"did not vary ({frac if frac is not None else float('nan'):.0%} of the groups drawn "
                                  "in the last step; nothing to learn: the tasks are all solved, all failed, or the "
                                  f"grader gives one score to everything); {ADVICE}",
                                  {"consecutive_steps": self.zero_var_run, "frac_reward_zero_std": frac,
                                   "reward_std_within_group": gstd, "threshold_steps": c.zero_variance_steps})
        if c.max_grader_disagreement is not None:
            out += self.observe_review(step)
        return out

    # ------------------------------------------------------------------------------------- review
    def _verdicts(self) -> list[dict] | None:
        """The job's verdicts in force, or None when nothing changed since the last look (or no job is known)."""
        if self.review_source is not None:
            return list(self.review_source())
        from rft.registry import Registry
        from rft.registry.reviews import count_verdicts, job_run_by_this_process, list_verdicts

        try:
            reg = Registry()
            self._review_job = self._review_job or job_run_by_this_process(reg)
            if self._review_job is None:
                return None
            n = count_verdicts(reg, self._review_job)
            if n == self._review_seen:
                return None
            self._review_seen = n
            return list_verdicts(reg, self._review_job)
        except Exception:  # noqa: BLE001 - an unreadable registry must not stop training; the next step retries
            return None

    def observe_review(self, step: int) -> list[Alarm]:
        """The grader_disagreement alarm from people's verdicts (see the module docstring)."""
        from rft.registry.reviews import disagreement_rule, pass_fail_counts

        c = self.cfg
        if not c.enabled or c.max_grader_disagreement is None:
            return []
        rows = self._verdicts()
        if rows is None:
            return []
        n, differ = pass_fail_counts(rows)
        if n < c.min_review_verdicts:
            return []
        rate = differ / n
        ok, why = disagreement_rule(n, rate, c.max_grader_disagreement, c.min_review_verdicts)
        return self._fire("grader_disagreement", "grader_disagreement", not ok, step,
                          f"step {step}: {why}: the grader may be rewarding the wrong thing (see `rft review "
                          f"{self._review_job or 'JOB'} --report` for the disagreements)",
                          {"verdicts": n, "disagreements": differ, "disagreement": rate,
                           "threshold": c.max_grader_disagreement, "min_review_verdicts": c.min_review_verdicts})

    # ------------------------------------------------------------------------------------- evals
    def _reward_at(self, step: int) -> float | None:
        """Mean of the last `window` step rewards up to `step`; before any step, of the first `window` ones."""
        upto = [r for s, r in self.rewards if s <= step]
        pick = upto[-self.cfg.window :] if upto else [r for _, r in self.rewards[: self.cfg.window]]
        return _mean(pick) if pick else None

    def observe_eval(self, step: int, val_score: float | None, guard_score: float | None = None) -> list[Alarm]:
        if not self.cfg.enabled:
            return []
        c, out = self.cfg, []
        self.evals.append((step, _num(val_score), _num(guard_score)))
        for col, signal in ((1, "validation"), (2, "guard")):
            points = [(e[0], e[col]) for e in self.evals if e[col] is not None]
            if len(points) < 2 or self.evals[-1][col] is None:
                continue
            ref_step, ref_score = points[max(0, len(points) - 1 - c.eval_window)]
            now_score = points[-1][1]
            r_then, r_now = self._reward_at(ref_step), self._reward_at(step)
            if r_then is None or r_now is None:
                continue
            rise, drop = r_now - r_then, ref_score - now_score
            out += self._fire(f"reward_hacking:{signal}", "reward_hacking",
                              rise >= c.min_reward_rise and drop >= c.min_score_drop, step,
                              f"step {step}: training reward rose {r_then:.3f} -> {r_now:.3f} ({rise:+.3f}) since step "
                              f"{ref_step} while the {signal} score fell {ref_score:.3f} -> {now_score:.3f} "
                              f"({-drop:+.3f}): the policy may be exploiting the grader",
                              {"signal": signal, "from_step": ref_step, "reward_then": r_then, "reward_now": r_now,
                               "reward_rise": rise, f"{signal}_then": ref_score, f"{signal}_now": now_score,
                               "score_drop": drop, "min_reward_rise": c.min_reward_rise,
                               "min_score_drop": c.min_score_drop})
        return out
