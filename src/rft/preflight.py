"""Pre-flight "learnability" report: before spending compute, sample the base model on a subset of the
training prompts, grade it, and time a real training step.

Reports: per-prompt pass-rate histogram, the share of groups with zero reward variance at the job's group size
(those give no gradient), grader error rates and latency, tokens and seconds per step (sampling, grading,
training measured on real steps with a throw-away copy of the model), and a forecast of the whole run's time.
If the job names `rft.train.reference_output`, every row's reference must pass the grader first.

    rft preflight examples/quickstart.yaml
"""

from __future__ import annotations

import copy
import time

import torch

from rft import graders, models
from rft.config import JobSpec, check_context_length, resolve
from rft.engine.local import LocalEngine
from rft.train import loop
from rft.types import ERROR_KINDS


def run_preflight(job: JobSpec, *, prompts: int = 16, timing_steps: int = 3, log=print) -> dict:
    t_start = time.perf_counter()
    loop.set_seed(job.seed)
    train_ds, val_ds = loop.load_data(job)
    grader = loop.build_grader(job)
    try:
        loop.reference_check(job, grader, train_ds)
        if val_ds is not None:
            loop.reference_check(job, grader, val_ds)
        derived = resolve(job, len(train_ds))
        G = derived["completions_per_prompt"]
        compute_dtype = loop.compute_dtype_for(job)
        resolved_model = models.resolve(job.model)
        ctx_len = models.context_length(resolved_model)
        if ctx_len is not None:
            check_context_length(job, ctx_len)
        model, tok = loop.load_policy(job, resolved_model)
        engine = LocalEngine(model, tok, compute_dtype=compute_dtype)

        # 1. learnability: k = G completions for a subset of prompts, graded with the job's grader
        cursor = loop.DataCursor(len(train_ds), job.seed + 1)
        rows = [train_ds.rows[i] for i in cursor.take(min(prompts, len(train_ds)))]
        s = job.rft.sampling
        from rft.engine import SamplingParams
        from rft.extraction import sample_from_text

        t0 = time.perf_counter()
        groups = engine.generate([r["messages"] for r in rows], SamplingParams(
            n=G, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens,
            stop=tuple(s.stop), seed=job.seed))
        t_sample = time.perf_counter() - t0
        flat = [c for g in groups for c in g]
        flat_rows = [r for r in rows for _ in range(G)]
        t0 = time.perf_counter()
        grades = graders.grade_many(grader, [sample_from_text(c.text, job.rft.extraction) for c in flat], flat_rows)
        t_grade = time.perf_counter() - t0
        pass_rates, zero_var = [], 0
        for i in range(len(rows)):
            g = [x.score for x in grades[i * G : (i + 1) * G] if x.score is not None]
            rate = sum(1 for v in g if v >= 1.0) / len(g) if g else float("nan")
            pass_rates.append(rate)
            if len(g) < 2 or max(g) - min(g) < 1e-6:
                zero_var += 1
        bins = [0] * 5  # [0], (0, .25], (.25, .5], (.5, .75], (.75, 1]
        for r in pass_rates:
            if r != r:
                continue
            bins[0 if r == 0 else min(4, 1 + int((r - 1e-9) * 4))] += 1
        errors = {k: sum(1 for g in grades if g.error == k) / len(grades) for k in ERROR_KINDS}

        # 2. timing: real training steps on a throw-away copy of the model (the first warms kernels up)
        tmodel = copy.deepcopy(model)
        teng = LocalEngine(tmodel, tok, compute_dtype=compute_dtype)
        params = [p for p in tmodel.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=derived["learning_rate"])
        sched = loop.make_scheduler(opt, job, derived["total_steps"])
        ref = None if job.rft.algorithm.beta == 0 else (tmodel.disable_adapter if job.rft.lora.enabled
                                                         else copy.deepcopy(tmodel).to(compute_dtype).eval())
        step_metrics = []
        tcur = loop.DataCursor(len(train_ds), job.seed + 2)
        for k in range(timing_steps):
            trows = [train_ds.rows[i] for i in tcur.take(derived["prompts_per_step"])]
            res = loop.train_step(k + 1, trows, job=job, derived=derived, model=tmodel, tok=tok, engine=teng,
                                  grader=grader, opt=opt, sched=sched, ref_model=ref,
                                  compute_dtype=compute_dtype, params=params)
            step_metrics.append(res.metrics)
        # The first step warms kernels up; forecast from the median of the others.
        warm = sorted(step_metrics[1:] or step_metrics, key=lambda x: x["time/step"])
        m = warm[len(warm) // 2]
        # Zero-variance steps skip the update; forecast with the share of learnable groups seen above.
        learnable_share = 1 - zero_var / max(1, len(rows))
        p_all_dead = (1 - learnable_share) ** derived["prompts_per_step"]
        train_time = m["time/training"]
        step_forecast = m["time/sampling"] + m["time/grading"] + (1 - p_all_dead) * train_time
        eval_forecast = 0.0
        if val_ds is not None:
            # time a greedy evaluation on a slice of the validation set and scale it to the full set
            from rft.eval import evaluate

            n_items = min(len(val_ds), job.rft.eval.max_items or len(val_ds))
            probe = min(n_items, 64)
            t0 = time.perf_counter()
            evaluate(engine, val_ds, grader, model_name=job.model, max_new_tokens=job.rft.eval.max_new_tokens or s.max_new_tokens,
                     extraction=job.rft.extraction, max_items=probe)
            per_eval = (time.perf_counter() - t0) * n_items / probe
            n_evals = (derived["total_steps"] - 1) // derived["eval_interval"] + int(job.rft.eval.baseline) + int(job.rft.eval.final)
            eval_forecast = per_eval * n_evals
        report = {
            "object": "rft.preflight",
            "job_model": job.model,
            "prompts_sampled": len(rows),
            "group_size": G,
            "pass_rate_mean": sum(r for r in pass_rates if r == r) / max(1, sum(1 for r in pass_rates if r == r)),
            "pass_rate_histogram": {"0": bins[0], "(0,0.25]": bins[1], "(0.25,0.5]": bins[2], "(0.5,0.75]": bins[3], "(0.75,1]": bins[4]},
            "zero_variance_group_frac": zero_var / max(1, len(rows)),
            "grader_error_rates": {k: v for k, v in errors.items() if v > 0},
            "unscored_frac": sum(1 for g in grades if g.score is None) / len(grades),
            "grader_latency_ms_mean": 1000 * sum(g.latency_s for g in grades) / len(grades),
            "grading_seconds": t_grade,
            "sampling_seconds": t_sample,
            "completion_tokens_mean": sum(len(c.token_ids) for c in flat) / len(flat),
            "step": {"prompts": derived["prompts_per_step"], "completions": derived["prompts_per_step"] * G,
                     "tokens": int(m["tokens_per_second"] * m["time/step"]),
                     "measured_seconds": [x["time/step"] for x in step_metrics],
                     "sampling_seconds": m["time/sampling"], "grading_seconds": m["time/grading"],
                     "training_seconds": train_time, "forecast_seconds": step_forecast},
            "forecast": {"total_steps": derived["total_steps"], "train_seconds": step_forecast * derived["total_steps"],
                         "eval_seconds": eval_forecast,
                         "total_seconds": step_forecast * derived["total_steps"] + eval_forecast},
            "recommendations": _recommend(pass_rates, zero_var / max(1, len(rows)), G),
            "seconds": time.perf_counter() - t_start,
        }
        return report
    finally:
        grader.close()


def _recommend(pass_rates: list[float], zero_frac: float, G: int) -> list[str]:
    out = []
    valid = [r for r in pass_rates if r == r]
    if valid and sum(1 for r in valid if r == 0) / len(valid) > 0.5:
        out.append("Over half the prompts never pass: the task may be too hard for this model, or the grader too strict; "
                   "check a few samples with `rft grader run`.")
    if valid and sum(1 for r in valid if r == 1) / len(valid) > 0.5:
        out.append("Over half the prompts always pass: filter out easy prompts or make the task harder.")
    if zero_frac > 0.5:
        out.append(f"{zero_frac:.0%} of groups have no reward variance at group size {G}; a larger rft.sampling.n "
                   "gives more groups something to learn from.")
    if not out:
        out.append("The task looks learnable at this group size.")
    return out
