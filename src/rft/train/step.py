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

Rollout shards: the step's prompts are split into `rft.cluster.rollout_workers` contiguous shards, shard i
sampled with seed `step seed + 7_777_777 * i` (shard 0: the step seed itself, so one shard is the plain run).
On one process the shards run one after another on the policy's engine; on Ray (`rft.cluster.enabled`) each
shard goes to its own rollout actor (rft.train.distributed). Same spec, same completions, either way.

Overlapped rollouts (`rft.train.overlap_rollouts: true`): `StepRunner` starts step k+1's rollout (on a thread
with its own engine copy, or on the Ray actors) right after step k's rollout, so it runs while step k trains.
Those samples come from the weights before step k's update: one step off-policy. Their loss uses the
sampling policy's log-probs (recorded when sampled) as the old policy, never a recomputation under the new
weights; `rollout/staleness` (updates between sampling and training) is logged per step. The pipeline is
drained at steps that save the training state (and at the last step), so a resume from a state continues
exactly as the uninterrupted run did; a pause between saves discards the prefetched rollout.

Data-parallel update (`rft.cluster.trainer_workers` > 1, on Ray): the step's prompts are split among the
ranks (the driver is rank 0), each rank's micro-batch losses use the whole step's normaliser, and the gradients
are summed across ranks (torch.distributed all-reduce) before clipping: N ranks give the one-process update
up to floating-point order.

Simplified: completions are right-padded per micro-batch rather than packed.
Run: through `rft train JOB.yaml`; tests/test_train.py drives it directly on a tiny model.
"""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from rft import algo, graders
from rft.engine import SamplingParams
from rft.engine.constrain import from_response_format
from rft.engine.local import render_prompt
from rft.extraction import sample_from_text
from rft.train.policy import TrainBatch, build_batch, completion_logprobs
from rft.errors import RftError
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
    staleness: int = 0  # optimizer steps between the weights that sampled the first rollout and this update

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
    version: int = -1  # the step whose weights sampled it (0: the starting weights; -1: not tracked)


def step_seed(job, step: int) -> int:
    return job.seed * 100_003 + step


def shard_seed(seed: int, i: int) -> int:
    """Shard i's sampling seed (shard 0 keeps the step's seed: one shard is the unsharded run)."""
    return seed + 7_777_777 * i


def shard_bounds(n: int, k: int) -> list[tuple[int, int]]:
    """k contiguous [start, stop) ranges covering n items, sizes differing by at most one (empty ones dropped)."""
    q, r = divmod(n, k)
    out, a = [], 0
    for i in range(k):
        b = a + q + (1 if i < r else 0)
        if b > a:
            out.append((a, b))
        a = b
    return out


def sampling_params(job, G: int, seed: int) -> SamplingParams:
    s = job.rft.sampling
    return SamplingParams(n=G, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens,
                          stop=tuple(s.stop), seed=seed, constraint=from_response_format(job.method.reinforcement.response_format))


def grade_groups(job, grader, rows: list[dict], groups: list[list[Completion]]) -> tuple[list[Completion], list[GradeResult]]:
    """Extract and grade G completions per row: ([n*G] completions, [n*G] grades)."""
    flat = [c for g in groups for c in g]  # [n*G]
    G = len(groups[0]) if groups else 0
    flat_rows = [r for r in rows for _ in range(G)]
    samples = [sample_from_text(c.text, job.rft.extraction, finish_reason=c.finish_reason,
                                response_format=job.method.reinforcement.response_format, tools=r.get("tools"))
               for c, r in zip(flat, flat_rows)]
    return flat, graders.grade_many(grader, samples, flat_rows)


def assemble(rows, prompt_ids, flat, grades, G: int, t_sampling: float, t_grading: float, version: int = -1) -> Rollout:
    rewards = torch.tensor([g.score if g.score is not None else float("nan") for g in grades]).view(len(rows), G)  # [N, G]
    differ = []
    for row in rewards:
        sc = row[~torch.isnan(row)]
        differ.append(bool(sc.numel() >= 2 and float(sc.max() - sc.min()) > 1e-6))
    return Rollout(rows, prompt_ids, flat, grades, rewards, differ, t_sampling, t_grading, version)


def rollout(parts: TrainParts, rows: list[dict], seed: int, *, engine=None, version: int = -1) -> Rollout:
    """Sample G completions for each row (its tools in the prompt, the job's response_format constraining the
    decoding) and grade them: the one-process rollout path of training and of the learnability check. The rows
    are sampled shard by shard (`rft.cluster.rollout_workers` shards, see the module docstring) on `engine`
    (default: the policy's)."""
    job, G = parts.job, parts.values.completions_per_prompt
    engine = engine if engine is not None else parts.engine
    t0 = time.perf_counter()
    prompt_ids = [render_prompt(parts.tokenizer, r["messages"], r.get("tools")) for r in rows]
    groups: list[list[Completion]] = []  # [N][G]
    for i, (a, b) in enumerate(shard_bounds(len(rows), job.rft.cluster.rollout_workers)):
        groups += engine.generate_ids(prompt_ids[a:b], sampling_params(job, G, shard_seed(seed, i)))
    t_sampling = time.perf_counter() - t0
    t0 = time.perf_counter()
    flat, grades = grade_groups(job, parts.grader, rows, groups)
    return assemble(rows, prompt_ids, flat, grades, G, t_sampling, time.perf_counter() - t0, version)


# ------------------------------------------------------------------------------------------ rollout sources
def _done(value) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


class LocalRollouts:
    """Rollouts on the policy's own engine, run at once (`start` returns a finished future). The engine is
    synced by `train_step` after each update, so `push_weights` has nothing to do."""

    def __init__(self, parts: TrainParts):
        self.parts = parts
        self.version = 0

    def start(self, rows: list[dict], seed: int) -> Future:
        return _done(rollout(self.parts, rows, seed, version=self.version))

    def push_weights(self, model, version: int) -> None:
        self.version = version

    def close(self) -> None:
        pass


class ThreadRollouts:
    """Rollouts on a background thread with its own copy of the policy and engine, so a rollout can run while
    the policy trains. One worker thread runs rollouts and weight loads in submission order: weights pushed
    after an update are loaded once the rollout in flight has finished (that rollout is the off-policy one).
    Costs a second copy of the weights."""

    def __init__(self, parts: TrainParts):
        from rft.engine.local import LocalEngine

        self.parts = parts
        self.model = copy.deepcopy(parts.model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.engine = LocalEngine(self.model, parts.tokenizer, compute_dtype=parts.compute_dtype,
                                  max_batch_size=parts.job.rft.train.rollout_batch_size)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rft-rollout")
        self.version = 0

    def start(self, rows: list[dict], seed: int) -> Future:
        v = self.version
        return self.pool.submit(rollout, self.parts, rows, seed, engine=self.engine, version=v)

    def push_weights(self, model, version: int) -> None:
        # a snapshot now (training goes on mutating the policy); loaded after the rollout in flight
        state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.version = version
        self.pool.submit(self._load, state)

    def _load(self, state: dict) -> None:
        with torch.no_grad():
            own = dict(self.model.named_parameters())
            for n, t in state.items():
                own[n].copy_(t)
        self.engine.sync_weights()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Prefetch:
    step: int
    indices: list[int]
    future: Future


class StepRunner:
    """The loop's source of steps: takes the step's rows from the data cursor, gets their rollout (prefetched
    when overlapping), runs `train_step`, and pushes the new weights to the rollout workers. Local or on Ray
    (`rft.cluster.enabled`), overlapped or not. Use as a context manager: closing stops the rollout thread or
    the Ray actors (and a Ray instance it started)."""

    def __init__(self, parts: TrainParts, cursor, *, state_every: int, total: int,
                 cluster_factory: Callable[[TrainParts], Any] | None = None, step_fn: Callable | None = None):
        self.parts, self.cursor, self.state_every, self.total = parts, cursor, state_every, total
        self.step_fn = step_fn or train_step  # the caller's (the loop passes its own name, which tests wrap)
        job = parts.job
        self.overlap = job.rft.train.overlap_rollouts
        self.cluster = None
        self.dp = None
        if job.rft.cluster.enabled:
            if cluster_factory is None:
                raise RftError("rft.cluster.enabled is true but this caller cannot run on Ray",
                               hint="run the job with `rft train JOB --ray`")
            # rft.train.distributed.RayCluster.start (passed in: that package builds on this module)
            self.cluster = cluster_factory(parts)
            self.rollouts = self.cluster.rollouts
            self.dp = self.cluster.dp
        elif self.overlap:
            self.rollouts = ThreadRollouts(parts)
        else:
            self.rollouts = LocalRollouts(parts)
        self.pending: _Prefetch | None = None
        self._started = False

    def __enter__(self) -> "StepRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.pending is not None:  # a discarded prefetch (pause, error): let it finish, drop it
                try:
                    self.pending.future.result()
                except Exception:  # noqa: BLE001 - nobody wants its result any more
                    pass
                self.pending = None
            self.rollouts.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def _rows(self, idx: list[int]) -> list[dict]:
        return [self.parts.inputs.train_ds.rows[i] for i in idx]

    def next(self, step: int) -> StepStats:
        parts, N = self.parts, self.parts.values.prompts_per_step
        if not self._started:  # a resumed run starts from the weights of the step before
            self.rollouts.version, self._started = step - 1, True
        idx = self.cursor.take(N)
        first = None
        if self.pending is not None and self.pending.step == step and self.pending.indices == idx:
            first = self.pending.future.result()
        self.pending = None
        # Prefetch step k+1 unless step k saves the state (or is the last): the pipeline is drained there, so a
        # resume from that state samples step k+1 as the uninterrupted run did.
        prefetch = None
        if self.overlap and step < self.total and step % self.state_every != 0:
            def prefetch() -> None:
                from rft.train.cursor import DataCursor

                ahead = DataCursor(self.cursor.n, self.cursor.seed)
                ahead.restore(self.cursor.state())  # the real cursor moves when step k+1 takes its rows
                nidx = ahead.take(N)
                fut = self.rollouts.start(self._rows(nidx), step_seed(parts.job, step + 1))
                self.pending = _Prefetch(step + 1, nidx, fut)

        res = self.step_fn(step, self._rows(idx), parts, draw=lambda k: self._rows(self.cursor.take(k)),
                         rollouts=self.rollouts, first=first, after_rollout=prefetch, dp=self.dp)
        if res.update.updates:
            self.rollouts.push_weights(parts.model, step)
        return res


def train_step(step: int, rows: list[dict], parts: TrainParts, draw: Callable[[int], list[dict]] | None = None, *,
               rollouts=None, first: Rollout | None = None, after_rollout: Callable[[], None] | None = None,
               dp=None) -> StepStats:
    """One GRPO step on `rows` (the step number seeds the sampling and sets the learning rate). With
    `rft.algorithm.dynamic_sampling: true`, `draw(k)` gives k more training rows (the loop's data cursor): the step
    draws until it has len(rows) groups whose rewards differ or `max_extra_draws` extra prompts, and trains on
    the differing groups (on its own rows when none differed).

    `rollouts`: where rollouts run (default `LocalRollouts(parts)`); `first`: this step's rollout of `rows`, already
    sampled (overlap); `after_rollout()`: called once the step's samples are in, before the update (the runner
    starts the next step's rollout there); `dp`: the data-parallel group (rft.train.distributed) or None."""
    job, model = parts.job, parts.model
    a, s = job.rft.algorithm, job.rft.sampling
    G = parts.values.completions_per_prompt
    t_step = time.perf_counter()
    rollouts = rollouts if rollouts is not None else LocalRollouts(parts)

    # 1-2. rollout and grade (dynamic sampling: more prompts until N groups' rewards differ) -----------
    N = len(rows)
    seed = step_seed(job, step)
    r0 = first if first is not None else rollouts.start(rows, seed).result()
    # the weights at this update are step-1's; the rollout was sampled by version's
    staleness = max(0, (step - 1) - r0.version) if r0.version >= 0 else 0
    drawn, t_sampling, t_grading = [r0], r0.t_sampling, r0.t_grading
    dyn = a.dynamic_sampling is True and draw is not None
    extra = 0
    if dyn:
        while sum(int(x) for d in drawn for x in d.differ) < N and extra < a.max_extra_draws:
            k = min(N, a.max_extra_draws - extra)
            extra += k
            rk = rollouts.start(draw(k), seed + 1_000_003 * len(drawn)).result()
            drawn.append(rk)
            t_sampling += rk.t_sampling
            t_grading += rk.t_grading
    if after_rollout is not None:
        after_rollout()
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
    # off-policy groups (sampled before the last update): their loss takes the sampling policy's log-probs
    off_policy = any(d.version >= 0 and d.version < step - 1 for d, _ in picked)

    # 3. advantages --------------------------------------------------------------------------------
    adv = algo.compute_advantages(a.advantage, rewards)  # [N, G]

    # 4. policy update -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    batch = build_batch(prompt_ids, [(list(c.token_ids), list(c.logprobs)) for c in flat], adv.advantages.reshape(-1),
                        pad_id=parts.tokenizer.pad_token_id, group=G).to(next(model.parameters()).device)
    if not getattr(parts.engine, "exact_logprobs", True) and a.num_iterations > 1:
        with torch.no_grad():  # vLLM's sampling log-probs are not the trainer's: recompute the old policy's
            old, _ = completion_logprobs(model, batch, temperature=s.temperature,
                                         compute_dtype=parts.compute_dtype)  # [B, Lc]
        batch = dataclasses.replace(batch, old_logp=old.detach())
    B = batch.comp_in.shape[0]
    norm = algo.LossNorm(sequences=B, tokens=int(batch.comp_mask.sum()), max_len=s.max_new_tokens)
    # Micro-batches hold whole groups (they share one prompt pass): at least grad_accumulation of them, each at
    # most micro_batch_size sequences; their gradients add up to one optimizer step per pass.
    per_mb = min(math.ceil(batch.n_prompts / job.rft.optimizer.grad_accumulation),
                 max(1, (job.rft.train.micro_batch_size or B) // G))
    learnable = bool((adv.advantages != 0).any())
    lr = parts.scheduler.apply(step)
    # Nothing to learn (every group has zero variance or is unscored) and no KL term: skip the passes.
    iterations = a.num_iterations if (learnable or a.beta > 0) else 0
    plan = UpdatePlan(per_mb=per_mb, iterations=iterations, lr=lr, off_policy=off_policy, ntok=max(1.0, float(batch.comp_mask.sum())))
    if dp is not None and iterations:
        up = dp.update(parts, batch, norm, plan)  # the driver's shard here, the others on the trainer workers
    else:
        up = update_policy(parts, batch, norm, plan)
    tt = up["times"]
    if up["updates"]:
        ts = time.perf_counter()
        parts.engine.sync_weights()
        tt["sync"] = time.perf_counter() - ts
    t_training = time.perf_counter() - t0
    t_total = time.perf_counter() - t_step

    # 5. the step's numbers (logged by the caller: step_metrics, sample_rows) ---------------------------
    stats = up["stats"]
    update = UpdateStats(passes=iterations, updates=up["updates"], loss=stats["loss"], kl=stats["kl"],
                         entropy=stats["entropy"], clip_low=stats["clip_low"], clip_high=stats["clip_high"],
                         grad_norm=stats["grad_norm"], lr=lr, nonfinite=up["nonfinite"], t_forward=tt["forward"],
                         t_backward=tt["backward"], t_optimizer=tt["optimizer"], t_sync=tt["sync"])
    return StepStats(step=step, group=G, rows=rows, prompt_ids=prompt_ids, completions=flat, grades=grades, rewards=rewards,
                     advantages=adv, update=update, t_sampling=t_sampling, t_grading=t_grading, t_training=t_training,
                     t_step=t_total, sampling=sampling, staleness=staleness)


@dataclass(frozen=True)
class UpdatePlan:
    """How a step's update runs, decided from the whole step's batch (every data-parallel rank gets the same)."""

    per_mb: int  # prompts per micro-batch
    iterations: int  # passes (0: no update)
    lr: float
    off_policy: bool  # the samples predate the last update: the old log-probs are the rollout's
    ntok: float  # completion tokens in the whole step (entropy and clip fractions are per token of the step)


class UpdateFailed(Exception):
    """A collective failed during an update (a data-parallel worker died); `updates` optimizer steps had
    already been applied in this step (0: the step can be retried from its rollouts)."""

    def __init__(self, cause: BaseException, updates: int):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.updates = cause, updates


def update_policy(up: Any, batch: TrainBatch, norm: algo.LossNorm, plan: UpdatePlan, reduce=None) -> dict:
    """The policy update of one step on `batch` (this rank's prompts): `plan.iterations` passes, each one
    optimizer step over the gradients of its micro-batches. `up` has job, model, params, optimizer, reference,
    compute_dtype (TrainParts, or a Ray trainer worker's copy). `reduce` (data parallel): `.sum_(tensor)`, an
    in-place all-reduce over the ranks; gradients and the logged sums are summed (each rank's losses already
    use the whole step's normaliser), so every rank applies the same update.
    Returns {"updates", "nonfinite", "stats", "times"}."""
    stats = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_low": 0.0, "clip_high": 0.0, "grad_norm": 0.0}
    tt = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "sync": 0.0}
    nonfinite = None  # why this step's update was refused (N1), or None
    updates = 0
    clip = up.job.rft.optimizer.grad_clip if up.job.rft.optimizer.grad_clip > 0 else float("inf")
    for g in up.optimizer.param_groups:  # the driver's schedule already set these; a worker copies them
        g["lr"] = plan.lr
    for it in range(plan.iterations):
        up.optimizer.zero_grad(set_to_none=True)
        first = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_low": 0.0, "clip_high": 0.0, "bad": 0.0}
        for start in range(0, batch.n_prompts, plan.per_mb):
            sub = batch.prompts(start, start + plan.per_mb)
            tf = time.perf_counter()
            out, ent = micro_batch_loss(up, sub, norm, first_pass=(it == 0), off_policy=plan.off_policy)
            tb = time.perf_counter()
            tt["forward"] += tb - tf
            if not bool(torch.isfinite(out.loss.detach())):
                first["bad"] = 1.0
                if nonfinite is None:
                    nonfinite = f"loss is {float(out.loss.detach())}"
            out.loss.backward()
            tt["backward"] += time.perf_counter() - tb
            if it == 0:
                m = sub.comp_mask
                first["loss"] += float(out.loss.detach())
                first["entropy"] += float((ent * m).sum()) / plan.ntok
                first["clip_low"] += float(out.clip_low.sum()) / plan.ntok
                first["clip_high"] += float(out.clip_high.sum()) / plan.ntok
                if out.kl is not None:
                    first["kl"] += float((out.kl * m).sum()) / plan.ntok
        to = time.perf_counter()
        if reduce is not None:
            try:
                _sum_grads(up.params, reduce)
                keys = sorted(first)
                t = torch.tensor([first[k] for k in keys], dtype=torch.float64)  # [6]
                reduce.sum_(t)
                first = dict(zip(keys, t.tolist()))
            except Exception as e:  # noqa: BLE001 - a peer died or timed out: the caller retries or stops
                up.optimizer.zero_grad(set_to_none=True)
                raise UpdateFailed(e, updates) from e
            if nonfinite is None and first["bad"] > 0:
                nonfinite = "loss is not finite on another data-parallel rank"
            tt["sync"] += time.perf_counter() - to
        if it == 0:
            stats.update({k: v for k, v in first.items() if k != "bad"})
        # clip_grad_norm_ returns the norm before clipping: that is the value logged as grad_norm.
        gn = torch.nn.utils.clip_grad_norm_(up.params, clip)
        if it == 0:
            stats["grad_norm"] = float(gn)
        if nonfinite is None and not math.isfinite(float(gn)):
            nonfinite = f"gradient norm is {float(gn)}"
        if nonfinite is not None:
            # N1: refuse the update. No optimizer.step(): weights and AdamW moments stay bit-identical. Later
            # iterations of this step are not run (their old log-probs would be the same refused batch).
            up.optimizer.zero_grad(set_to_none=True)
            tt["optimizer"] += time.perf_counter() - to
            break
        up.optimizer.step()
        updates += 1
        tt["optimizer"] += time.perf_counter() - to
    return {"updates": updates, "nonfinite": nonfinite, "stats": stats, "times": tt}


def _sum_grads(params: list[torch.nn.Parameter], reduce) -> None:
    """All-reduce (sum) every parameter's gradient in one flat buffer (a missing gradient counts as zeros)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])  # [P]
    reduce.sum_(flat)
    off = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[off:off + n].view_as(p).to(p.dtype)
        off += n


def micro_batch_loss(parts: TrainParts, sub: TrainBatch, norm: algo.LossNorm, *, first_pass: bool, off_policy: bool = False):
    """The policy loss of one micro-batch (with gradient), and its per-token entropy on the first pass.
    `off_policy`: the samples came from older weights (overlapped rollouts): the old policy is the rollout's."""
    a, T, dtype = parts.job.rft.algorithm, parts.job.rft.sampling.temperature, parts.compute_dtype
    logp, ent = completion_logprobs(parts.model, sub, temperature=T, compute_dtype=dtype,
                                    with_entropy=first_pass)  # [b, Lc], [b, Lc] or None
    # num_iterations == 1: the update is exactly on-policy, so the old policy is this forward pass
    # (ratio 1, no extra pass). With more iterations, the rollout's log-probs are the old policy.
    # Off-policy samples (overlap): always the sampling policy's log-probs, recorded when sampled.
    old = logp.detach() if a.num_iterations == 1 and not off_policy else sub.old_logp  # [b, Lc]
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
        "rollout/staleness": st.staleness,
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
