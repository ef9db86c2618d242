"""Pre-flight "learnability" report: before spending compute, sample the base model on a subset of the
training prompts, grade it, and time real training steps.

Reports: the peak-memory forecast (`rft.train.memory`: weights, gradients, optimizer state, engine copy,
reference, activations, KV cache; a job that will not fit the device is refused here, before any weights load,
with the settings that would fit), per-prompt pass-rate histogram, the share of groups with zero reward variance at the job's group size
(those give no gradient), grader error rates and latency, tokens and seconds per step (sampling, grading,
training measured on real steps), and a forecast of the whole run's time. If the job names
`rft.train.reference_output`, every row's reference must pass the grader first. The pass-rate measurement and
its verdict (`learnability`: too sparse or not, the remedies `rft train` would apply, the others) come from
`rft.train.learnability`, the check `rft train` runs first.

The model, optimizer, reference and engine come from `rft.train.setup.setup_training`, exactly as a training
run builds them. Preflight owns them and throws them away: it samples and times an evaluation on the base
weights first, then runs its timing steps on the same parts (they change the weights; nothing is saved).

    rft preflight examples/quickstart.yaml
"""

from __future__ import annotations

import time

from rft.config import JobSpec
from rft.eval import evaluate
from rft.train import memory
from rft.train.cursor import DataCursor
from rft.train.learnability import measure, verdict
from rft.train.setup import device_for, load_inputs, set_seed, setup_training
from rft.train.step import step_metrics, train_step


def run_preflight(job: JobSpec, *, prompts: int = 16, timing_steps: int = 3, log=print) -> dict:
    t_start = time.perf_counter()
    if job.method.type != "reinforcement":
        raise RftError(f"rft preflight measures a reinforcement job's learnability and step time; this job's "
                       f"method.type is {job.method.type} (rft train runs it; its evaluations report the validation "
                       "loss or the grader's accuracy)", field="method.type")
    set_seed(job.seed)
    inputs = load_inputs(job)
    try:
        fc = memory.check(job, inputs, device=device_for(job), log=log)  # refuses (RftError) a job that will not fit
        for line in fc.lines() if fc is not None else []:
            log(line)
        parts = setup_training(job, inputs, check_memory=False)
        values, train_ds, val_ds, grader = parts.values, parts.inputs.train_ds, parts.inputs.val_ds, parts.grader
        G = values.completions_per_prompt

        # 1. learnability: k = G completions for a subset of prompts, graded with the job's grader (the same
        # measurement and verdict as the check at the start of `rft train`)
        cursor = DataCursor(len(train_ds), job.seed + 1)
        rows = [train_ds.rows[i] for i in cursor.take(min(prompts, len(train_ds)))]
        s = job.rft.sampling
        meas = measure(parts, rows, seed=job.seed)
        pass_rates, zero_var = meas.pass_rates, meas.zero_variance
        learn = verdict(meas, job)
        bins = [0] * 5  # [0], (0, .25], (.25, .5], (.5, .75], (.75, 1]
        for r in pass_rates:
            if r != r:
                continue
            bins[0 if r == 0 else min(4, 1 + int((r - 1e-9) * 4))] += 1
        errors = meas.error_rates

        # 2. evaluation time: a greedy evaluation on a slice of the validation set, scaled to the full set
        eval_forecast = 0.0
        if val_ds is not None:
            n_items = min(len(val_ds), job.rft.eval.max_items or len(val_ds))
            probe = min(n_items, 64)
            t0 = time.perf_counter()
            evaluate(parts.engine, val_ds, grader, model_name=job.model,
                     max_new_tokens=job.rft.eval.max_new_tokens or s.max_new_tokens,
                     extraction=job.rft.extraction, max_items=probe,
                     response_format=job.response_format)
            per_eval = (time.perf_counter() - t0) * n_items / probe
            n_evals = (values.total_steps - 1) // values.eval_interval + int(job.rft.eval.baseline) + int(job.rft.eval.final)
            eval_forecast = per_eval * n_evals

        # 3. step time: real training steps (they change the weights: last, on parts thrown away after this)
        step_metrics_rows = []
        tcur = DataCursor(len(train_ds), job.seed + 2)
        for k in range(timing_steps):
            trows = [train_ds.rows[i] for i in tcur.take(values.prompts_per_step)]
            step_metrics_rows.append(step_metrics(train_step(k + 1, trows, parts), grader.name))
        # The first step warms kernels up; forecast from the median of the others.
        warm = sorted(step_metrics_rows[1:] or step_metrics_rows, key=lambda x: x["time/step"])
        m = warm[len(warm) // 2]
        # Zero-variance steps skip the update; forecast with the share of learnable groups seen above.
        learnable_share = 1 - zero_var / max(1, len(rows))
        p_all_dead = (1 - learnable_share) ** values.prompts_per_step
        train_time = m["time/training"]
        step_forecast = m["time/sampling"] + m["time/grading"] + (1 - p_all_dead) * train_time
        report = {
            "object": "rft.preflight",
            "job_model": job.model,
            "memory": fc.as_dict() if fc is not None else None,
            "prompts_sampled": len(rows),
            "group_size": G,
            "pass_rate_mean": sum(r for r in pass_rates if r == r) / max(1, sum(1 for r in pass_rates if r == r)),
            "pass_rate_histogram": {"0": bins[0], "(0,0.25]": bins[1], "(0.25,0.5]": bins[2], "(0.5,0.75]": bins[3], "(0.75,1]": bins[4]},
            "zero_variance_group_frac": zero_var / max(1, len(rows)),
            "grader_error_rates": {k: v for k, v in errors.items() if v > 0},
            "unscored_frac": meas.unscored_frac,
            "grader_latency_ms_mean": meas.grader_latency_ms_mean,
            "grading_seconds": meas.grading_seconds,
            "sampling_seconds": meas.sampling_seconds,
            "completion_tokens_mean": meas.completion_tokens_mean,
            "learnability": {k: v for k, v in learn.as_dict().items() if k != "numbers"},
            "step": {"prompts": values.prompts_per_step, "completions": values.prompts_per_step * G,
                     "tokens": int(m["tokens_per_second"] * m["time/step"]),
                     "measured_seconds": [x["time/step"] for x in step_metrics_rows],
                     "sampling_seconds": m["time/sampling"], "grading_seconds": m["time/grading"],
                     "training_seconds": train_time, "forecast_seconds": step_forecast},
            "forecast": {"total_steps": values.total_steps, "train_seconds": step_forecast * values.total_steps,
                         "eval_seconds": eval_forecast,
                         "total_seconds": step_forecast * values.total_steps + eval_forecast},
            "recommendations": _recommend(pass_rates, zero_var / max(1, len(rows)), G),
            "seconds": time.perf_counter() - t_start,
        }
        return report
    finally:
        inputs.close()


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
