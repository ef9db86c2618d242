"""The training loop, written out top to bottom.

    setup      load and check the data and grader, resolve the hyperparameters, record them (`rft.train.setup`
               builds everything: policy in fp32 master weights with optional LoRA, AdamW, LR schedule, the
               engine in bf16 where the CPU is fast at it and, only if beta > 0, a frozen reference)
    resume     (a resumed job) weights, optimizer, RNG, data cursor and loop state from the last saved state
    baseline   greedy evaluation on the validation set
    loop       `train_step` (rollout -> grade -> advantages -> policy update, in rft.train.step) -> log ->
               (eval, checkpoint) -> (state save, pause, cancel)
    final      evaluation, checkpoint
    report     json, markdown, plot (a report that fails is a warning, never the job's failure)

Non-finite steps (catalogue N1): when a step's loss or gradient norm is NaN or Inf, optimizer.step() is not
called (weights and optimizer moments stay bit-identical), the step is logged with `nonfinite: true` and the
running `skipped_steps` count, and a warning event is written. The step still counts: the step counter, the
learning-rate schedule (a function of the step number) and the data cursor advance, and the skipped batch is
not retried. rft.train.max_nonfinite_steps (default 3) in a row stop the run with an error; nothing is saved for those steps, so
the last checkpoint and state are intact. `grad_norm` is the norm before clipping; clipping bounds the applied
gradient's norm by `rft.optimizer.grad_clip`.

Methods (`method.type`, `rft.train.methods`): reinforcement steps run through `StepRunner` as above; supervised
and dpo run their own step (`rft.train.supervised`, `rft.train.dpo`) on the cursor's rows, with everything
else here shared. Without a grader (supervised/dpo may have none) every evaluation is the validation loss
(`valid_loss`, `accuracy` None): the report shows it in place of accuracy, and the gates, which compare graded
accuracy, record that they do not apply. The learnability check, warm start and reward monitor are
reinforcement's only.

Run it with `rft train JOB.yaml` or `rft demo`; the library entry point is `run_job(job)`.
Simplifications: one device per process; the steps come from rft.train.step.StepRunner (one process, or Ray
with `rft.cluster.enabled`; rollouts overlapped with training when `rft.train.overlap_rollouts`); completions
are right-padded per micro-batch rather than packed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rft import models
from rft.config import JobSpec, MonitorConfig, Resolved, config_sha256, dump_yaml, resolved_dict
from rft.data import Dataset
from rft.errors import Problem, RftError
from rft.eval import evaluate
from rft.eval.report import plot_curves, write_markdown
from rft.registry.lineage import code_version
from rft.train.checkpoint import save_model_checkpoint
from rft.train.cursor import DataCursor
from rft.train.learnability import apply_remedies
from rft.train.methods import FineTuningMethod, StepOutcome, method_for, rl_outcome
from rft.train.runlog import RunLog
from rft.train.setup import TrainInputs, TrainParts, set_seed, setup_training
from rft.train.state import LoopState, fault, find_latest_state, load_state, save_state
from rft.train.distributed import TrainerLost, start_cluster
from rft.train.step import StepRunner, train_step
from rft.train.trackers import Trackers, tracking
from rft.types import ERROR_KINDS, EvalReport


def run_eval(engine, ds: Dataset, grader, job: JobSpec, values: Resolved, *, step: int, model_name: str) -> EvalReport:
    ec = job.rft.eval
    return evaluate(
        engine, ds, grader, model_name=model_name,
        max_new_tokens=ec.max_new_tokens or job.rft.sampling.max_new_tokens,
        samples=values.eval_samples, temperature=ec.temperature, extraction=job.rft.extraction,
        seed=job.seed + 7919 * (step + 1), step=step, max_items=ec.max_items,
        response_format=job.response_format,
    )


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
    from rft.config import apply_overrides, load_raw
    from rft.jobcheck import parse_job
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
    inputs = None
    job_obj: dict = {"id": run.job_id}
    try:
        run.event("Validating training and validation files")
        check = _saved_learnability(run) if resume is not None else None
        if check is not None:  # a resumed job keeps the remedies its first start applied
            job = apply_remedies(job, check.get("overrides") or {})
        method = method_for(job)  # reinforcement, supervised or dpo (rft.train.methods)
        inputs = method.load_inputs(job)
        parts = None
        if resume is None and job.rft.learnability.enabled and method.learnability:
            parts = setup_training(job, inputs)
            job, inputs, parts, check = _learnability(job, run, inputs, parts, log)
        if method.learnability:
            _check_warm_start(job)
        ctx = _record_inputs(job, run, reg, inputs, created_at=int(t_job), progress=progress, log=log, signals=signals,
                             learnability=check, method=method)
        job_obj = ctx.job_obj
        state_dir = None
        if resume is not None:
            state_dir = _check_resume(run, reg, job, ctx.resolved, ctx.fingerprint, resume, log)
        values, fp = inputs.values, ctx.fingerprint
        reg.update_job(run.job_id, status="queued", resolved_config=ctx.resolved, config_sha256=fp["config_sha256"],
                       base_model_sha256=fp["base_model_sha256"], training_file=job.training_file,
                       training_file_sha256=fp["training_file_sha256"], validation_file=job.validation_file,
                       validation_file_sha256=fp["validation_file_sha256"], guard_file=job.rft.eval.guard_file,
                       guard_file_sha256=fp["guard_file_sha256"], grader_sha256=fp["grader_sha256"],
                       code_version=job_obj["code_version"], total_steps=values.total_steps)
        run.write_json("job.json", job_obj | {"status": "queued"})
        run.event("Files validated", data={"train_rows": len(inputs.train_ds),
                                           "validation_rows": len(inputs.val_ds) if inputs.val_ds else 0,
                                           "config_sha256": fp["config_sha256"], **values.as_dict()})
        with tracking(job, run, ctx.resolved, log=log) as trackers:  # metrics, evals, lineage to rft.report_to
            ctx.trackers, job_obj["trackers"] = trackers, trackers.paths()
            result = _train(ctx, state_dir, parts)
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
        if inputs is not None and inputs.grader is not None:  # supervised and dpo jobs may have no grader
            inputs.close()


@dataclass
class _Ctx:
    """What the parts of a job share: where it records (run folder, registry), what it trains on, and the job
    object that becomes report.json. Built once the inputs are checked (`_record_inputs`)."""

    job: JobSpec
    run: RunLog
    reg: object
    inputs: TrainInputs
    resolved: dict  # resolved_config.yaml's content
    fingerprint: dict  # the hashes a resume and every checkpoint are checked against
    job_obj: dict
    monitor: object  # a RewardMonitor, or None
    progress: Callable | None
    log: Callable
    signals: _Signals
    method: FineTuningMethod  # what differs between reinforcement, supervised and dpo (rft.train.methods)
    trackers: Trackers = field(default_factory=Trackers)  # rft.report_to (rft.train.trackers)


def _record_inputs(job: JobSpec, run: RunLog, reg, inputs: TrainInputs, *, created_at: int, progress, log,
                   signals, method: FineTuningMethod, learnability: dict | None = None) -> _Ctx:
    """Write resolved_config.yaml, record the data and grader in the registry, fingerprint the run and start its
    job object. `learnability`: what the learnability check found and applied (recorded in the resolved config)."""
    train_ds, val_ds, guard_ds, grader = inputs.train_ds, inputs.val_ds, inputs.guard_ds, inputs.grader
    resolved = resolved_dict(job, inputs.values)
    if learnability is not None:
        resolved["learnability"] = {k: learnability.get(k) for k in ("kind", "applied", "advice", "overrides")}
    cfg_sha = config_sha256(resolved)
    run.write_text("resolved_config.yaml", f"# sha256 of canonical JSON: {cfg_sha}\n" + dump_yaml(resolved))
    base_sha = model_sha256(inputs.model_ref)
    reg.record_dataset(train_ds.sha256, job.training_file, len(train_ds))
    if val_ds is not None:
        reg.record_dataset(val_ds.sha256, job.validation_file, len(val_ds))
    if guard_ds is not None:
        reg.record_dataset(guard_ds.sha256, job.rft.eval.guard_file, len(guard_ds))
    if grader is not None:  # supervised and dpo jobs may have none (evaluations report the validation loss)
        reg.record_grader(grader.sha256, job.grader.get("type"), job.grader)
    fingerprint = {
        "model": job.model, "base_model_sha256": base_sha, "config_sha256": cfg_sha,
        "training_file_sha256": train_ds.sha256, "validation_file_sha256": val_ds.sha256 if val_ds else None,
        "guard_file_sha256": guard_ds.sha256 if guard_ds else None,
        "grader_sha256": grader.sha256 if grader is not None else None,
    }
    v = inputs.values
    job_obj = {
        "id": run.job_id, "object": "fine_tuning.job", "created_at": created_at, "model": job.model,
        "training_file": job.training_file, "validation_file": job.validation_file, "seed": job.seed,
        "suffix": job.suffix, "metadata": job.metadata, "method": job.method.model_dump(mode="json", exclude_none=True),
        "hyperparameters": {"n_epochs": v.n_epochs, "learning_rate": v.learning_rate, "eval_interval": v.eval_interval,
                            "batch_size": v.prompts_per_step},
        "status": "validating_files", "run_dir": str(run.dir), **fingerprint,
        "grader_type": job.grader.get("type") if job.grader else None, "code_version": code_version(),
        "compute_dtype": str(inputs.compute_dtype).replace("torch.", ""), "error": None, "fine_tuned_model": None,
        "finished_at": None, "trained_tokens": 0, "result_files": [], "estimated_finish": None,
        "learnability": learnability,
    }
    # the reward-integrity monitor watches rewards: reinforcement only
    monitor = _make_monitor(job) if method.learnability else None
    return _Ctx(job=job, run=run, reg=reg, inputs=inputs, resolved=resolved, fingerprint=fingerprint, job_obj=job_obj,
                monitor=monitor, progress=progress, log=log, signals=signals, method=method)


def _result_summary(r: dict) -> dict:
    keys = ("fine_tuned_model", "fine_tuned_model_checkpoint", "baseline_eval", "final_eval", "train_seconds", "trained_steps", "final_checkpoint_id",
            "final_comparison", "final_verdict", "learnability", "warm_start", "trained_tokens")
    return {k: r.get(k) for k in keys}


def _check_resume(run: RunLog, reg, job: JobSpec, resolved: dict, fingerprint: dict, resume: dict, log) -> Path | None:
    """Find the state to resume from and refuse (C8) if the config, data, grader or model changed, unless allowed."""
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


def _evaluate(ctx: _Ctx, parts: TrainParts, *, step: int, model_name: str) -> tuple[dict, dict]:
    """The validation evaluation at `step`: (report dict, its summary). With a grader, greedy generation graded
    on the method's evaluation rows (supervised/dpo also add `valid_loss`); without one (supervised and dpo
    only), the method's validation loss, with `accuracy` None."""
    job, inp, method = ctx.job, parts.inputs, ctx.method
    if inp.grader is None:
        report = method.loss_eval(parts, inp.val_ds, step=step, model_name=model_name)
        return report, {k: v for k, v in report.items() if k != "items"}
    rep = run_eval(parts.engine, method.eval_rows(inp.val_ds), inp.grader, job, inp.values, step=step,
                   model_name=model_name)
    report, summary = _report_dict(rep, inp.grader), rep.summary()
    if method.loss_eval is not None and method.has_targets(inp.val_ds):
        loss = method.loss_eval(parts, inp.val_ds, step=step, model_name=model_name)
        extra = {k: v for k, v in loss.items() if k.startswith("valid_")}
        report, summary = report | extra, summary | extra
    return report, summary


def _has_accuracy(report: dict | None) -> bool:
    return bool(report) and report.get("accuracy") is not None


def _grader_sha(grader) -> str | None:
    return grader.sha256 if grader is not None else None


def _headline(summary: dict, ci: bool = False) -> str:
    """'accuracy 0.750' (with its CI when asked), or 'loss 1.2345' for a loss-only evaluation."""
    if summary.get("accuracy") is None:
        return f"loss {summary['valid_loss']:.4f}"
    text = f"accuracy {summary['accuracy']:.3f}"
    if ci:
        lo, hi = summary["accuracy_ci95"]
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def _report_dict(rep: EvalReport, grader=None) -> dict:
    from rft.eval.runner import report_dict

    thr = getattr(grader, "pass_threshold", None)
    return report_dict(rep, pass_threshold=thr if thr is not None else 1.0)


def _train(ctx: _Ctx, state_dir: Path | None, parts: TrainParts | None = None) -> dict:
    """Setup and resume, baseline, warm start, the loop, final evaluation, report: each its own function below.
    `parts`: already built (by the learnability check) for a fresh run."""
    parts, st, cursor = _start(ctx, state_dir, parts)
    if st.step == 0 and parts.inputs.val_ds is not None and ctx.job.rft.eval.baseline and st.baseline is None:
        _baseline(ctx, parts, st)
    if st.step == 0 and ctx.job.rft.warm_start.enabled is True:
        _warm_start(ctx, parts, st)
    _run_steps(ctx, parts, st, cursor)
    final, final_guard = _final_eval(ctx, parts, st)
    ckpt = None
    if ctx.job.rft.checkpoint.save_final:
        ckpt = _checkpoint(ctx, parts.model, parts.tokenizer, parts.values.total_steps, final, final_guard, st,
                           is_final=True)
    result = _report(ctx, st, final, final_guard, ckpt)
    ctx.trackers.log_final(result)
    return result


def _start(ctx: _Ctx, state_dir: Path | None, parts: TrainParts | None = None) -> tuple[TrainParts, LoopState, DataCursor]:
    """Build the training parts (unless given: a fresh run's, built for the learnability check); on a resume,
    restore the weights and optimizer (before the engine copies them), the data cursor, the monitor and the loop
    state. Then mark the job running."""
    job, run, reg = ctx.job, ctx.run, ctx.reg
    saved: dict = {}

    def restore(model, optimizer) -> None:
        saved.update(load_state(state_dir, model=model, opt=optimizer, verified=True))  # find_latest_state verified it

    if parts is None or state_dir is not None:
        parts = ctx.method.setup(job, ctx.inputs, restore=restore if state_dir is not None else None)
    parts = ctx.method.prepare(parts)  # DPO: its frozen reference, always the base model
    cursor = DataCursor(len(ctx.inputs.train_ds), job.seed)
    st = LoopState()
    if state_dir is not None:
        st = LoopState.from_dict(saved["loop"])
        same_data = saved["fingerprint"].get("training_file_sha256") == ctx.fingerprint["training_file_sha256"]
        if not (same_data and cursor.restore(saved["cursor"])):
            run.event("The training data changed: the data cursor restarts at the beginning (the old position "
                      "does not apply to new data)", level="warn")
        if ctx.monitor is not None and saved.get("monitor") is not None and hasattr(ctx.monitor, "load_state_dict"):
            ctx.monitor.load_state_dict(saved["monitor"])
        run.truncate_metrics(st.step)
        reg.truncate_metrics(run.job_id, st.step)
        run.event(f"Resumed from {state_dir.name} (step {st.step})", data={"state": str(state_dir), "step": st.step})
        ctx.log(f"resumed from step {st.step} ({state_dir})")
    ctx.job_obj["status"] = "running"
    reg.update_job(run.job_id, status="running", step=st.step)
    run.write_json("job.json", ctx.job_obj)
    run.event("Training started" if state_dir is None else "Training resumed",
              data={"total_steps": parts.values.total_steps, "compute_dtype": ctx.job_obj["compute_dtype"],
                    "backend": parts.engine.backend, "from_step": st.step})
    return parts, st, cursor


def _save_state(ctx: _Ctx, parts: TrainParts, st: LoopState, cursor: DataCursor, step: int) -> Path:
    m = ctx.monitor
    trainer = {"loop": st.as_dict(), "cursor": cursor.state(), "fingerprint": ctx.fingerprint,
               "resolved_config": ctx.resolved,
               "monitor": m.state_dict() if m is not None and hasattr(m, "state_dict") else None}
    d = save_state(ctx.run.dir / "checkpoints" / "state", step, model=parts.model, opt=parts.optimizer,
                   trainer=trainer, keep=ctx.job.rft.checkpoint.keep_states)
    ctx.run.event(f"Training state saved at step {step}", data={"path": str(d), "step": step})
    return d


def _baseline(ctx: _Ctx, parts: TrainParts, st: LoopState) -> None:
    """Step 0: the base model's greedy validation (and guard) accuracy, what every checkpoint is compared with."""
    job, run, reg, inp = ctx.job, ctx.run, ctx.reg, parts.inputs
    n_items = min(len(inp.val_ds), job.rft.eval.max_items or len(inp.val_ds))
    ctx.log(f"baseline evaluation on {n_items} validation items ...")
    st.baseline, summary = _evaluate(ctx, parts, step=0, model_name=job.model)
    run.write_json("eval_baseline.json", st.baseline)
    ctx.trackers.log_eval(0, "baseline", st.baseline)
    reg.add_eval_report("baseline", st.baseline, job_id=run.job_id, model_ref=job.model,
                        data_sha256=inp.val_ds.sha256, grader_sha256=_grader_sha(inp.grader),
                        path=run.dir / "eval_baseline.json")
    run.event(f"Baseline {_headline(summary)}", type="metrics", data={"step": 0, "baseline_eval": summary})
    ctx.log(f"baseline {_headline(summary, ci=True)} ({summary['seconds']:.1f}s)")
    if inp.guard_ds is not None:
        g = run_eval(parts.engine, inp.guard_ds, inp.guard_grader, job, inp.values, step=0, model_name=job.model)
        st.guard_baseline = _report_dict(g, inp.guard_grader)
        reg.add_eval_report("guard_baseline", st.guard_baseline, job_id=run.job_id, model_ref=job.model,
                            data_sha256=inp.guard_ds.sha256, grader_sha256=inp.guard_grader.sha256)
        run.event(f"Guard baseline accuracy {g.accuracy.mean:.3f}", type="metrics", data={"step": 0, "guard_eval": g.summary()})
    if ctx.monitor is not None:  # the step-0 point of "training reward up while validation down"
        _alarms(ctx, ctx.monitor.observe_eval(0, st.baseline["accuracy"],
                                              st.guard_baseline["accuracy"] if st.guard_baseline else None))


def _run_steps(ctx: _Ctx, parts: TrainParts, st: LoopState, cursor: DataCursor) -> None:
    """The steps, from a StepRunner (rft.train.step: one process or Ray, rollouts overlapped or not) that is
    closed however the loop ends (its rollout thread, Ray actors and any Ray instance it started stop)."""
    state_every = ctx.job.rft.checkpoint.state_interval or parts.values.eval_interval
    if ctx.method.step is not None:  # supervised, dpo: the method's own step on the cursor's rows
        _steps(ctx, parts, st, cursor, _MethodRunner(ctx.method, parts, cursor))
        return
    with StepRunner(parts, cursor, state_every=state_every, total=parts.values.total_steps,
                    cluster_factory=lambda p: start_cluster(p, log=ctx.log, event=ctx.run.event),
                    step_fn=lambda *a, **k: train_step(*a, **k)) as runner:  # looked up per call: tests wrap it
        _steps(ctx, parts, st, cursor, _RlRunner(runner, parts))


class _RlRunner:
    """A reinforcement StepRunner whose steps come out as StepOutcome (what `_log_step` logs)."""

    def __init__(self, runner: StepRunner, parts: TrainParts):
        self.runner, self.parts = runner, parts

    def next(self, step: int) -> StepOutcome:
        return rl_outcome(self.runner.next(step), self.parts)


class _MethodRunner:
    """Supervised and DPO steps: each takes the next batch_size rows from the data cursor."""

    def __init__(self, method: FineTuningMethod, parts: TrainParts, cursor: DataCursor):
        self.method, self.parts, self.cursor = method, parts, cursor

    def next(self, step: int) -> StepOutcome:
        rows = [self.parts.inputs.train_ds.rows[i] for i in self.cursor.take(self.parts.values.prompts_per_step)]
        return self.method.step(step, rows, self.parts, None)


def _steps(ctx: _Ctx, parts: TrainParts, st: LoopState, cursor: DataCursor, runner) -> None:
    """The loop: a step, its log line, the stop rules, evaluation and checkpoint at intervals, state saves,
    pause and cancel requests at each step boundary."""
    job, run, reg, values = ctx.job, ctx.run, ctx.reg, parts.values
    total = values.total_steps
    state_every = job.rft.checkpoint.state_interval or values.eval_interval
    for step in range(st.step + 1, total + 1):
        # the step's rows from the cursor (dynamic sampling draws its extra prompts from it too, so a resume
        # continues after them), its rollout (prefetched when overlapping), the update
        try:
            res = runner.next(step)
        except TrainerLost as e:  # part of the step's update is applied: pause without saving this step's state
            raise JobStopped("paused", f"{e.worker} was lost at step {step}, after {e.updates} optimizer step(s) of "
                                       f"its update; the last saved state is intact; continue with "
                                       f"`rft jobs resume {run.job_id}`") from e
        m = _log_step(ctx, parts, st, res, epoch=cursor.epoch)
        pause_reasons = _alarms(ctx, ctx.monitor.observe_step(step, m) if ctx.monitor is not None else [])
        is_last = step == total
        if parts.inputs.val_ds is not None and (step % values.eval_interval == 0) and not is_last:
            pause_reasons += _interval_eval(ctx, parts, st, step, m)
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
            _save_state(ctx, parts, st, cursor, step)
        if pause_reasons:
            raise JobStopped("paused", f"{'; '.join(pause_reasons)}: state saved at step {step}; "
                                       f"continue with `rft jobs resume {run.job_id}`")
        fault("after_step", step)


def _log_step(ctx: _Ctx, parts: TrainParts, st: LoopState, res: StepOutcome, *, epoch: int) -> dict:
    """Count the step into the loop state, write its metrics, samples and event; stop the run (RftError) after
    too many non-finite steps in a row or when the grader fails on too many samples. Returns the metrics row."""
    job, run, reg = ctx.job, ctx.run, ctx.reg
    step, total = res.metrics["step"], parts.values.total_steps
    m = res.metrics | {"epoch": epoch}
    if res.nonfinite is not None:
        st.skipped_steps += 1
        st.nonfinite_streak += 1
    else:
        st.nonfinite_streak = 0
    m["skipped_steps"] = st.skipped_steps
    st.t_train += m["time/step"]
    st.trained_tokens += res.tokens
    st.step = step
    run.metrics(m)
    reg.add_metrics(run.job_id, step, m)
    ctx.trackers.log_metrics(step, m)
    if job.rft.train.log_samples and res.samples is not None:
        run.samples(step, res.samples)
    run.event(f"Step {step}/{total}: {res.headline}", type="metrics",
              data={"step": step, "total_steps": total, "train_mean_reward": m.get("reward"),
                    "train_loss": m.get("train_loss"),
                    "timing": {"step": {"sampling": m.get("time/sampling", 0.0), "training": m["time/training"],
                                        "full_iteration": m["time/step"]}}})
    st.last = m
    if ctx.progress:  # the CLI's bar shows "reward": supervised and dpo steps have none (NaN)
        ctx.progress(step, total, m if "reward" in m else m | {"reward": float("nan")})
    if res.nonfinite is not None:
        run.event(f"Step {step}: {res.nonfinite}; the update was skipped (weights and optimizer unchanged; "
                  f"{st.nonfinite_streak} in a row, {st.skipped_steps} in all)", level="warn",
                  type="metrics", data={"step": step, "nonfinite": res.nonfinite, "skipped_steps": st.skipped_steps,
                                        "consecutive": st.nonfinite_streak})
        if st.nonfinite_streak >= job.rft.train.max_nonfinite_steps:
            raise RftError(
                f"step {step}: {st.nonfinite_streak} consecutive steps had a non-finite loss or gradient "
                f"({res.nonfinite}); stopping. No update was applied on those steps; the last saved checkpoint "
                "and training state are intact",
                hint="lower the learning rate, use rft.train.dtype=float32, or check the grader's rewards; "
                     f"continue with `rft jobs resume {run.job_id}`")
    if res.unscored_frac > job.rft.train.max_unscored_frac:
        raise RftError(
            f"step {step}: {m['unscored_frac']:.0%} of samples were unscored (limit "
            f"{job.rft.train.max_unscored_frac:.0%}); the grader is failing: "
            + ", ".join(k for k in ERROR_KINDS if m.get(f"errors/{k}")),
            hint=f"see {run.dir / 'samples' / f'step_{step:06d}.jsonl'} for the errors",
        )
    return m


def _interval_eval(ctx: _Ctx, parts: TrainParts, st: LoopState, step: int, m: dict) -> list[str]:
    """Validation (and guard) evaluation at an eval interval, the monitor's view of it, and a checkpoint if
    rft.checkpoint.at_eval. Returns the reasons to pause (monitor alarms)."""
    job, run, inp = ctx.job, ctx.run, parts.inputs
    name = f"{job.model}@step{step}"
    report, summary = _evaluate(ctx, parts, step=step, model_name=name)
    st.evals.append(summary)
    ctx.trackers.log_eval(step, "interval", summary)
    run.event(f"Step {step}: validation {_headline(summary)}", type="metrics",
              data={"step": step, "valid_eval": summary, "full_valid_mean_reward": summary["accuracy"]})
    if ctx.progress:
        shown = {"val_accuracy": summary["accuracy"]} if summary["accuracy"] is not None else {}
        if "valid_loss" in summary:
            shown["valid_loss"] = summary["valid_loss"]
        ctx.progress(step, parts.values.total_steps, (m if "reward" in m else m | {"reward": float("nan")}) | shown)
    guard = None
    if inp.guard_ds is not None:
        guard = _report_dict(run_eval(parts.engine, inp.guard_ds, inp.guard_grader, job, inp.values, step=step,
                                      model_name=name), inp.guard_grader)
    reasons = []
    if ctx.monitor is not None:
        reasons = _alarms(ctx, ctx.monitor.observe_eval(step, summary["accuracy"], guard["accuracy"] if guard else None))
    if job.rft.checkpoint.at_eval:
        _checkpoint(ctx, parts.model, parts.tokenizer, step, report, guard, st, is_final=False)
    return reasons


def _final_eval(ctx: _Ctx, parts: TrainParts, st: LoopState) -> tuple[dict | None, dict | None]:
    """The trained policy's validation and guard reports (None without a validation set or rft.eval.final)."""
    job, run, inp, total = ctx.job, ctx.run, parts.inputs, parts.values.total_steps
    name = f"{job.model}@step{total}"
    final = None
    if inp.val_ds is not None and job.rft.eval.final:
        ctx.log("final evaluation ...")
        final, summary = _evaluate(ctx, parts, step=total, model_name=name)
        st.evals.append(summary)
        run.write_json("eval_final.json", final)
        ctx.trackers.log_eval(total, "final", final)
        run.event(f"Final {_headline(summary)}", type="metrics", data={"step": total, "final_eval": summary})
    final_guard = None
    if inp.guard_ds is not None and job.rft.eval.final:
        final_guard = _report_dict(run_eval(parts.engine, inp.guard_ds, inp.guard_grader, job, inp.values, step=total,
                                            model_name=name), inp.guard_grader)
    if ctx.monitor is not None and final is not None:
        _alarms(ctx, ctx.monitor.observe_eval(total, final["accuracy"], final_guard["accuracy"] if final_guard else None))
    return final, final_guard


def _report(ctx: _Ctx, st: LoopState, final: dict | None, final_guard: dict | None, ckpt: dict | None) -> dict:
    """The finished job object: report.json, report.md, curves.png and job.json (each a warning if it fails)."""
    job, run = ctx.job, ctx.run
    baseline = st.baseline
    comparison = _compare(baseline, final) if baseline and final and _has_accuracy(baseline) and \
        _has_accuracy(final) and baseline.get("dataset_sha256") == final.get("dataset_sha256") else None
    improved = comparison.get("improved", []) if comparison else []
    regressed = comparison.get("regressed", []) if comparison else []
    summ = lambda r: {k: v for k, v in r.items() if k != "items"} if r else None  # noqa: E731
    plot = _report_step(ctx, "the plot curves.png", lambda: plot_curves(run.dir / "metrics.jsonl", st.evals,
                                                                         summ(baseline), run.dir / "curves.png"))
    ckpt_dir = ckpt["path"] if ckpt else None
    job_obj = ctx.job_obj
    job_obj |= {
        "status": "succeeded", "finished_at": int(time.time()), "trained_tokens": st.trained_tokens,
        # OpenAI's name (chat completions, batches and `rft serve` accept it), and the checkpoint behind it
        "fine_tuned_model": models.fine_tuned_name(job.model, job.suffix, run.job_id) if ckpt else None,
        "fine_tuned_model_checkpoint": f"ckpt:{ckpt['id']}" if ckpt else None,
        "baseline_eval": summ(baseline), "final_eval": summ(final), "guard_baseline_eval": summ(st.guard_baseline),
        "guard_final_eval": summ(final_guard),
        "evals": st.evals, "train_seconds": st.t_train, "trained_steps": ctx.inputs.values.total_steps,
        "last_step_metrics": st.last, "skipped_steps": st.skipped_steps, "warm_start": st.warm_start,
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
    _report_step(ctx, "report.md", lambda: _write_markdown(job_obj, run.dir / "report.md"))
    _report_step(ctx, "job.json", lambda: run.write_json("job.json", job_obj))
    run.event("The job has successfully completed", data={"final_eval": job_obj["final_eval"]})
    return job_obj


def _write_markdown(job_obj: dict, path: Path) -> None:
    """report.md; a loss-only job (no grader) gets its validation losses and the gates' "not applicable" note
    in place of the accuracy table's empty cells and a verdict."""
    b, f = job_obj.get("baseline_eval"), job_obj.get("final_eval")
    if _has_accuracy(b) or _has_accuracy(f) or not (b or f):
        write_markdown(job_obj, path)
        return
    write_markdown(job_obj | {"final_verdict": None}, path)
    loss = lambda r: f"{r['valid_loss']:.4f}" if r and r.get("valid_loss") is not None else "-"  # noqa: E731
    lines = ["", "## Validation loss (no grader: it stands in for accuracy)", "", "| | validation loss |", "|---|---|",
             f"| baseline | {loss(b)} |", f"| final | {loss(f)} |", ""]
    lines += [f"| step {e.get('step')} | {loss(e)} |" for e in job_obj.get("evals") or []]
    v = job_obj.get("final_verdict") or {}
    if v.get("reason"):
        lines += ["", f"Quality gates: not applicable. {v['reason']}.", ""]
    with open(path, "a") as fh:
        fh.write("\n".join(lines) + "\n")


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
    """The job's reward-integrity monitor; without `rft.monitor`, one that only watches for a vanished learning
    signal (every run says so early rather than training blind)."""
    from rft.train.monitor import RewardMonitor

    if job.rft.monitor is None:
        return RewardMonitor(MonitorConfig(), kinds=("reward_variance_vanished",))
    return RewardMonitor(job.rft.monitor)


# ------------------------------------------------------------------------- learnability, warm start
def _saved_learnability(run: RunLog) -> dict | None:
    import json as _json

    p = run.dir / "learnability.json"
    return _json.loads(p.read_text()) if p.exists() else None


def _learnability(job: JobSpec, run: RunLog, inputs: TrainInputs, parts: TrainParts, log):
    """The learnability check on the base model: an event and a log line with the numbers; the remedies applied
    to the job (and to the inputs and parts built for it); RftError when no remedy can give a signal."""
    import dataclasses

    from rft.config import resolve
    from rft.train.learnability import check, stop_error

    run.event("Checking learnability", data={"prompts": job.rft.learnability.prompts})
    v, m = check(parts, job)
    rec = v.as_dict() | {"measured": {"pass_rates": m.pass_rates, "group": m.group,
                                      "sampling_seconds": m.sampling_seconds, "grading_seconds": m.grading_seconds}}
    run.write_json("learnability.json", rec)
    level = "info" if v.kind == "learnable" else ("error" if v.stop else "warn")
    run.event(f"Learnability check: {v.message}", level=level, data=rec)
    log(f"learnability: {v.message}")
    if v.stop:
        raise stop_error(v)
    if v.overrides:
        job = apply_remedies(job, v.overrides)
        inputs = dataclasses.replace(inputs, values=resolve(job, len(inputs.train_ds)))
        parts = dataclasses.replace(parts, job=job, inputs=inputs)
    return job, inputs, parts, rec


def _check_warm_start(job: JobSpec) -> None:
    from rft.train.learnability import reference_template

    if job.rft.warm_start.enabled is True and reference_template(job) is None:
        raise RftError("rft.warm_start.enabled is true but no reference output is known",
                       hint='set rft.warm_start.reference_output to a template over the row, e.g. "{{item.answer}}"')


def _warm_start(ctx: _Ctx, parts: TrainParts, st: LoopState) -> None:
    """Supervised steps on the reference outputs before RL, each loss an event; recorded in the loop state (so a
    resumed job still reports it), the report and the checkpoints' metadata."""
    from rft.train.learnability import reference_template
    from rft.train.warm_start import warm_start

    job, run = ctx.job, ctx.run
    tmpl = reference_template(job)
    run.event(f"Warm start: {job.rft.warm_start.steps} supervised steps on {tmpl!r}",
              data={"steps": job.rft.warm_start.steps, "lr": job.rft.warm_start.lr, "reference_output": tmpl})

    def on_step(k: int, loss: float) -> None:
        run.event(f"Warm start step {k}/{job.rft.warm_start.steps}: loss {loss:.4f}", type="metrics",
                  data={"warm_start_step": k, "warm_start_loss": loss})

    st.warm_start = warm_start(parts, list(parts.inputs.train_ds.rows), tmpl, seed=job.seed, log=ctx.log,
                               on_step=on_step)
    run.event(f"Warm start done: loss {st.warm_start['loss_first']:.3f} -> {st.warm_start['loss_last_mean']:.3f}",
              data={k: v for k, v in st.warm_start.items() if k != "losses"})


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


def _checkpoint(ctx: _Ctx, model, tok, step: int, report: dict | None, guard: dict | None, st: LoopState, *,
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
            "code_version": ctx.job_obj.get("code_version"),
            "warm_start": {k: v for k, v in st.warm_start.items() if k != "losses"} if st.warm_start else None,
            "learnability": (ctx.resolved.get("learnability") or None)}
    save_model_checkpoint(model, tok, path, meta, dtype=job.rft.checkpoint.dtype)
    val = None
    if report is not None:
        lo, hi = report.get("accuracy_ci95", [None, None])
        val = {"mean": report["accuracy"], "low": lo, "high": hi}
    cid = reg.add_checkpoint(run.job_id, step, str(path), sha256_file(path / "manifest.json"), is_final=is_final, val=val)
    out = {"id": cid, "path": str(path), "step": step}
    if report is not None:
        rid = reg.add_eval_report("final" if is_final else "checkpoint", report, job_id=run.job_id, checkpoint_id=cid,
                                  model_ref=f"ckpt:{cid}", data_sha256=ctx.inputs.val_ds.sha256,
                                  grader_sha256=_grader_sha(ctx.inputs.grader))
        reg.update_checkpoint(cid, eval_report_id=rid)
        if guard is not None:
            reg.add_eval_report("guard", guard, job_id=run.job_id, checkpoint_id=cid, model_ref=f"ckpt:{cid}",
                                data_sha256=ctx.inputs.guard_ds.sha256, grader_sha256=ctx.inputs.guard_grader.sha256)
        if st.baseline and not (_has_accuracy(st.baseline) and _has_accuracy(report)):
            out["verdict"] = {"passed": None, "applicable": False, "step": step, "checkpoint_id": cid,
                              "reason": "no grader: evaluations report the validation loss, and the gates compare "
                                        "graded accuracy, so they do not apply (give method."
                                        f"{job.method.type}.grader to gate this job)"}
            run.event(f"Checkpoint {cid} (step {step}): gates not applicable (no grader; validation loss "
                      f"{report.get('valid_loss', float('nan')):.4f})", type="gates", data=out["verdict"])
        elif st.baseline and st.baseline.get("dataset_sha256") != report.get("dataset_sha256"):
            run.event(f"Checkpoint {cid}: the validation data changed since the baseline was measured (resumed with "
                      "--allow-config-change); no comparison or gate verdict", level="warn")
        elif st.baseline:
            from rft.eval.gates import evaluate_gates

            comp = _compare(st.baseline, report)
            gcomp = _compare(st.guard_baseline, guard) if guard is not None and st.guard_baseline else None
            from rft.registry.reviews import measured_disagreement

            review = (measured_disagreement(reg, run.job_id) if job.rft.gates.max_grader_disagreement is not None
                      else None)  # people's verdicts so far (rft review); the gate holds without enough of them
            verdict = evaluate_gates(job.rft.gates, comp, guard_comparison=gcomp, candidate_report=report,
                                     baseline_report=st.baseline, guard_required=ctx.inputs.guard_ds is not None,
                                     grader_review=review)
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
