"""The training loop, written out top to bottom.

    setup      load data, build and check the grader, load the policy (fp32 master weights, optional LoRA),
               the engine (bf16 compute where the CPU is fast at it) and, only if beta > 0, a reference
    baseline   greedy evaluation on the validation set
    loop       rollout -> grade -> advantages -> policy update -> log -> (eval, checkpoint)
    final      evaluation, checkpoint, report (json, markdown, plot)

Run it with `rft train JOB.yaml` or `rft demo`; the library entry point is `run_job(job)`.
Simplifications: one process, one device; rollouts and training alternate (no overlap); completions are
right-padded per micro-batch rather than packed.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from rft import algo, graders, models
from rft.config import JobSpec, config_sha256, dump_yaml, resolve, resolved_dict
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


@dataclass
class StepResult:
    metrics: dict
    samples: list[dict] = field(default_factory=list)


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
    return graders.build(job.grader, "method.reinforcement.grader")


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


def load_policy(job: JobSpec, resolved: models.ResolvedModel):
    model, tok = models.load(resolved, dtype=torch.float32)
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
    Set explicitly every step, so a step that skips the update still advances the schedule."""

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
                        pad_id=tok.pad_token_id, group=G)
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
        gn = torch.nn.utils.clip_grad_norm_(params, job.rft.optimizer.grad_clip if job.rft.optimizer.grad_clip > 0 else float("inf"))
        if it == 0:
            stats["grad_norm"] = float(gn)
        if not math.isfinite(float(gn)):
            raise RftError(f"step {step}: gradient norm is {float(gn)}; stopping before the weights are corrupted",
                           hint="lower the learning rate, or use rft.train.dtype=float32")
        opt.step()
        tt["optimizer"] += time.perf_counter() - to
    if iterations:
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
        "unscored_frac": adv.unscored / len(grades),
        "kl": stats["kl"],
        "entropy": stats["entropy"] if iterations else None,
        "skipped_update": iterations == 0,
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
    return StepResult(metrics, sample_rows)


def run_job(job: JobSpec, *, output_dir: str | None = None, progress: Callable | None = None,
            log: Callable[[str], None] = print, job_id: str | None = None) -> dict:
    """Run a whole job; returns the final job object (OpenAI fine_tuning.job fields + rft's)."""
    t_job = time.time()
    set_seed(job.seed)
    run = RunLog.create(output_dir, job_id)
    run.event("Job created", data={"model": job.model, "training_file": job.training_file})

    # --- setup: files, grader, config -------------------------------------------------------------
    run.event("Validating training and validation files")
    train_ds, val_ds = load_data(job)
    grader = build_grader(job)
    reference_check(job, grader, train_ds)
    if val_ds is not None:
        reference_check(job, grader, val_ds)
    derived = resolve(job, len(train_ds))
    resolved = resolved_dict(job, derived)
    cfg_sha = config_sha256(resolved)
    run.write_text("resolved_config.yaml", f"# sha256 of canonical JSON: {cfg_sha}\n" + dump_yaml(resolved))
    resolved_model = models.resolve(job.model)
    compute_dtype = compute_dtype_for(job)
    job_obj = {
        "id": run.job_id, "object": "fine_tuning.job", "created_at": int(t_job), "model": job.model,
        "training_file": job.training_file, "validation_file": job.validation_file, "seed": job.seed,
        "suffix": job.suffix, "metadata": job.metadata, "method": job.method.model_dump(mode="json"),
        "hyperparameters": {k: derived[k] for k in ("n_epochs", "learning_rate", "eval_interval")}
        | {"batch_size": derived["prompts_per_step"]},
        "status": "validating_files", "run_dir": str(run.dir), "config_sha256": cfg_sha,
        "training_file_sha256": train_ds.sha256, "validation_file_sha256": val_ds.sha256 if val_ds else None,
        "grader_type": job.grader.get("type"), "grader_sha256": grader.sha256, "code_version": code_version(),
        "compute_dtype": str(compute_dtype).replace("torch.", ""), "error": None, "fine_tuned_model": None,
        "finished_at": None, "trained_tokens": 0, "result_files": [], "estimated_finish": None,
    }
    run.write_json("job.json", job_obj | {"status": "running"})
    run.event("Files validated", data={"train_rows": len(train_ds), "validation_rows": len(val_ds) if val_ds else 0,
                                       "config_sha256": cfg_sha, **derived})
    try:
        result = _train(job, run, derived, train_ds, val_ds, grader, resolved_model, compute_dtype, job_obj, progress, log)
    except BaseException as e:
        job_obj |= {"status": "failed" if not isinstance(e, KeyboardInterrupt) else "cancelled",
                    "error": {"code": type(e).__name__, "message": str(e), "param": None},
                    "finished_at": int(time.time())}
        run.write_json("job.json", job_obj)
        run.event(f"Job {job_obj['status']}: {e}", level="error")
        raise
    finally:
        grader.close()
    return result


def _train(job, run, derived, train_ds, val_ds, grader, resolved_model, compute_dtype, job_obj, progress, log) -> dict:
    model, tok = load_policy(job, resolved_model)
    engine = LocalEngine(model, tok, compute_dtype=compute_dtype)
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

            # the frozen reference only runs forward passes: keep it in the compute dtype (no per-pass casts)
            ref_model = copy.deepcopy(model).to(compute_dtype).eval()
            for p in ref_model.parameters():
                p.requires_grad_(False)
    model_name = job.model

    job_obj["status"] = "running"
    run.write_json("job.json", job_obj)
    run.event("Training started", data={"total_steps": total, "compute_dtype": job_obj["compute_dtype"],
                                        "backend": engine.backend})
    evals: list[dict] = []
    baseline = None
    if val_ds is not None and job.rft.eval.baseline:
        log(f"baseline evaluation on {min(len(val_ds), job.rft.eval.max_items or len(val_ds))} validation items ...")
        rep = run_eval(engine, val_ds, grader, job, derived, step=0, model_name=model_name)
        baseline = rep
        run.write_json("eval_baseline.json", rep.summary() | {"items": list(rep.items)})
        run.event(f"Baseline accuracy {rep.accuracy.mean:.3f}", type="metrics", data={"step": 0, "baseline_eval": rep.summary()})
        log(f"baseline accuracy {rep.accuracy.mean:.3f} [{rep.accuracy.low:.3f}, {rep.accuracy.high:.3f}] ({rep.seconds:.1f}s)")

    cursor = DataCursor(len(train_ds), job.seed)
    t_train = 0.0
    trained_tokens = 0
    last = {}
    for step in range(1, total + 1):
        rows = [train_ds.rows[i] for i in cursor.take(derived["prompts_per_step"])]
        res = train_step(step, rows, job=job, derived=derived, model=model, tok=tok, engine=engine, grader=grader,
                         opt=opt, sched=sched, ref_model=ref_model, compute_dtype=compute_dtype, params=params)
        m = res.metrics | {"epoch": cursor.epoch}
        t_train += m["time/step"]
        trained_tokens += int(m["tokens_per_second"] * m["time/step"])
        run.metrics(m)
        if job.rft.train.log_samples:
            run.samples(step, res.samples)
        run.event(f"Step {step}/{total}: reward {m['reward']:.3f}", type="metrics",
                  data={"step": step, "total_steps": total, "train_mean_reward": m["reward"],
                        "timing": {"step": {"sampling": m["time/sampling"], "training": m["time/training"],
                                            "full_iteration": m["time/step"]}}})
        last = m
        if progress:
            progress(step, total, m)
        if m["unscored_frac"] > job.rft.train.max_unscored_frac:
            raise RftError(
                f"step {step}: {m['unscored_frac']:.0%} of samples were unscored (limit "
                f"{job.rft.train.max_unscored_frac:.0%}); the grader is failing: "
                + ", ".join(k for k in ERROR_KINDS if m.get(f"errors/{k}")),
                hint=f"see {run.dir / 'samples' / f'step_{step:06d}.jsonl'} for the errors",
            )
        is_last = step == total
        if val_ds is not None and (step % derived["eval_interval"] == 0) and not is_last:
            rep = run_eval(engine, val_ds, grader, job, derived, step=step, model_name=f"{model_name}@step{step}")
            evals.append(rep.summary())
            run.event(f"Step {step}: validation accuracy {rep.accuracy.mean:.3f}", type="metrics",
                      data={"step": step, "valid_eval": rep.summary(), "full_valid_mean_reward": rep.accuracy.mean})
            if progress:
                progress(step, total, m | {"val_accuracy": rep.accuracy.mean})
            if job.rft.checkpoint.at_eval:
                save_model_checkpoint(model, tok, run.dir / "checkpoints" / f"step_{step:06d}",
                                      {"job_id": run.job_id, "step": step, "eval": rep.summary(), "base_model": job.model},
                                      dtype=job.rft.checkpoint.dtype)

    final = None
    if val_ds is not None and job.rft.eval.final:
        log("final evaluation ...")
        final = run_eval(engine, val_ds, grader, job, derived, step=total, model_name=f"{model_name}@step{total}")
        evals.append(final.summary())
        run.write_json("eval_final.json", final.summary() | {"items": list(final.items)})
        run.event(f"Final accuracy {final.accuracy.mean:.3f}", type="metrics", data={"step": total, "final_eval": final.summary()})

    ckpt_dir = None
    if job.rft.checkpoint.save_final:
        ckpt_dir = run.dir / "checkpoints" / "final"
        save_model_checkpoint(model, tok, ckpt_dir, {"job_id": run.job_id, "step": total, "base_model": job.model,
                                                     "eval": final.summary() if final else None,
                                                     "config_sha256": job_obj["config_sha256"]},
                              dtype=job.rft.checkpoint.dtype)
        run.event("Checkpoint saved", data={"path": str(ckpt_dir), "step": total})

    # --- report ------------------------------------------------------------------------------------
    improved, regressed = [], []
    if baseline is not None and final is not None:
        for b, f in zip(baseline.items, final.items):
            if b["score"] is None or f["score"] is None:
                continue
            if f["score"] > b["score"]:
                improved.append({"index": b["index"], "baseline": b["completion"], "final": f["completion"]})
            elif f["score"] < b["score"]:
                regressed.append({"index": b["index"], "baseline": b["completion"], "final": f["completion"]})
    plot = plot_curves(run.dir / "metrics.jsonl", evals, baseline.summary() if baseline else None, run.dir / "curves.png")
    suffix = f":{job.suffix}" if job.suffix else ""
    job_obj |= {
        "status": "succeeded", "finished_at": int(time.time()), "trained_tokens": trained_tokens,
        "fine_tuned_model": str(ckpt_dir) if ckpt_dir else None, "fine_tuned_model_name": f"ft:{job.model}{suffix}:{run.job_id}",
        "baseline_eval": baseline.summary() if baseline else None, "final_eval": final.summary() if final else None,
        "evals": evals, "train_seconds": t_train, "trained_steps": total, "last_step_metrics": last,
        "improved_items": improved, "regressed_items": regressed,
        "paths": {"run_dir": str(run.dir), "report": str(run.dir / "report.md"), "report_json": str(run.dir / "report.json"),
                  "plot": str(plot), "checkpoint": str(ckpt_dir) if ckpt_dir else None,
                  "metrics": str(run.dir / "metrics.jsonl"), "events": str(run.dir / "events.jsonl")},
        "wall_seconds": time.time() - job_obj["created_at"],
    }
    job_obj["result_files"] = [job_obj["paths"]["report_json"], job_obj["paths"]["metrics"]]
    run.write_json("report.json", job_obj)
    write_markdown(job_obj, run.dir / "report.md")
    run.write_json("job.json", job_obj)
    run.event("The job has successfully completed", data={"final_eval": job_obj["final_eval"]})
    return job_obj
