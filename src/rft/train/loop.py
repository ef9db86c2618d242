"""The training loop, written out top to bottom.

    setup      load data, build and check the grader, load the policy (fp32 master weights, optional LoRA),
               the engine (bf16 compute where the CPU is fast at it) and, only if beta > 0, a reference
    baseline   greedy evaluation on the validation set
    loop       rollout -> grade -> advantages -> policy update -> log -> (eval, checkpoint)
    final      evaluation, checkpoint, report (json, markdown, plot; a report that fails is a warning, never
               the job's failure)

Non-finite steps (catalogue N1): when a step's loss or gradient norm is NaN or Inf, optimizer.step() is not
called (weights and optimizer moments stay bit-identical), the step is logged with `nonfinite: true` and the
running `skipped_steps` count, and a warning event is written. The step still counts: the step counter, the
learning-rate schedule (a function of the step number) and the data cursor advance, and the skipped batch is
not retried. rft.train.max_nonfinite_steps (default 3) in a row stop the run with an error; nothing is saved for those steps, so
the last checkpoint and state are intact. `grad_norm` is the norm before clipping; clipping bounds the applied
gradient's norm by `rft.optimizer.grad_clip`.

Run it with `rft train JOB.yaml` or `rft demo`; the library entry point is `run_job(job)`.
Simplifications: one process, one device; rollouts and training alternate (no overlap); completions are
right-padded per micro-batch rather than packed.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from rft import algo, graders, models
from rft.config import JobSpec, check_context_length, config_sha256, dump_yaml, resolve, resolved_dict
from rft.data import Dataset, load_dataset
from rft.engine import SamplingParams
from rft.engine.local import LocalEngine, best_cpu_dtype, render_prompt
from rft.errors import Problem, RftError
from rft.eval import evaluate
from rft.eval.report import plot_curves, write_markdown
from rft.extraction import sample_from_text
from rft.lineage import code_version
from rft.train.checkpoint import save_model_checkpoint
from rft.train.policy import build_batch, completion_logprobs
from rft.train.runlog import RunLog
from rft.types import ERROR_KINDS, EvalReport


# N1: a step whose loss or gradient is NaN/Inf is skipped (see train_step); this many in a row stop the run.


@dataclass
class StepResult:
    metrics: dict
    samples: list[dict] = field(default_factory=list)
    nonfinite: str | None = None  # why the update was refused (non-finite loss or gradient), else None


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def compute_dtype_for(job: JobSpec) -> torch.dtype:
    d = job.rft.train.dtype
    if d == "bfloat16":
        return torch.bfloat16
    if d == "float32":
        return torch.float32
    return best_cpu_dtype() if not torch.cuda.is_available() else torch.bfloat16


def build_grader(job: JobSpec):
    """The job's grader, with python graders running in a sandbox pool sized and limited by `rft.sandbox`."""
    from rft.graders.python_grader import configure_sandbox
    from rft.graders.sandbox import SandboxLimits

    sb = job.rft.sandbox
    configure_sandbox(SandboxLimits(timeout_s=sb.timeout_s, cpu_s=sb.cpu_s, memory_mb=sb.memory_mb, nproc=sb.nproc,
                                    fsize_mb=sb.fsize_mb, isolation=sb.isolation), size=sb.workers)
    return graders.build(job.grader, "method.reinforcement.grader", context=grader_context(job))


def grader_context(job: JobSpec) -> graders.GraderContext:
    """What graders are built with besides their spec: the hosts endpoint graders may reach (SSRF allowlist)."""
    return graders.GraderContext(allow_private_hosts=tuple(job.rft.network.allow_private_hosts))


def load_data(job: JobSpec) -> tuple[Dataset, Dataset | None]:
    train = load_dataset(job.training_file, split="train")
    val = load_dataset(job.validation_file, split="validation") if job.validation_file else None
    return train, val


def reference_check(job: JobSpec, grader, ds: Dataset) -> None:
    """Every row's reference output (a template over the item) must score as passing (>= 1.0)."""
    tmpl = job.rft.train.reference_output
    if not tmpl:
        return
    problems = []
    for i, row in enumerate(ds.rows):
        try:
            text = graders.render(tmpl, {}, row)
        except graders.TemplateError as e:
            problems.append(ds.problem(i, f"reference_output: {e}"))
            continue
        g = grader.grade(sample_from_text(text, job.rft.extraction), row)
        if g.score is None or g.score < 1.0:
            why = g.error or f"score {g.score}"
            problems.append(ds.problem(i, f"the reference answer {text!r} does not pass the grader ({why})"))
    if problems:
        raise RftError(f"{len(problems)} reference answer(s) fail the grader; fix the data or the grader", problems)


def device_for(job: JobSpec) -> str:
    d = job.rft.train.device
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cuda" and not torch.cuda.is_available():
        raise RftError("rft.train.device is cuda but this torch has no CUDA device", hint="use rft.train.device=auto")
    return d


def load_policy(job: JobSpec, resolved: models.ResolvedModel):
    model, tok = models.load(resolved, dtype=torch.float32, device=device_for(job))
    if job.rft.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lc = job.rft.lora
        model = get_peft_model(model, LoraConfig(r=lc.rank, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                 target_modules=lc.targets, task_type="CAUSAL_LM"))
    model.train()
    # Dropout is off in these models; keep modules in train mode only for peft/bookkeeping.
    return model, tok


class LrSchedule:
    """Learning rate as a function of the step (1-based): linear warmup, then constant, linear or cosine decay.
    Set explicitly every step, so a step that skips the update (no learnable group, or a non-finite loss or
    gradient) still advances the schedule: the LR of step k never depends on how many updates were skipped."""

    def __init__(self, opt, job: JobSpec, total_steps: int):
        self.opt, self.o, self.total = opt, job.rft.optimizer, total_steps
        self.base = [g["lr"] for g in opt.param_groups]

    def factor(self, step: int) -> float:
        o, i = self.o, step - 1
        if o.warmup_steps and i < o.warmup_steps:
            return (i + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        progress = (i - o.warmup_steps) / max(1, self.total - o.warmup_steps)
        if o.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def apply(self, step: int) -> float:
        f = self.factor(step)
        for g, base in zip(self.opt.param_groups, self.base):
            g["lr"] = base * f
        return self.base[0] * f


def make_scheduler(opt, job: JobSpec, total_steps: int) -> LrSchedule:
    return LrSchedule(opt, job, total_steps)


class DataCursor:
    """Seeded epoch-wise shuffle over the training rows; `state()` is what a resume needs."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.epoch, self.pos = 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        idx = list(range(self.n))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(idx)
        return idx

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch += 1
                self.pos = 0
                self._order = self._perm()
            out.append(self._order[self.pos])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "n": self.n}


def _within_group_std(rewards: torch.Tensor) -> float:
    """Mean over groups (with >= 2 scored completions) of the std of their scored rewards; rewards [N, G]."""
    stds = []
    for row in rewards:
        s = row[~torch.isnan(row)]
        if s.numel() >= 2:
            stds.append(float(s.std()))
    return sum(stds) / len(stds) if stds else 0.0


def run_eval(engine, ds, grader, job: JobSpec, derived: dict, *, step: int, model_name: str) -> EvalReport:
    ec = job.rft.eval
    return evaluate(
        engine, ds, grader, model_name=model_name,
        max_new_tokens=ec.max_new_tokens or job.rft.sampling.max_new_tokens,
        samples=derived["eval_samples"], temperature=ec.temperature, extraction=job.rft.extraction,
        seed=job.seed + 7919 * (step + 1), step=step, max_items=ec.max_items,
    )


def train_step(step: int, rows: list[dict], *, job: JobSpec, derived: dict, model, tok, engine, grader, opt, sched,
               ref_model, compute_dtype: torch.dtype, params) -> StepResult:
    """One GRPO step: rollout, grade, advantages, update. Returns the step's metrics and samples."""
    a, s = job.rft.algorithm, job.rft.sampling
    G = derived["completions_per_prompt"]
    t_step = time.perf_counter()

    # 1. rollout ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    prompt_ids = [render_prompt(tok, r["messages"]) for r in rows]
    sp = SamplingParams(n=G, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens,
                        stop=tuple(s.stop), seed=job.seed * 100_003 + step)
    groups = engine.generate_ids(prompt_ids, sp)  # [N][G] Completion
    t_sampling = time.perf_counter() - t0

    # 2. grade -----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    flat = [c for g in groups for c in g]
    flat_rows = [r for r in rows for _ in range(G)]
    samples = [sample_from_text(c.text, job.rft.extraction, finish_reason=c.finish_reason) for c in flat]
    grades = graders.grade_many(grader, samples, flat_rows)
    t_grading = time.perf_counter() - t0
    rewards = torch.tensor([g.score if g.score is not None else float("nan") for g in grades]).view(len(rows), G)  # [N, G]

    # 3. advantages --------------------------------------------------------------------------------
    adv = algo.compute_advantages(a.advantage, rewards)  # [N, G]

    # 4. policy update -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    flat_prompts = [p for p in prompt_ids for _ in range(G)]
    batch = build_batch(prompt_ids, [(list(c.token_ids), list(c.logprobs)) for c in flat], adv.advantages.reshape(-1),
                        pad_id=tok.pad_token_id, group=G).to(next(model.parameters()).device)
    B = batch.comp_in.shape[0]
    norm = algo.LossNorm(sequences=B, tokens=int(batch.comp_mask.sum()), max_len=s.max_new_tokens)
    # micro-batches hold whole groups (they share one prompt pass)
    per_mb = max(1, (job.rft.train.micro_batch_size or B) // G)
    learnable = bool((adv.advantages != 0).any())
    stats = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_low": 0.0, "clip_high": 0.0, "grad_norm": 0.0}
    tt = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "sync": 0.0}
    ntok = max(1.0, float(batch.comp_mask.sum()))
    lr = sched.apply(step)
    # Nothing to learn (every group has zero variance or is unscored) and no KL term: skip the passes.
    iterations = a.num_iterations if (learnable or a.beta > 0) else 0
    nonfinite = None  # why this step's update was refused (N1), or None
    updates = 0
    for it in range(iterations):
        opt.zero_grad(set_to_none=True)
        for start in range(0, batch.n_prompts, per_mb):
            sub = batch.prompts(start, start + per_mb)
            tf = time.perf_counter()
            logp, ent = completion_logprobs(model, sub, temperature=s.temperature, compute_dtype=compute_dtype,
                                            with_entropy=(it == 0))
            # num_iterations == 1: the update is exactly on-policy, so the old policy is this forward pass
            # (ratio 1, no extra pass). With more iterations, the rollout's log-probs are the old policy.
            old = logp.detach() if a.num_iterations == 1 else sub.old_logp
            ref = None
            if a.beta > 0:
                with torch.no_grad():
                    if isinstance(ref_model, torch.nn.Module):
                        ref, _ = completion_logprobs(ref_model, sub, temperature=s.temperature, compute_dtype=compute_dtype)
                    else:  # LoRA: the base model with the adapter disabled is the reference
                        with ref_model():
                            ref, _ = completion_logprobs(model, sub, temperature=s.temperature, compute_dtype=compute_dtype)
            out = algo.policy_loss(a.loss, logp, old, sub.advantages, sub.comp_mask, norm, epsilon=a.epsilon,
                                   epsilon_high=a.epsilon_high, beta=a.beta, ref_logp=ref)
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
        gn = torch.nn.utils.clip_grad_norm_(params, job.rft.optimizer.grad_clip if job.rft.optimizer.grad_clip > 0 else float("inf"))
        if it == 0:
            stats["grad_norm"] = float(gn)
        if nonfinite is None and not math.isfinite(float(gn)):
            nonfinite = f"gradient norm is {float(gn)}"
        if nonfinite is not None:
            # N1: refuse the update. No optimizer.step(): weights and AdamW moments stay bit-identical. Later
            # iterations of this step are not run (their old log-probs would be the same refused batch).
            opt.zero_grad(set_to_none=True)
            tt["optimizer"] += time.perf_counter() - to
            break
        opt.step()
        updates += 1
        tt["optimizer"] += time.perf_counter() - to
    if updates:
        ts = time.perf_counter()
        engine.sync_weights()
        tt["sync"] = time.perf_counter() - ts
    t_training = time.perf_counter() - t0
    t_total = time.perf_counter() - t_step

    # 5. metrics -----------------------------------------------------------------------------------
    scored = rewards[~torch.isnan(rewards)]
    lengths = [len(c.token_ids) for c in flat]
    n_tokens = sum(lengths) + sum(len(p) for p in flat_prompts)
    err_rates = {k: sum(1 for g in grades if g.error == k) / len(grades) for k in ERROR_KINDS}
    metrics = {
        "step": step,
        "reward": float(scored.mean()) if scored.numel() else float("nan"),
        "reward_std": float(scored.std()) if scored.numel() > 1 else 0.0,
        f"rewards/{grader.name}/mean": float(scored.mean()) if scored.numel() else float("nan"),
        f"rewards/{grader.name}/latency_mean": sum(g.latency_s for g in grades) / len(grades),
        "frac_reward_zero_std": adv.zero_std_groups / len(rows),
        "reward_std_within_group": _within_group_std(rewards),
        "unscored_frac": adv.unscored / len(grades),
        "kl": stats["kl"],
        "entropy": stats["entropy"] if iterations else None,
        "skipped_update": iterations == 0,
        "nonfinite": nonfinite is not None,
        "clip_ratio/low_mean": stats["clip_low"],
        "clip_ratio/high_mean": stats["clip_high"],
        "clip_ratio/region_mean": stats["clip_low"] + stats["clip_high"],
        "completions/mean_length": sum(lengths) / len(lengths),
        "completions/max_length": max(lengths),
        "completions/clipped_ratio": sum(1 for c in flat if c.finish_reason == "length") / len(flat),
        "loss": stats["loss"],
        "grad_norm": stats["grad_norm"],
        "lr": lr,
        "time/sampling": t_sampling,
        "time/grading": t_grading,
        "time/training": t_training,
        **{f"time/training/{k}": v for k, v in tt.items()},
        "time/step": t_total,
        "tokens_per_second": n_tokens / t_total,
        "sampling/tokens_per_second": sum(lengths) / max(t_sampling, 1e-9),
    }
    for name in sorted({k for g in grades for k in g.sub_scores}):
        vals = [g.sub_scores.get(name) for g in grades if g.sub_scores.get(name) is not None]
        if vals:
            metrics[f"rewards/{name}/mean"] = sum(vals) / len(vals)
        lats = [g.sub_latency_s[name] for g in grades if name in g.sub_latency_s]
        if lats:
            metrics[f"rewards/{name}/latency_mean"] = sum(lats) / len(lats)
    metrics.update({f"errors/{k}": v for k, v in err_rates.items()})
    advs = adv.advantages.reshape(-1).tolist()
    sample_rows = [
        {"step": step, "prompt": rows[i // G]["messages"][-1]["content"], "completion": c.text,
         "reward": g.score, "error": g.error, "advantage": advs[i], "finish_reason": c.finish_reason}
        for i, (c, g) in enumerate(zip(flat, grades))
    ]
    return StepResult(metrics, sample_rows, nonfinite=nonfinite)


# ================================================================================================ jobs
EXIT_PAUSED = 75  # the job saved its state and stopped (pause request, SIGTERM, monitor): `rft jobs resume` continues
EXIT_CANCELLED = 3


class JobStopped(Exception):
    """Raised out of the loop when a job pauses (request, SIGTERM, monitor policy) or is cancelled."""

    def __init__(self, status: str, message: str, job: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.job = job
        self.exit_code = EXIT_PAUSED if status == "paused" else EXIT_CANCELLED


class _Signals:
    """SIGTERM (and SIGINT twice-safe) -> a flag the loop checks at each step boundary, where it saves its state
    and stops. Installed only in the main thread; restored on exit."""

    def __init__(self):
        import signal
        import threading

        self.term = False
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM,):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.term = True

    def restore(self) -> None:
        import signal

        for sig, h in self._old.items():
            signal.signal(sig, h)


def _absolute_paths(spec: dict) -> dict:
    """Relative data paths in a stored spec become absolute, so `rft jobs resume` works from any directory."""
    spec = dict(spec)
    for k in ("training_file", "validation_file"):
        v = spec.get(k)
        if isinstance(v, str) and not v.startswith("builtin:") and os.path.exists(v):
            spec[k] = str(Path(v).resolve())
    ev = dict((spec.get("rft") or {}).get("eval") or {})
    if isinstance(ev.get("guard_file"), str) and os.path.exists(ev["guard_file"]):
        ev["guard_file"] = str(Path(ev["guard_file"]).resolve())
        spec["rft"] = dict(spec["rft"]) | {"eval": ev}
    return spec


def model_sha256(resolved: models.ResolvedModel) -> str:
    """One hash for a model directory: its manifest's hash if it has one, else the hash of its weight files."""
    import hashlib

    from rft.hashing import sha256_file

    p = Path(resolved.path)
    if (p / "manifest.json").exists():
        return sha256_file(p / "manifest.json")
    h = hashlib.sha256()
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("config.json")):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def run_job(job: JobSpec, *, output_dir: str | None = None, progress: Callable | None = None,
            log: Callable[[str], None] = print, job_id: str | None = None) -> dict:
    """Run a whole job, recorded in the registry; returns the final job object (OpenAI fine_tuning.job fields + rft's).
    Raises JobStopped if it is paused or cancelled part-way (its state is saved; `resume_job` continues it)."""
    from rft.registry import Registry

    reg = Registry()
    run = RunLog.create(output_dir, job_id)
    reg.create_job(run.job_id, spec=_absolute_paths(job.model_dump(mode="json")), model=job.model, run_dir=str(run.dir),
                   status="validating_files")
    run.attach(reg)
    run.event("Job created", data={"model": job.model, "training_file": job.training_file})
    return _execute(job, run, reg, progress=progress, log=log, resume=None)


def resume_job(job_id: str, *, config_path: str | None = None, overrides: list[str] | None = None,
               allow_config_change: bool = False, progress: Callable | None = None, log: Callable[[str], None] = print,
               actor: str | None = None) -> dict:
    """Continue a paused or interrupted job from its last complete training state."""
    from rft.config import apply_overrides, load_raw, parse_job
    from rft.registry import RESUMABLE, Registry, default_actor

    reg = Registry()
    row = reg.get_job(job_id)
    if row["status"] not in RESUMABLE:
        extra = f" (pid {row['pid']})" if row["status"] == "running" else ""
        raise RftError(f"job {row['id']} is {row['status']}{extra}; only paused, interrupted or failed jobs can be resumed")
    raw = load_raw(config_path) if config_path else dict(row["spec"])
    job = parse_job(apply_overrides(raw, overrides or []), config_path or f"job {row['id']} (stored spec)")
    run = RunLog(Path(row["run_dir"]), row["id"])
    run.attach(reg)
    reg.claim_job(row["id"], status="validating_files", error=None, requested=None, finished_at=None)
    reg.audit(actor or default_actor(), "job.resume", row["id"], {"status": row["status"], "step": row["step"]},
              {"status": "validating_files"}, detail={"config_path": config_path, "overrides": overrides or [],
                                                      "allow_config_change": allow_config_change})
    run.event(f"Resuming job (was {row['status']} at step {row['step']})")
    return _execute(job, run, reg, progress=progress, log=log, resume={"allow_config_change": allow_config_change,
                                                                        "actor": actor or default_actor()})


def _execute(job: JobSpec, run: RunLog, reg, *, progress, log, resume: dict | None) -> dict:
    t_job = time.time()
    set_seed(job.seed)
    signals = _Signals()
    grader = guard_grader = None
    job_obj: dict = {"id": run.job_id}
    try:
        # --- setup: files, grader, config ---------------------------------------------------------
        run.event("Validating training and validation files")
        train_ds, val_ds = load_data(job)
        grader = build_grader(job)
        reference_check(job, grader, train_ds)
        if val_ds is not None:
            reference_check(job, grader, val_ds)
        guard_ds = load_dataset(job.rft.eval.guard_file, split="validation") if job.rft.eval.guard_file else None
        if guard_ds is not None:
            guard_grader = graders.build(job.rft.eval.guard_grader, "rft.eval.guard_grader", context=grader_context(job)) \
                if job.rft.eval.guard_grader else grader
        derived = resolve(job, len(train_ds))
        resolved = resolved_dict(job, derived)
        cfg_sha = config_sha256(resolved)
        run.write_text("resolved_config.yaml", f"# sha256 of canonical JSON: {cfg_sha}\n" + dump_yaml(resolved))
        resolved_model = models.resolve(job.model)
        ctx_len = models.context_length(resolved_model)
        if ctx_len is not None:
            check_context_length(job, ctx_len)
        base_sha = model_sha256(resolved_model)
        compute_dtype = compute_dtype_for(job)
        reg.record_dataset(train_ds.sha256, job.training_file, len(train_ds))
        if val_ds is not None:
            reg.record_dataset(val_ds.sha256, job.validation_file, len(val_ds))
        if guard_ds is not None:
            reg.record_dataset(guard_ds.sha256, job.rft.eval.guard_file, len(guard_ds))
        reg.record_grader(grader.sha256, job.grader.get("type"), job.grader)
        fingerprint = {
            "model": job.model, "base_model_sha256": base_sha, "config_sha256": cfg_sha,
            "training_file_sha256": train_ds.sha256, "validation_file_sha256": val_ds.sha256 if val_ds else None,
            "guard_file_sha256": guard_ds.sha256 if guard_ds else None, "grader_sha256": grader.sha256,
        }
        job_obj = {
            "id": run.job_id, "object": "fine_tuning.job", "created_at": int(t_job), "model": job.model,
            "training_file": job.training_file, "validation_file": job.validation_file, "seed": job.seed,
            "suffix": job.suffix, "metadata": job.metadata, "method": job.method.model_dump(mode="json"),
            "hyperparameters": {k: derived[k] for k in ("n_epochs", "learning_rate", "eval_interval")}
            | {"batch_size": derived["prompts_per_step"]},
            "status": "validating_files", "run_dir": str(run.dir), **fingerprint,
            "grader_type": job.grader.get("type"), "code_version": code_version(),
            "compute_dtype": str(compute_dtype).replace("torch.", ""), "error": None, "fine_tuned_model": None,
            "finished_at": None, "trained_tokens": 0, "result_files": [], "estimated_finish": None,
        }
        state_dir = None
        if resume is not None:
            state_dir = _check_resume(run, reg, job, resolved, fingerprint, resume, log)
        reg.update_job(run.job_id, status="queued", resolved_config=resolved, config_sha256=cfg_sha,
                       base_model_sha256=base_sha, training_file=job.training_file, training_file_sha256=train_ds.sha256,
                       validation_file=job.validation_file, validation_file_sha256=fingerprint["validation_file_sha256"],
                       guard_file=job.rft.eval.guard_file, guard_file_sha256=fingerprint["guard_file_sha256"],
                       grader_sha256=grader.sha256, code_version=job_obj["code_version"], total_steps=derived["total_steps"])
        run.write_json("job.json", job_obj | {"status": "queued"})
        run.event("Files validated", data={"train_rows": len(train_ds), "validation_rows": len(val_ds) if val_ds else 0,
                                           "config_sha256": cfg_sha, **derived})
        ctx = _Ctx(job=job, run=run, reg=reg, derived=derived, train_ds=train_ds, val_ds=val_ds, guard_ds=guard_ds,
                   grader=grader, guard_grader=guard_grader, resolved_model=resolved_model, compute_dtype=compute_dtype,
                   job_obj=job_obj, progress=progress, log=log, signals=signals, fingerprint=fingerprint,
                   resolved=resolved)
        result = _train(ctx, state_dir, resume)
        reg.update_job(run.job_id, status="succeeded", finished_at=time.time(), result=_result_summary(result))
        return result
    except JobStopped as e:
        job_obj |= {"status": e.status, "error": None if e.status == "paused" else {"code": "cancelled", "message": e.message}}
        run.write_json("job.json", job_obj)
        reg.update_job(run.job_id, status=e.status, finished_at=time.time() if e.status == "cancelled" else None,
                       requested=None)
        run.event(f"Job {e.status}: {e.message}", level="warn", type="status")
        e.job = job_obj
        raise
    except BaseException as e:
        status = "cancelled" if isinstance(e, KeyboardInterrupt) else "failed"
        err = {"code": type(e).__name__, "message": str(e), "param": None}
        job_obj |= {"status": status, "error": err, "finished_at": int(time.time())}
        # The registry row first: whatever else fails below (a full disk), the job must not be left looking
        # active, which `rft jobs list` would later show as interrupted.
        reg.update_job(run.job_id, status=status, error=err, finished_at=time.time())
        for record in (lambda: run.write_json("job.json", job_obj),
                       lambda: run.event(f"Job {status}: {e}", level="error", type="status")):
            try:
                record()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        raise
    finally:
        signals.restore()
        if grader is not None:
            grader.close()
        if guard_grader is not None and guard_grader is not grader:
            guard_grader.close()


def _result_summary(r: dict) -> dict:
    keys = ("fine_tuned_model", "baseline_eval", "final_eval", "train_seconds", "trained_steps", "final_checkpoint_id",
            "final_comparison", "final_verdict")
    return {k: r.get(k) for k in keys}


def _check_resume(run: RunLog, reg, job: JobSpec, resolved: dict, fingerprint: dict, resume: dict, log) -> Path | None:
    """Find the state to resume from and refuse (C8) if the config, data, grader or model changed, unless allowed."""
    from rft.train.state import find_latest_state

    warnings = []
    state_dir = find_latest_state(run.dir / "checkpoints" / "state", warn=warnings.append)
    for w in warnings:
        log(w)
        run.event(w, level="warn")
    if state_dir is None:
        msg = "no complete training state was saved before the job stopped; it restarts from step 0"
        log(f"warning: {msg}")
        run.event(msg, level="warn")
        return None
    import json as _json

    saved = _json.loads((state_dir / "trainer_state.json").read_text())
    old_fp = saved.get("fingerprint", {})
    diff = {k: {"before": old_fp.get(k), "after": v} for k, v in fingerprint.items() if old_fp.get(k) != v}
    cfg_diff = _dict_diff(saved.get("resolved_config", {}), resolved)
    if diff or cfg_diff:
        detail = {"fingerprint": diff, "config": cfg_diff}
        lines = [f"{k}: {d['before']} -> {d['after']}" for k, d in diff.items() if k != "config_sha256"]
        lines += [f"{k}: {d['before']!r} -> {d['after']!r}" for k, d in cfg_diff.items()]
        if not resume["allow_config_change"]:
            raise RftError(f"job {run.job_id}: the config, data, grader or model changed since step {saved['step']}; "
                           "resuming would not continue the same run", [Problem(x) for x in lines],
                           hint="pass --allow-config-change to resume anyway (the diff is recorded)")
        reg.audit(resume["actor"], "job.resume.config_change", run.job_id, before=old_fp, after=fingerprint, detail=detail)
        run.event("Resuming with a changed config (allowed): " + "; ".join(lines), level="warn", data=detail)
    return state_dir


def _dict_diff(a: dict, b: dict, prefix: str = "") -> dict:
    out = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        key = f"{prefix}{k}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out |= _dict_diff(va, vb, key + ".")
        elif va != vb:
            out[key] = {"before": va, "after": vb}
    return out


@dataclass
class _Ctx:
    job: JobSpec
    run: RunLog
    reg: object
    derived: dict
    train_ds: Dataset
    val_ds: Dataset | None
    guard_ds: Dataset | None
    grader: object
    guard_grader: object
    resolved_model: models.ResolvedModel
    compute_dtype: torch.dtype
    job_obj: dict
    progress: Callable | None
    log: Callable
    signals: _Signals
    fingerprint: dict
    resolved: dict


def _report_dict(rep: EvalReport, grader=None) -> dict:
    from rft.eval.runner import report_dict

    thr = getattr(grader, "pass_threshold", None)
    return report_dict(rep, pass_threshold=thr if thr is not None else 1.0)


def _train(ctx: _Ctx, state_dir: Path | None, resume: dict | None) -> dict:
    from rft.train.state import load_state, save_state

    job, run, reg, derived = ctx.job, ctx.run, ctx.reg, ctx.derived
    model, tok = load_policy(job, ctx.resolved_model)
    params = [p for p in model.parameters() if p.requires_grad]
    o = job.rft.optimizer
    opt = torch.optim.AdamW(params, lr=derived["learning_rate"], betas=tuple(o.betas), weight_decay=o.weight_decay,
                            foreach=True)
    total = derived["total_steps"]
    sched = make_scheduler(opt, job, total)
    ref_model = None
    if job.rft.algorithm.beta > 0:
        if job.rft.lora.enabled:
            ref_model = model.disable_adapter  # a context manager: the base model is the reference
        else:
            import copy

            # the frozen reference only runs forward passes: keep it in the compute dtype (no per-pass casts).
            # Made before any resumed weights are loaded: the reference is always the base model.
            ref_model = copy.deepcopy(model).to(ctx.compute_dtype).eval()
            for p in ref_model.parameters():
                p.requires_grad_(False)
    monitor = _make_monitor(job)
    cursor = DataCursor(len(ctx.train_ds), job.seed)
    st = {"step": 0, "t_train": 0.0, "trained_tokens": 0, "evals": [], "last": {}, "baseline": None,
          "guard_baseline": None}
    if state_dir is not None:
        trainer = load_state(state_dir, model=model, opt=opt, verified=True)  # find_latest_state verified it
        st = trainer["loop"]
        same_data = trainer["fingerprint"].get("training_file_sha256") == ctx.fingerprint["training_file_sha256"]
        c = trainer["cursor"]
        if same_data and c["n"] == cursor.n:
            cursor.epoch, cursor.pos = c["epoch"], c["pos"]
            cursor._order = cursor._perm()
        else:
            run.event("The training data changed: the data cursor restarts at the beginning (the old position "
                      "does not apply to new data)", level="warn")
        if monitor is not None and trainer.get("monitor") is not None and hasattr(monitor, "load_state_dict"):
            monitor.load_state_dict(trainer["monitor"])
        run.truncate_metrics(st["step"])
        reg.truncate_metrics(run.job_id, st["step"])
        run.event(f"Resumed from {state_dir.name} (step {st['step']})", data={"state": str(state_dir), "step": st["step"]})
        ctx.log(f"resumed from step {st['step']} ({state_dir})")
    engine = LocalEngine(model, tok, compute_dtype=ctx.compute_dtype)  # built after loading: rollouts use the resumed weights
    model_name = job.model
    ctx.job_obj["status"] = "running"
    reg.update_job(run.job_id, status="running", step=st["step"])
    run.write_json("job.json", ctx.job_obj)
    run.event("Training started" if state_dir is None else "Training resumed",
              data={"total_steps": total, "compute_dtype": ctx.job_obj["compute_dtype"], "backend": engine.backend,
                    "from_step": st["step"]})

    def trainer_state() -> dict:
        return {"loop": st, "cursor": cursor.state(), "fingerprint": ctx.fingerprint, "resolved_config": ctx.resolved,
                "monitor": monitor.state_dict() if monitor is not None and hasattr(monitor, "state_dict") else None}

    def save(step: int) -> Path:
        d = save_state(run.dir / "checkpoints" / "state", step, model=model, opt=opt, trainer=trainer_state(),
                       keep=job.rft.checkpoint.keep_states)
        run.event(f"Training state saved at step {step}", data={"path": str(d), "step": step})
        return d

    if st["step"] == 0 and ctx.val_ds is not None and job.rft.eval.baseline and st["baseline"] is None:
        n_items = min(len(ctx.val_ds), job.rft.eval.max_items or len(ctx.val_ds))
        ctx.log(f"baseline evaluation on {n_items} validation items ...")
        rep = run_eval(engine, ctx.val_ds, ctx.grader, job, derived, step=0, model_name=model_name)
        st["baseline"] = _report_dict(rep, ctx.grader)
        run.write_json("eval_baseline.json", st["baseline"])
        reg.add_eval_report("baseline", st["baseline"], job_id=run.job_id, model_ref=job.model,
                            data_sha256=ctx.val_ds.sha256, grader_sha256=ctx.grader.sha256,
                            path=run.dir / "eval_baseline.json")
        run.event(f"Baseline accuracy {rep.accuracy.mean:.3f}", type="metrics", data={"step": 0, "baseline_eval": rep.summary()})
        ctx.log(f"baseline accuracy {rep.accuracy.mean:.3f} [{rep.accuracy.low:.3f}, {rep.accuracy.high:.3f}] ({rep.seconds:.1f}s)")
        if ctx.guard_ds is not None:
            g = run_eval(engine, ctx.guard_ds, ctx.guard_grader, job, derived, step=0, model_name=model_name)
            st["guard_baseline"] = _report_dict(g, ctx.guard_grader)
            reg.add_eval_report("guard_baseline", st["guard_baseline"], job_id=run.job_id, model_ref=job.model,
                                data_sha256=ctx.guard_ds.sha256, grader_sha256=ctx.guard_grader.sha256)
            run.event(f"Guard baseline accuracy {g.accuracy.mean:.3f}", type="metrics", data={"step": 0, "guard_eval": g.summary()})
        if monitor is not None:  # the step-0 point of "training reward up while validation down"
            _alarms(ctx, monitor.observe_eval(0, st["baseline"]["accuracy"],
                                              st["guard_baseline"]["accuracy"] if st["guard_baseline"] else None))

    state_every = job.rft.checkpoint.state_interval or derived["eval_interval"]
    for step in range(st["step"] + 1, total + 1):
        rows = [ctx.train_ds.rows[i] for i in cursor.take(derived["prompts_per_step"])]
        res = train_step(step, rows, job=job, derived=derived, model=model, tok=tok, engine=engine, grader=ctx.grader,
                         opt=opt, sched=sched, ref_model=ref_model, compute_dtype=ctx.compute_dtype, params=params)
        m = res.metrics | {"epoch": cursor.epoch}
        if res.nonfinite is not None:
            st["skipped_steps"] = st.get("skipped_steps", 0) + 1
            st["nonfinite_streak"] = st.get("nonfinite_streak", 0) + 1
        else:
            st["nonfinite_streak"] = 0
        m["skipped_steps"] = st.get("skipped_steps", 0)
        st["t_train"] += m["time/step"]
        st["trained_tokens"] += int(m["tokens_per_second"] * m["time/step"])
        st["step"] = step
        run.metrics(m)
        reg.add_metrics(run.job_id, step, m)
        if job.rft.train.log_samples:
            run.samples(step, res.samples)
        run.event(f"Step {step}/{total}: reward {m['reward']:.3f}", type="metrics",
                  data={"step": step, "total_steps": total, "train_mean_reward": m["reward"],
                        "timing": {"step": {"sampling": m["time/sampling"], "training": m["time/training"],
                                            "full_iteration": m["time/step"]}}})
        st["last"] = m
        if ctx.progress:
            ctx.progress(step, total, m)
        if res.nonfinite is not None:
            run.event(f"Step {step}: {res.nonfinite}; the update was skipped (weights and optimizer unchanged; "
                      f"{st['nonfinite_streak']} in a row, {st['skipped_steps']} in all)", level="warn",
                      type="metrics", data={"step": step, "nonfinite": res.nonfinite, "skipped_steps": st["skipped_steps"],
                                            "consecutive": st["nonfinite_streak"]})
            if st["nonfinite_streak"] >= job.rft.train.max_nonfinite_steps:
                raise RftError(
                    f"step {step}: {st['nonfinite_streak']} consecutive steps had a non-finite loss or gradient "
                    f"({res.nonfinite}); stopping. No update was applied on those steps; the last saved checkpoint "
                    "and training state are intact",
                    hint="lower the learning rate, use rft.train.dtype=float32, or check the grader's rewards; "
                         f"continue with `rft jobs resume {run.job_id}`")
        if m["unscored_frac"] > job.rft.train.max_unscored_frac:
            raise RftError(
                f"step {step}: {m['unscored_frac']:.0%} of samples were unscored (limit "
                f"{job.rft.train.max_unscored_frac:.0%}); the grader is failing: "
                + ", ".join(k for k in ERROR_KINDS if m.get(f"errors/{k}")),
                hint=f"see {run.dir / 'samples' / f'step_{step:06d}.jsonl'} for the errors",
            )
        pause_reasons = _alarms(ctx, monitor.observe_step(step, m) if monitor is not None else [])
        is_last = step == total
        if ctx.val_ds is not None and (step % derived["eval_interval"] == 0) and not is_last:
            rep = run_eval(engine, ctx.val_ds, ctx.grader, job, derived, step=step, model_name=f"{model_name}@step{step}")
            st["evals"].append(rep.summary())
            run.event(f"Step {step}: validation accuracy {rep.accuracy.mean:.3f}", type="metrics",
                      data={"step": step, "valid_eval": rep.summary(), "full_valid_mean_reward": rep.accuracy.mean})
            if ctx.progress:
                ctx.progress(step, total, m | {"val_accuracy": rep.accuracy.mean})
            guard = None
            if ctx.guard_ds is not None:
                guard = _report_dict(run_eval(engine, ctx.guard_ds, ctx.guard_grader, job, derived, step=step,
                                              model_name=f"{model_name}@step{step}"), ctx.guard_grader)
            if monitor is not None:
                pause_reasons += _alarms(ctx, monitor.observe_eval(step, rep.accuracy.mean,
                                                                   guard["accuracy"] if guard else None))
            if job.rft.checkpoint.at_eval:
                _checkpoint(ctx, model, tok, step, _report_dict(rep, ctx.grader), guard, st, is_final=False)
        if ctx.signals.term:
            pause_reasons.append("SIGTERM received")
        req = reg.heartbeat(run.job_id, step)
        if req == "cancel":
            raise JobStopped("cancelled", f"cancelled by request at step {step}")
        if req == "pause":
            pause_reasons.append("pause requested")
        if is_last:
            break
        if pause_reasons or step % state_every == 0:
            save(step)
        if pause_reasons:
            raise JobStopped("paused", f"{'; '.join(pause_reasons)}: state saved at step {step}; "
                                       f"continue with `rft jobs resume {run.job_id}`")
        from rft.train.state import fault

        fault("after_step", step)

    final = None
    if ctx.val_ds is not None and job.rft.eval.final:
        ctx.log("final evaluation ...")
        rep = run_eval(engine, ctx.val_ds, ctx.grader, job, derived, step=total, model_name=f"{model_name}@step{total}")
        final = _report_dict(rep, ctx.grader)
        st["evals"].append(rep.summary())
        run.write_json("eval_final.json", final)
        run.event(f"Final accuracy {rep.accuracy.mean:.3f}", type="metrics", data={"step": total, "final_eval": rep.summary()})
    final_guard = None
    if ctx.guard_ds is not None and job.rft.eval.final:
        final_guard = _report_dict(run_eval(engine, ctx.guard_ds, ctx.guard_grader, job, derived, step=total,
                                            model_name=f"{model_name}@step{total}"), ctx.guard_grader)
    if monitor is not None and final is not None:
        _alarms(ctx, monitor.observe_eval(total, final["accuracy"], final_guard["accuracy"] if final_guard else None))

    ckpt = None
    if job.rft.checkpoint.save_final:
        ckpt = _checkpoint(ctx, model, tok, total, final, final_guard, st, is_final=True)

    # --- report ------------------------------------------------------------------------------------
    baseline = st["baseline"]
    comparison = _compare(baseline, final) if baseline and final and \
        baseline.get("dataset_sha256") == final.get("dataset_sha256") else None
    improved = comparison.get("improved", []) if comparison else []
    regressed = comparison.get("regressed", []) if comparison else []
    summ = lambda r: {k: v for k, v in r.items() if k != "items"} if r else None  # noqa: E731
    plot = _report_step(ctx, "the plot curves.png", lambda: plot_curves(run.dir / "metrics.jsonl", st["evals"],
                                                                         summ(baseline), run.dir / "curves.png"))
    suffix = f":{job.suffix}" if job.suffix else ""
    ckpt_dir = ckpt["path"] if ckpt else None
    job_obj = ctx.job_obj
    job_obj |= {
        "status": "succeeded", "finished_at": int(time.time()), "trained_tokens": st["trained_tokens"],
        "fine_tuned_model": f"ckpt:{ckpt['id']}" if ckpt else None,
        "fine_tuned_model_name": f"ft:{job.model}{suffix}:{run.job_id}",
        "baseline_eval": summ(baseline), "final_eval": summ(final), "guard_baseline_eval": summ(st["guard_baseline"]),
        "guard_final_eval": summ(final_guard),
        "evals": st["evals"], "train_seconds": st["t_train"], "trained_steps": total, "last_step_metrics": st["last"],
        "skipped_steps": st.get("skipped_steps", 0),
        "improved_items": improved, "regressed_items": regressed,
        "final_comparison": {k: v for k, v in comparison.items() if k not in ("improved", "regressed")} if comparison else None,
        "final_checkpoint_id": ckpt["id"] if ckpt else None, "final_verdict": ckpt.get("verdict") if ckpt else None,
        "paths": {"run_dir": str(run.dir), "report": str(run.dir / "report.md"), "report_json": str(run.dir / "report.json"),
                  "plot": str(plot) if plot else None, "checkpoint": ckpt_dir,
                  "metrics": str(run.dir / "metrics.jsonl"), "events": str(run.dir / "events.jsonl")},
        "wall_seconds": time.time() - job_obj["created_at"],
    }
    job_obj["result_files"] = [job_obj["paths"]["report_json"], job_obj["paths"]["metrics"]]
    _report_step(ctx, "report.json", lambda: run.write_json("report.json", job_obj))
    _report_step(ctx, "report.md", lambda: write_markdown(job_obj, run.dir / "report.md"))
    _report_step(ctx, "job.json", lambda: run.write_json("job.json", job_obj))
    run.event("The job has successfully completed", data={"final_eval": job_obj["final_eval"]})
    return job_obj


def _report_step(ctx: _Ctx, what: str, fn: Callable):
    """Run one report-writing step after training finished. Reports never fail a job: the weights, checkpoint
    and registry row are the result; a plot or file that cannot be written (odd metric values, a full disk, a
    plotting library that refuses its input) is a warning event, and the job still succeeds."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - anything a report step raises is a warning, by design
        msg = f"could not write {what}: {type(e).__name__}: {' '.join(str(e).split())[:300]}; the job's result stands"
        ctx.log(f"warning: {msg}")
        try:
            ctx.run.event(msg, level="warn", type="report", data={"what": what, "error": type(e).__name__})
        except Exception:  # noqa: BLE001 - the event log may be on the same full disk
            pass
        return None


# ------------------------------------------------------------------------- checkpoints, gates, monitor
def _compare(baseline: dict, candidate: dict) -> dict:
    from rft.eval.compare import compare_reports

    return compare_reports(baseline, candidate)


def _make_monitor(job: JobSpec):
    if job.rft.monitor is None:
        return None
    from rft.train.monitor import RewardMonitor

    return RewardMonitor(job.rft.monitor)


def _alarms(ctx: _Ctx, alarms: list) -> list[str]:
    """Record each alarm as an event; return the reasons to pause (alarms whose policy is pause)."""
    reasons = []
    for a in alarms:
        d = a.as_dict() if hasattr(a, "as_dict") else dict(a)
        ctx.run.event(f"Reward-integrity alarm ({d['kind']}) at step {d['step']}: {d['message']}", level="warn",
                      type="alarm", data=d)
        if d.get("action") == "pause":
            reasons.append(f"monitor alarm {d['kind']}")
    return reasons


def _checkpoint(ctx: _Ctx, model, tok, step: int, report: dict | None, guard: dict | None, st: dict, *,
                is_final: bool) -> dict:
    """Save a model checkpoint, register it with its evaluation, compare it with the baseline, apply the gates,
    and prune to the best k plus the latest."""
    from rft.hashing import sha256_file

    job, run, reg = ctx.job, ctx.run, ctx.reg
    name = "final" if is_final else f"step_{step:06d}"
    path = run.dir / "checkpoints" / name
    meta = {"job_id": run.job_id, "step": step, "base_model": job.model, "eval": {k: v for k, v in report.items() if k != "items"} if report else None,
            "config_sha256": ctx.fingerprint["config_sha256"], "training_file_sha256": ctx.fingerprint["training_file_sha256"],
            "grader_sha256": ctx.fingerprint["grader_sha256"], "base_model_sha256": ctx.fingerprint["base_model_sha256"],
            "code_version": ctx.job_obj.get("code_version")}
    save_model_checkpoint(model, tok, path, meta, dtype=job.rft.checkpoint.dtype)
    val = None
    if report is not None:
        lo, hi = report.get("accuracy_ci95", [None, None])
        val = {"mean": report["accuracy"], "low": lo, "high": hi}
    cid = reg.add_checkpoint(run.job_id, step, str(path), sha256_file(path / "manifest.json"), is_final=is_final, val=val)
    out = {"id": cid, "path": str(path), "step": step}
    if report is not None:
        rid = reg.add_eval_report("final" if is_final else "checkpoint", report, job_id=run.job_id, checkpoint_id=cid,
                                  model_ref=f"ckpt:{cid}", data_sha256=ctx.val_ds.sha256, grader_sha256=ctx.grader.sha256)
        reg.update_checkpoint(cid, eval_report_id=rid)
        if guard is not None:
            reg.add_eval_report("guard", guard, job_id=run.job_id, checkpoint_id=cid, model_ref=f"ckpt:{cid}",
                                data_sha256=ctx.guard_ds.sha256, grader_sha256=ctx.guard_grader.sha256)
        if st.get("baseline") and st["baseline"].get("dataset_sha256") != report.get("dataset_sha256"):
            run.event(f"Checkpoint {cid}: the validation data changed since the baseline was measured (resumed with "
                      "--allow-config-change); no comparison or gate verdict", level="warn")
        elif st.get("baseline"):
            from rft.eval.gates import evaluate_gates

            comp = _compare(st["baseline"], report)
            gcomp = _compare(st["guard_baseline"], guard) if guard is not None and st.get("guard_baseline") else None
            verdict = evaluate_gates(job.rft.gates, comp, guard_comparison=gcomp, candidate_report=report,
                                     baseline_report=st["baseline"], guard_required=ctx.guard_ds is not None)
            verdict = dict(verdict) | {"step": step, "checkpoint_id": cid}
            vid = reg.add_verdict(cid, verdict)
            out["verdict"] = verdict | {"id": vid}
            ok = "passed" if verdict["passed"] else "failed"
            run.event(f"Checkpoint {cid} (step {step}): gates {ok}", type="gates", data=verdict)
    run.event(f"Checkpoint {cid} saved (step {step})", data={"id": cid, "path": str(path), "step": step})
    _prune_checkpoints(ctx)
    return out


def _prune_checkpoints(ctx: _Ctx) -> None:
    """Keep the best `keep_best` by validation score (at least the single best), the newest, the final, and
    anything approved or aliased. A checkpoint whose folder is gone (moved or deleted outside rft) is stale: it is
    marked `missing` with a warning and takes no place among the best, so it can neither crash the run nor shield
    a real checkpoint from rotation (catalogue C6)."""
    import shutil

    reg, job = ctx.reg, ctx.job
    rows = [r for r in reg.list_checkpoints(ctx.run.job_id, include_pruned=False) if not r["is_final"]]
    for r in [r for r in rows if not (Path(r["path"]) / "manifest.json").exists()]:
        reg.update_checkpoint(r["id"], status="missing")
        ctx.run.event(f"Checkpoint {r['id']} (step {r['step']}): its folder {r['path']} is gone (moved or deleted); "
                      "it is no longer tracked as a candidate best checkpoint", level="warn",
                      data={"id": r["id"], "step": r["step"], "path": r["path"]})
        rows.remove(r)
    if not rows:
        return
    keep = {max(rows, key=lambda r: (r["step"], r["created_at"]))["id"]}
    scored = sorted((r for r in rows if r["val_score"] is not None and r["val_score"] == r["val_score"]),
                    key=lambda r: (r["val_score"], r["step"]), reverse=True)
    keep |= {r["id"] for r in scored[: max(1, job.rft.checkpoint.keep_best)]}
    keep |= {r["id"] for r in rows if r["approval_status"] == "approved"}
    keep |= reg.pinned_checkpoints()
    for r in rows:
        if r["id"] not in keep:
            shutil.rmtree(r["path"], ignore_errors=True)
            reg.update_checkpoint(r["id"], status="pruned")
            ctx.run.event(f"Checkpoint {r['id']} (step {r['step']}) pruned: not among the best {job.rft.checkpoint.keep_best}",
                          data={"id": r["id"], "step": r["step"]})
