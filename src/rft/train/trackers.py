"""Experiment trackers: the job's metrics, resolved config, evaluations and lineage in TensorBoard, MLflow, W&B or
trackio, next to rft's own metrics.jsonl.

What: `rft.report_to: [tensorboard, mlflow, wandb, trackio]` (OpenAI's `integrations: [{type: wandb, ...}]` maps
onto it in `rft.jobcheck`) names the trackers; `rft.trackers.<name>` holds their settings. The loop opens them
with `tracking(job, run, resolved, log=...)` around the training and calls `Trackers`:

    start(config)               every tracker opens a run named after the job and records the resolved config
    log_metrics(step, metrics)  the metrics.jsonl row, same names (numbers only: None, NaN and inf are left out)
    log_eval(step, kind, rep)   an evaluation (kind: baseline, interval, final) as `eval/accuracy`,
                                `eval/accuracy_ci95_low|high`, `eval/n`, ... at its step (baseline: 0, final: the
                                last step), baseline and final also as `baseline_eval/*`, `final_eval/*`; the
                                report itself (without per-item records) as a JSON artifact
    log_final(result)           the final checkpoint's lineage (`rft lineage ckpt:ID`) and the job's summary
    finish(status)              succeeded, failed, cancelled or paused; prints where each tracker wrote

Each backend is one class registered by name (`@register_tracker`) with the same interface (`Tracker`). Where
they write, with no network at all:
    tensorboard  event files in <run dir>/tensorboard (torch's SummaryWriter; read with tensorboard's
                 EventAccumulator or `tensorboard --logdir`)
    mlflow       a SQLite store <run dir>/mlflow/mlflow.db with artifacts in <run dir>/mlflow/artifacts
                 (`mlflow ui --backend-store-uri sqlite:///...`), or rft.trackers.mlflow.tracking_uri; a plain
                 folder or file: URI is MLflow's file store, which MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE
                 is true: rft sets it for that case (the user asked for a file store)
    wandb        always offline: <run dir>/wandb/offline-run-*/ (`wandb sync DIR` uploads it later;
                 `wandb leet inspect --json DIR` reads it)
    trackio      trackio's local SQLite database in <run dir>/trackio (`TRACKIO_DIR=... trackio show`)

A tracker never fails the job: any exception it raises (library missing or broken, a full disk, a rejected
value) becomes one warning event (type "tracker") and that tracker is switched off; training and the other
trackers go on. A tracker named in report_to whose library is not installed is refused earlier, at job
validation (`rft.jobcheck.tracker_problems`, exit 2, naming the pip package).

Simplified: a resumed job opens a new tracker run (same name; its steps continue from the resumed step) rather
than reopening the old one; metric names that MLflow refuses (characters outside letters, digits, `_ - . / :`
and space) have those characters replaced by `_`; trackio reads its folder from a module-level constant, so
switching folders between jobs in one process re-points that constant (`_point_trackio_at`), and its user-name
lookup on the Hugging Face hub is switched off; the lineage is recorded without re-hashing the checkpoint's files.

How to run: `rft train examples/quickstart.yaml 'rft.report_to=[tensorboard]'`, then
`tensorboard --logdir ~/.rft/runs/<job id>/tensorboard`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from rft.config import TRACKER_PACKAGES, JobSpec, dump_yaml

TRACKERS: dict[str, type["Tracker"]] = {}
EVAL_KINDS = ("baseline", "interval", "final")


def register_tracker(name: str):
    """Register a `Tracker` class under `name` (one of rft.config.TRACKER_PACKAGES)."""

    def deco(cls):
        if name not in TRACKER_PACKAGES:
            raise ValueError(f"unknown tracker '{name}'; rft.config.TRACKER_PACKAGES lists {', '.join(TRACKER_PACKAGES)}")
        cls.name = name
        TRACKERS[name] = cls
        return cls

    return deco


def scalars(metrics: dict) -> dict[str, float]:
    """The numbers of a metrics row as floats (booleans as 0/1); `step`, None, NaN, inf and non-numbers dropped."""
    out = {}
    for k, v in metrics.items():
        if k == "step" or v is None or isinstance(v, str):
            continue
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


def eval_scalars(report: dict, prefix: str = "eval") -> dict[str, float]:
    """An evaluation summary (`EvalReport.summary()` or `report_dict`) as `<prefix>/accuracy`,
    `<prefix>/accuracy_ci95_low|high`, `<prefix>/n`, `<prefix>/unscored_frac`, `<prefix>/mean_completion_tokens`,
    `<prefix>/pass_rate` and `<prefix>/pass@k`."""
    lo, hi = (list(report.get("accuracy_ci95") or []) + [None, None])[:2]
    row = {"accuracy": report.get("accuracy"), "accuracy_ci95_low": lo, "accuracy_ci95_high": hi,
           "n": report.get("n"), "unscored_frac": report.get("unscored_frac"),
           "mean_completion_tokens": report.get("mean_completion_tokens"), "pass_rate": report.get("pass_rate")}
    row |= {f"pass@{k}": v for k, v in (report.get("pass_at_k") or {}).items()}
    return {f"{prefix}/{k}": v for k, v in scalars(row).items()}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: d}


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=True)


# ============================================================================================ the interface
class Tracker:
    """One backend. `start` returns where it writes (a folder or URI, for the report and the last log lines)."""

    name = ""

    def __init__(self, settings, *, job_id: str, run_dir: Path):
        self.settings = settings
        self.job_id = job_id
        self.run_dir = Path(run_dir)

    def start(self, config: dict) -> str:
        raise NotImplementedError

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def log_artifact(self, name: str, obj: dict) -> None:
        """A JSON document (an evaluation report, the lineage, the summary) stored with the run as `<name>.json`."""
        raise NotImplementedError

    def summary(self, values: dict[str, float]) -> None:
        """Final numbers of the run (default: nothing more, they were logged as metrics)."""

    def finish(self, status: str) -> None:
        raise NotImplementedError


# ============================================================================================ the backends
@register_tracker("tensorboard")
class TensorBoardTracker(Tracker):
    """Event files written by torch's SummaryWriter: scalars, and JSON/YAML documents as text summaries."""

    def start(self, config: dict) -> str:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(self.settings.dir).expanduser() if self.settings.dir else self.run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir), flush_secs=10)
        self.writer.add_text("config", "```yaml\n" + dump_yaml(config) + "```", 0)
        return str(self.dir)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def log_artifact(self, name: str, obj: dict) -> None:
        self.writer.add_text(name, "```json\n" + _json(obj) + "\n```", 0)

    def finish(self, status: str) -> None:
        self.writer.add_text("status", status, 0)
        self.writer.close()


_MLFLOW_BAD = re.compile(r"[^\w\-./: ]")
_MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "paused": "KILLED"}


@register_tracker("mlflow")
class MlflowTracker(Tracker):
    """An MLflow run through `MlflowClient` (no global active run): params = the flattened resolved config,
    metrics, JSON artifacts, a terminal status and an `rft.status` tag."""

    def start(self, config: dict) -> str:
        uri, artifacts = self.settings.tracking_uri, None
        if uri is None:
            folder = self.run_dir / "mlflow"
            folder.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()
        elif "://" not in uri or uri.startswith("file:"):
            # a folder: MLflow's file store, which MLflow 3 refuses without this opt-in
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
            if "://" not in uri:
                uri = Path(uri).expanduser().resolve().as_uri()
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(self.settings.experiment)
        eid = exp.experiment_id if exp else self.client.create_experiment(self.settings.experiment,
                                                                          artifact_location=artifacts)
        run = self.client.create_run(eid, run_name=self.settings.run_name or self.job_id,
                                     tags={"rft.job_id": self.job_id, "mlflow.source.name": "rft"})
        self.run_id = run.info.run_id
        params = [Param(_MLFLOW_BAD.sub("_", k)[:250], str(v)[:6000]) for k, v in _flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_dict(self.run_id, config, "resolved_config.json")
        return uri

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(_MLFLOW_BAD.sub("_", k), v, now, step)
                                                    for k, v in values.items()])

    def log_artifact(self, name: str, obj: dict) -> None:
        self.client.log_text(self.run_id, _json(obj), f"{name}.json")

    def finish(self, status: str) -> None:
        self.client.set_tag(self.run_id, "rft.status", status)
        self.client.set_terminated(self.run_id, _MLFLOW_STATUS.get(status, "FAILED"))


@register_tracker("wandb")
class WandbTracker(Tracker):
    """A W&B run in offline mode, whatever WANDB_MODE says: nothing is sent; `wandb sync` uploads it later.
    Documents are written into the run's files folder (synced with it) and put in its summary."""

    def start(self, config: dict) -> str:
        import wandb

        s = self.settings
        root = Path(s.dir).expanduser() if s.dir else self.run_dir
        root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=s.project, name=s.name or self.job_id, entity=s.entity, tags=list(s.tags) or None,
            config=config, dir=str(root), mode="offline", job_type="rft-train",
            settings=wandb.Settings(mode="offline", console="off", silent=True, save_code=False,
                                    x_disable_stats=True))
        self.files = Path(self.run.dir)
        return str(self.files.parent)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_artifact(self, name: str, obj: dict) -> None:
        (self.files / f"{name}.json").write_text(_json(obj))
        self.run.summary[name] = json.loads(json.dumps(obj, default=str))

    def summary(self, values: dict[str, float]) -> None:
        self.run.summary.update(values)

    def finish(self, status: str) -> None:
        self.run.summary["rft/status"] = status
        self.run.finish(exit_code=0 if status in ("succeeded", "paused") else 1)


def _point_trackio_at(folder: Path) -> None:
    """trackio reads TRACKIO_DIR once, at import, into module constants: set the variable before the first
    import, and re-point the constants of its loaded modules when a later job in this process uses another
    folder."""
    import sys

    os.environ["TRACKIO_DIR"] = str(folder)
    for name, mod in list(sys.modules.items()):
        if name == "trackio" or name.startswith("trackio."):
            for const, sub in (("TRACKIO_DIR", None), ("MEDIA_DIR", "media"), ("ARTIFACTS_DIR", "artifacts")):
                if isinstance(getattr(mod, const, None), Path):
                    setattr(mod, const, folder / sub if sub else folder)


@register_tracker("trackio")
class TrackioTracker(Tracker):
    """A local trackio run (its SQLite database in the folder); trackio's console lines are swallowed."""

    def start(self, config: dict) -> str:
        self.dir = Path(self.settings.dir).expanduser().resolve() if self.settings.dir else self.run_dir / "trackio"
        self.dir.mkdir(parents=True, exist_ok=True)
        _point_trackio_at(self.dir)
        import trackio
        import trackio.run as trun

        saved = getattr(trun, "_get_default_namespace", None)
        if saved is not None:  # the user name comes from the Hugging Face hub: no network for a local run
            trun._get_default_namespace = lambda: None
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.run = trackio.init(project=self.settings.project, name=self.settings.name or self.job_id,
                                        config=config, embed=False, auto_log_gpu=False, auto_log_cpu=False)
        finally:
            if saved is not None:
                trun._get_default_namespace = saved
        return str(self.dir)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_artifact(self, name: str, obj: dict) -> None:
        path = self.dir / "rft" / self.job_id / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_json(obj))
        self.run.log_artifact(path, name=f"{self.job_id}-{name}".replace("_", "-"), type="rft")

    def finish(self, status: str) -> None:
        import trackio.context_vars as cv

        with contextlib.redirect_stdout(io.StringIO()):
            self.run.finish()
        if cv.current_run.get() is self.run:  # else trackio's exit hook finishes (and prints) it again
            cv.current_run.set(None)


# ============================================================================================ the set
class Trackers:
    """The job's active trackers. Every call goes to each tracker in turn; one that raises is reported once
    (`warn(message, data)`) and switched off. An empty set does nothing."""

    def __init__(self, trackers: list[Tracker] | None = None, *, warn: Callable[[str, dict], None] | None = None,
                 log: Callable[[str], None] | None = None):
        self.active = list(trackers or [])
        self.where: dict[str, str] = {}
        self._warn = warn or (lambda msg, data: None)
        self._log = log or (lambda s: None)
        self._last_step = 0

    @classmethod
    def for_job(cls, job: JobSpec, run, *, log: Callable[[str], None] | None = None) -> "Trackers":
        """The trackers in job.rft.report_to, writing under the run folder, warning through the job's events."""

        def warn(msg: str, data: dict) -> None:
            (log or print)(f"warning: {msg}")
            try:
                run.event(msg, level="warn", type="tracker", data=data)
            except Exception:  # noqa: BLE001 - the event log may be on the same full disk
                pass

        built = [TRACKERS[n](getattr(job.rft.trackers, n), job_id=run.job_id, run_dir=Path(run.dir))
                 for n in job.rft.report_to]
        return cls(built, warn=warn, log=log)

    def _each(self, what: str, fn: Callable[[Tracker], Any]) -> None:
        for t in list(self.active):
            try:
                fn(t)
            except Exception as e:  # noqa: BLE001 - a tracker never fails the job, by design
                self.active.remove(t)
                detail = " ".join(str(e).split())[:300]
                self._warn(f"the {t.name} tracker failed ({what}: {type(e).__name__}: {detail}); it is switched "
                           "off for the rest of this job, training goes on",
                           {"tracker": t.name, "during": what, "error": type(e).__name__})

    def start(self, config: dict) -> dict[str, str]:
        def one(t: Tracker) -> None:
            self.where[t.name] = t.start(config)

        self._each("start", one)
        return dict(self.where)

    def paths(self) -> dict[str, str]:
        """Where each tracker that started writes (folder or URI)."""
        return dict(self.where)

    def log_metrics(self, step: int, metrics: dict) -> None:
        self._last_step = max(self._last_step, step)
        values = scalars(metrics)
        self._each(f"metrics of step {step}", lambda t: t.log_metrics(step, values))

    def log_eval(self, step: int, kind: str, report: dict) -> None:
        """An evaluation: baseline (step 0), interval, final (the last step)."""
        summary = {k: v for k, v in report.items() if k != "items"}
        values = eval_scalars(summary)
        if kind in ("baseline", "final"):
            values |= eval_scalars(summary, f"{kind}_eval")
        name = f"eval_{kind}" if kind != "interval" else f"eval_step_{step}"

        def one(t: Tracker) -> None:
            t.log_metrics(step, values)
            t.log_artifact(name, summary | {"kind": kind, "step": step})

        self._each(f"{kind} evaluation", one)

    def log_final(self, result: dict) -> None:
        """The finished job: its summary numbers and, when it saved a final checkpoint, that checkpoint's lineage."""
        if not self.active:
            return
        keys = ("train_seconds", "trained_steps", "trained_tokens", "skipped_steps", "wall_seconds")
        values = scalars({k: result.get(k) for k in keys})
        for kind in ("baseline", "final"):
            if result.get(f"{kind}_eval"):
                values |= eval_scalars(result[f"{kind}_eval"], f"{kind}_eval")
        verdict = result.get("final_verdict")
        if verdict:
            values["final_verdict/passed"] = float(bool(verdict.get("passed")))
        summary_doc = {k: result.get(k) for k in ("id", "status", "fine_tuned_model", "fine_tuned_model_checkpoint",
                                                   "final_checkpoint_id", "config_sha256", "code_version",
                                                   "baseline_eval", "final_eval", "final_comparison", "paths")}
        lin = None
        if result.get("final_checkpoint_id"):
            try:
                from rft.registry.lineage import lineage

                lin = lineage(f"ckpt:{result['final_checkpoint_id']}", verify=False)
            except Exception as e:  # noqa: BLE001 - the lineage is a record for trackers; the job's result stands
                self._warn(f"could not read the final checkpoint's lineage for the trackers ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]})", {"during": "lineage", "error": type(e).__name__})

        def one(t: Tracker) -> None:
            t.summary(values)
            t.log_artifact("summary", summary_doc)
            if lin is not None:
                t.log_artifact("lineage", lin)

        self._each("summary and lineage", one)

    def finish(self, status: str) -> None:
        self._each(f"finish ({status})", lambda t: t.finish(status))
        for name, where in self.where.items():
            self._log(f"{name}: {where}")


@contextmanager
def tracking(job: JobSpec, run, config: dict, *, log: Callable[[str], None] | None = None) -> Iterator[Trackers]:
    """The job's trackers, started with the resolved `config` and finished with the job's outcome: succeeded,
    paused or cancelled (an exception with a `status`, the loop's JobStopped), cancelled (Ctrl-C), failed."""
    trackers = Trackers.for_job(job, run, log=log)
    trackers.start(config)
    status = "failed"
    try:
        yield trackers
        status = "succeeded"
    except BaseException as e:
        st = getattr(e, "status", None)
        status = st if isinstance(st, str) else "cancelled" if isinstance(e, KeyboardInterrupt) else "failed"
        raise
    finally:
        trackers.finish(status)
