"""One GRPO step, read top to bottom: rollout, grade, advantages, policy update; then the step's numbers.

    train_step(step, rows, parts) -> StepStats     the work (rollout, grade, advantages, update)
    step_metrics(stats, grader_name) -> dict       the row logged to metrics.jsonl (names as TRL/verl log them)
    sample_rows(stats) -> list[dict]               the samples/step_K.jsonl rows

The update runs `rft.algorithm.num_iterations` passes over the step's rollouts; each pass accumulates the
gradients of its micro-batches (at least `rft.optimizer.grad_accumulation` of them, each holding whole groups and
at most `rft.train.micro_batch_size` sequences) into one optimizer step. The losses are normalised over the whole
step (`algo.LossNorm`), so k micro-batches give the single-batch update up to float rounding.

Dynamic sampling (DAPO; `rft.algorithm.dynamic_sampling: true`, or applied by the learnability check): when fewer
than N of the step's groups have rewards that differ, `draw(k)` (the loop's data cursor) gives more prompts, in
rounds of at most N, until N groups differ or `rft.algorithm.max_extra_draws` extra prompts were drawn (a cap
hit); the step trains on the first N differing groups (its own N rows when none differed). Logged:
`dynamic_sampling/{draws,extra_prompts,cap_hit,groups}`; `frac_reward_zero_std` counts every group drawn.

Non-finite steps (catalogue N1): a NaN/Inf loss or gradient norm refuses the update (no optimizer.step(), the
gradients are dropped) and the remaining iterations of the step are not run; `StepStats.update.nonfinite` says why.

Simplified: completions are right-padded per micro-batch rather than packed; rollouts and training alternate.
Run: through `rft train JOB.yaml`; tests/test_train.py drives it directly on a tiny model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from rft import algo, graders
from rft.engine import SamplingParams
from rft.engine.constrain import from_response_format
from rft.engine.local import render_prompt
from rft.extraction import sample_from_text
from rft.train.policy import TrainBatch, build_batch, completion_logprobs
from rft.train.setup import TrainParts
from rft.types import ERROR_KINDS, Completion, GradeResult


@dataclass(frozen=True)
class DrawStats:
    """What dynamic sampling drew in a step (without it: one draw of the step's own prompts)."""

    draws: int = 1  # rollout rounds
    prompts: int = 0  # prompts drawn in all
    extra_prompts: int = 0  # beyond the step's own
    zero_std_groups: int = 0  # drawn groups whose scored rewards did not differ
    cap_hit: bool = False  # the step ended with fewer differing groups than prompts per step
    enabled: bool = False


@dataclass(frozen=True)
class UpdateStats:
    """What the policy update did. Loss, KL, entropy and clip fractions are from the first pass (the on-policy
    one); grad_norm is its norm before clipping."""

    passes: int  # iterations run over the rollouts (0: nothing to learn and no KL term)
    updates: int  # optimizer steps applied
    loss: float
    kl: float
    entropy: float
    clip_low: float
    clip_high: float
    grad_norm: float
    lr: float
    nonfinite: str | None  # why the update was refused (non-finite loss or gradient), else None
    t_forward: float
    t_backward: float
    t_optimizer: float
    t_sync: float


@dataclass(frozen=True)
class StepStats:
    """Everything one step produced. N prompts, G completions each; flat lists are grouped by prompt."""

    step: int
    group: int  # G, completions per prompt
    rows: list[dict]  # [N] the dataset rows
    prompt_ids: list[list[int]]  # [N] rendered prompts
    completions: list[Completion]  # [N*G]
    grades: list[GradeResult]  # [N*G]
    rewards: torch.Tensor  # [N, G], NaN where unscored
    advantages: algo.AdvantageOut  # .advantages [N, G]
    update: UpdateStats
    t_sampling: float
    t_grading: float
    t_training: float
    t_step: float
    sampling: DrawStats = DrawStats()

    @property
    def nonfinite(self) -> str | None:
        return self.update.nonfinite


@dataclass(frozen=True)
class Rollout:
    rows: list[dict]  # [n]
    prompt_ids: list[list[int]]  # [n]
    completions: list[Completion]  # [n*G]
    grades: list[GradeResult]  # [n*G]
    rewards: torch.Tensor  # [n, G], NaN where unscored
    differ: list[bool]  # [n] the group's scored rewards differ (it has something to learn)
    t_sampling: float
    t_grading: float


def rollout(parts: TrainParts, rows: list[dict], seed: int) -> Rollout:
    """Sample G completions for each row (its tools in the prompt, the job's response_format constraining the
    decoding) and grade them: the one rollout path of training and of the learnability check."""
    job, s, G = parts.job, parts.job.rft.sampling, parts.values.completions_per_prompt
    t0 = time.perf_counter()
    prompt_ids = [render_prompt(parts.tokenizer, r["messages"], r.get("tools")) for r in rows]
    sp = SamplingParams(n=G, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens,
                        stop=tuple(s.stop), seed=seed, constraint=from_response_format(job.method.reinforcement.response_format))
    groups = parts.engine.generate_ids(prompt_ids, sp)  # [N][G] Completion
    flat = [c for g in groups for c in g]  # [N*G]
    t_sampling = time.perf_counter() - t0
    t0 = time.perf_counter()
    flat_rows = [r for r in rows for _ in range(G)]
    samples = [sample_from_text(c.text, job.rft.extraction, finish_reason=c.finish_reason,
                                response_format=job.method.reinforcement.response_format, tools=r.get("tools"))
               for c, r in zip(flat, flat_rows)]
    grades = graders.grade_many(parts.grader, samples, flat_rows)
    t_grading = time.perf_counter() - t0
    rewards = torch.tensor([g.score if g.score is not None else float("nan") for g in grades]).view(len(rows), G)  # [N, G]
    differ = []
    for row in rewards:
        sc = row[~torch.isnan(row)]
        differ.append(bool(sc.numel() >= 2 and float(sc.max() - sc.min()) > 1e-6))
    return Rollout(rows, prompt_ids, flat, grades, rewards, differ, t_sampling, t_grading)


def train_step(step: int, rows: list[dict], parts: TrainParts, draw: Callable[[int], list[dict]] | None = None) -> StepStats:
    """One GRPO step on `rows` (the step number seeds the sampling and sets the learning rate). With
    `rft.algorithm.dynamic_sampling: true`, `draw(k)` gives k more training rows (the loop's data cursor): the step
    draws until it has len(rows) groups whose rewards differ or `max_extra_draws` extra prompts, and trains on
    the differing groups (on its own rows when none differed)."""
    job, model = parts.job, parts.model
    a, s = job.rft.algorithm, job.rft.sampling
    G = parts.values.completions_per_prompt
    t_step = time.perf_counter()

    # 1-2. rollout and grade (dynamic sampling: more prompts until N groups' rewards differ) -----------
    N = len(rows)
    seed = job.seed * 100_003 + step
    r0 = rollout(parts, rows, seed)
    drawn, t_sampling, t_grading = [r0], r0.t_sampling, r0.t_grading
    dyn = a.dynamic_sampling is True and draw is not None
    extra = 0
    if dyn:
        while sum(int(x) for d in drawn for x in d.differ) < N and extra < a.max_extra_draws:
            k = min(N, a.max_extra_draws - extra)
            extra += k
            rk = rollout(parts, draw(k), seed + 1_000_003 * len(drawn))
            drawn.append(rk)
            t_sampling += rk.t_sampling
            t_grading += rk.t_grading
    n_drawn = sum(len(d.rows) for d in drawn)
    zero_std_drawn = sum(int(not x) for d in drawn for x in d.differ)
    picked = [(d, i) for d in drawn for i, x in enumerate(d.differ) if x][:N] if dyn else []
    if not picked:  # no dynamic sampling, or nothing differed: the step's own N prompts
        picked = [(r0, i) for i in range(N)]
    n_differ = n_drawn - zero_std_drawn
    sampling = DrawStats(draws=len(drawn), prompts=n_drawn, extra_prompts=extra, zero_std_groups=zero_std_drawn,
                         cap_hit=bool(dyn and n_differ < N), enabled=dyn)
    rows = [d.rows[i] for d, i in picked]
    prompt_ids = [d.prompt_ids[i] for d, i in picked]
    flat = [c for d, i in picked for c in d.completions[i * G:(i + 1) * G]]  # [N*G]
    grades = [g for d, i in picked for g in d.grades[i * G:(i + 1) * G]]  # [N*G]
    rewards = torch.stack([d.rewards[i] for d, i in picked])  # [N, G]

    # 3. advantages --------------------------------------------------------------------------------
    adv = algo.compute_advantages(a.advantage, rewards)  # [N, G]

    # 4. policy update -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    batch = build_batch(prompt_ids, [(list(c.token_ids), list(c.logprobs)) for c in flat], adv.advantages.reshape(-1),
                        pad_id=parts.tokenizer.pad_token_id, group=G).to(next(model.parameters()).device)
    B = batch.comp_in.shape[0]
    norm = algo.LossNorm(sequences=B, tokens=int(batch.comp_mask.sum()), max_len=s.max_new_tokens)
    # Micro-batches hold whole groups (they share one prompt pass): at least grad_accumulation of them, each at
    # most micro_batch_size sequences; their gradients add up to one optimizer step per pass.
    per_mb = min(math.ceil(batch.n_prompts / job.rft.optimizer.grad_accumulation),
                 max(1, (job.rft.train.micro_batch_size or B) // G))
    learnable = bool((adv.advantages != 0).any())
    stats = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_low": 0.0, "clip_high": 0.0, "grad_norm": 0.0}
    tt = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "sync": 0.0}
    ntok = max(1.0, float(batch.comp_mask.sum()))
    lr = parts.scheduler.apply(step)
    # Nothing to learn (every group has zero variance or is unscored) and no KL term: skip the passes.
    iterations = a.num_iterations if (learnable or a.beta > 0) else 0
    nonfinite = None  # why this step's update was refused (N1), or None
    updates = 0
    clip = job.rft.optimizer.grad_clip if job.rft.optimizer.grad_clip > 0 else float("inf")
    for it in range(iterations):
        parts.optimizer.zero_grad(set_to_none=True)
        for start in range(0, batch.n_prompts, per_mb):
            sub = batch.prompts(start, start + per_mb)
            tf = time.perf_counter()
            out, ent = micro_batch_loss(parts, sub, norm, first_pass=(it == 0))
            tb = time.perf_counter()
            tt["forward"] += tb - tf
            if nonfinite is None and not bool(torch.isfinite(out.loss.detach())):
                nonfinite = f"loss is {float(out.loss.detach())}"
            out.loss.backward()
            tt["backward"] += time.perf_counter() - tb
            if it == 0:
                m = sub.comp_mask
                stats["loss"] += float(out.loss.detach())
                stats["entropy"] += float((ent * m).sum()) / ntok
                stats["clip_low"] += float(out.clip_low.sum()) / ntok
                stats["clip_high"] += float(out.clip_high.sum()) / ntok
                if out.kl is not None:
                    stats["kl"] += float((out.kl * m).sum()) / ntok
        to = time.perf_counter()
        # clip_grad_norm_ returns the norm before clipping: that is the value logged as grad_norm.
        gn = torch.nn.utils.clip_grad_norm_(parts.params, clip)
        if it == 0:
            stats["grad_norm"] = float(gn)
        if nonfinite is None and not math.isfinite(float(gn)):
            nonfinite = f"gradient norm is {float(gn)}"
        if nonfinite is not None:
            # N1: refuse the update. No optimizer.step(): weights and AdamW moments stay bit-identical. Later
            # iterations of this step are not run (their old log-probs would be the same refused batch).
            parts.optimizer.zero_grad(set_to_none=True)
            tt["optimizer"] += time.perf_counter() - to
            break
        parts.optimizer.step()
        updates += 1
        tt["optimizer"] += time.perf_counter() - to
    if updates:
        ts = time.perf_counter()
        parts.engine.sync_weights()
        tt["sync"] = time.perf_counter() - ts
    t_training = time.perf_counter() - t0
    t_total = time.perf_counter() - t_step

    # 5. the step's numbers (logged by the caller: step_metrics, sample_rows) ---------------------------
    update = UpdateStats(passes=iterations, updates=updates, loss=stats["loss"], kl=stats["kl"],
                         entropy=stats["entropy"], clip_low=stats["clip_low"], clip_high=stats["clip_high"],
                         grad_norm=stats["grad_norm"], lr=lr, nonfinite=nonfinite, t_forward=tt["forward"],
                         t_backward=tt["backward"], t_optimizer=tt["optimizer"], t_sync=tt["sync"])
    return StepStats(step=step, group=G, rows=rows, prompt_ids=prompt_ids, completions=flat, grades=grades, rewards=rewards,
                     advantages=adv, update=update, t_sampling=t_sampling, t_grading=t_grading, t_training=t_training,
                     t_step=t_total, sampling=sampling)


def micro_batch_loss(parts: TrainParts, sub: TrainBatch, norm: algo.LossNorm, *, first_pass: bool):
    """The policy loss of one micro-batch (with gradient), and its per-token entropy on the first pass."""
    a, T, dtype = parts.job.rft.algorithm, parts.job.rft.sampling.temperature, parts.compute_dtype
    logp, ent = completion_logprobs(parts.model, sub, temperature=T, compute_dtype=dtype,
                                    with_entropy=first_pass)  # [b, Lc], [b, Lc] or None
    # num_iterations == 1: the update is exactly on-policy, so the old policy is this forward pass
    # (ratio 1, no extra pass). With more iterations, the rollout's log-probs are the old policy.
    old = logp.detach() if a.num_iterations == 1 else sub.old_logp  # [b, Lc]
    ref = None
    if a.beta > 0:
        with torch.no_grad():
            if isinstance(parts.reference, torch.nn.Module):
                ref, _ = completion_logprobs(parts.reference, sub, temperature=T, compute_dtype=dtype)  # [b, Lc]
            else:  # LoRA: the base model with the adapter disabled is the reference
                with parts.reference():
                    ref, _ = completion_logprobs(parts.model, sub, temperature=T, compute_dtype=dtype)  # [b, Lc]
    out = algo.policy_loss(a.loss, logp, old, sub.advantages, sub.comp_mask, norm, epsilon=a.epsilon,
                           epsilon_high=a.epsilon_high, beta=a.beta, ref_logp=ref)
    return out, ent


def _within_group_std(rewards: torch.Tensor) -> float:
    """Mean over groups (with >= 2 scored completions) of the std of their scored rewards; rewards [N, G]."""
    stds = []
    for row in rewards:
        s = row[~torch.isnan(row)]
        if s.numel() >= 2:
            stds.append(float(s.std()))
    return sum(stds) / len(stds) if stds else 0.0


def step_metrics(st: StepStats, grader_name: str) -> dict:
    """The metrics.jsonl row of a step (the loop adds epoch and skipped_steps)."""
    u, grades, flat = st.update, st.grades, st.completions
    scored = st.rewards[~torch.isnan(st.rewards)]
    lengths = [len(c.token_ids) for c in flat]
    n_tokens = sum(lengths) + sum(len(p) for p in st.prompt_ids for _ in range(st.group))
    err_rates = {k: sum(1 for g in grades if g.error == k) / len(grades) for k in ERROR_KINDS}
    metrics = {
        "step": st.step,
        "reward": float(scored.mean()) if scored.numel() else float("nan"),
        "reward_std": float(scored.std()) if scored.numel() > 1 else 0.0,
        f"rewards/{grader_name}/mean": float(scored.mean()) if scored.numel() else float("nan"),
        f"rewards/{grader_name}/latency_mean": sum(g.latency_s for g in grades) / len(grades),
        # over every group the step drew (with dynamic sampling, the dropped ones too): the no-signal measure
        "frac_reward_zero_std": (st.sampling.zero_std_groups / st.sampling.prompts) if st.sampling.enabled
        else st.advantages.zero_std_groups / len(st.rows),
        "dynamic_sampling/draws": st.sampling.draws,
        "dynamic_sampling/extra_prompts": st.sampling.extra_prompts,
        "dynamic_sampling/cap_hit": st.sampling.cap_hit,
        "dynamic_sampling/groups": len(st.rows),
        "reward_std_within_group": _within_group_std(st.rewards),
        "unscored_frac": st.advantages.unscored / len(grades),
        "kl": u.kl,
        "entropy": u.entropy if u.passes else None,
        "skipped_update": u.passes == 0,
        "nonfinite": u.nonfinite is not None,
        "clip_ratio/low_mean": u.clip_low,
        "clip_ratio/high_mean": u.clip_high,
        "clip_ratio/region_mean": u.clip_low + u.clip_high,
        "completions/mean_length": sum(lengths) / len(lengths),
        "completions/max_length": max(lengths),
        "completions/clipped_ratio": sum(1 for c in flat if c.finish_reason == "length") / len(flat),
        "loss": u.loss,
        "grad_norm": u.grad_norm,
        "lr": u.lr,
        "time/sampling": st.t_sampling,
        "time/grading": st.t_grading,
        "time/training": st.t_training,
        "time/training/forward": u.t_forward,
        "time/training/backward": u.t_backward,
        "time/training/optimizer": u.t_optimizer,
        "time/training/sync": u.t_sync,
        "time/step": st.t_step,
        "tokens_per_second": n_tokens / st.t_step,
        "sampling/tokens_per_second": sum(lengths) / max(st.t_sampling, 1e-9),
    }
    for name in sorted({k for g in grades for k in g.sub_scores}):
        vals = [g.sub_scores.get(name) for g in grades if g.sub_scores.get(name) is not None]
        if vals:
            metrics[f"rewards/{name}/mean"] = sum(vals) / len(vals)
        lats = [g.sub_latency_s[name] for g in grades if name in g.sub_latency_s]
        if lats:
            metrics[f"rewards/{name}/latency_mean"] = sum(lats) / len(lats)
    metrics.update({f"errors/{k}": v for k, v in err_rates.items()})
    return metrics


def sample_rows(st: StepStats) -> list[dict]:
    """One row per completion for samples/step_K.jsonl: prompt, completion, reward, error, advantage."""
    G = st.group
    advs = st.advantages.advantages.reshape(-1).tolist()
    return [
        {"step": st.step, "prompt": st.rows[i // G]["messages"][-1]["content"], "completion": c.text,
         "reward": g.score, "error": g.error, "advantage": advs[i], "finish_reason": c.finish_reason}
        for i, (c, g) in enumerate(zip(st.completions, st.grades))
    ]
