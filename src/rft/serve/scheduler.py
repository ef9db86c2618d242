"""The job scheduler of `rft serve`: queued fine-tuning jobs run in child processes, never in the server.

What: `JobScheduler` is a thread in the server. Jobs created through `POST /v1/fine_tuning/jobs` are recorded in
the registry as `queued` (`record_queued_job`) with a marker file `scheduler.json` in their run folder (which
says the server owns them and what is pending: "train" a queued job, "resume" a paused or interrupted one). The
thread starts pending jobs one at a time by default (`max_running`), each in a child process:

    python -m rft.serve.scheduler train|resume JOB_ID

The child trains the registry row the API created (`train_recorded_job`: the stored spec through
`rft.jobcheck.parse_job`, then the training loop's own `_execute` on that row; a resume is
`rft.train.loop.resume_job`), so the CLI and the API see one row. A child that dies without recording an
outcome (a crash, SIGKILL, out of memory) leaves its job `failed` with code `process_exited`; the server lives on.
Cancel and pause reach a running child through the registry's request flag (`Registry.request`, exactly as
`rft jobs cancel|pause`), honoured at the next step boundary; a job not started yet is cancelled or paused at once.

On start (`recover`): API jobs left `running`/`validating_files` by a dead server (their process is gone) are
resumed from their last training state (`resume_job`); queued ones stay queued (this server takes them over).
Simplified: a server that stops leaves its children running (they finish and record their outcome); the
number of children is counted per server, not across servers sharing a registry.
How to run: `python -m rft.serve.scheduler train ftjob-...` trains one recorded queued job in the foreground.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

MARKER = "scheduler.json"
ACTIVE = ("validating_files", "queued", "running")
RESUMABLE = ("paused", "interrupted", "failed")


# --------------------------------------------------------------------------------------- the marker
def read_marker(run_dir: str | Path) -> dict | None:
    """The scheduler's marker of an API job (None for a job the CLI started)."""
    try:
        return json.loads((Path(run_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_marker(run_dir: str | Path, pending: str | None) -> None:
    from rft.fsutil import write_atomic

    write_atomic(Path(run_dir) / MARKER, json.dumps({"source": "api", "pending": pending}).encode())


# ------------------------------------------------------------------------------------ recording
def record_queued_job(job, raw: dict | None = None) -> dict:
    """Record a checked JobSpec as a `queued` job owned by the server; returns the registry row."""
    from rft.home import runs_dir
    from rft.registry import Registry
    from rft.train.loop import _absolute_paths
    from rft.train.runlog import RunLog, new_job_id

    reg = Registry()
    job_id = new_job_id()
    run = RunLog(runs_dir() / job_id, job_id)
    write_marker(run.dir, "train")
    reg.create_job(job_id, spec=_absolute_paths(job.model_dump(mode="json")), model=job.model, run_dir=str(run.dir),
                   status="queued", training_file=job.training_file, validation_file=job.validation_file)
    run.attach(reg)
    run.event("Job created", data={"model": job.model, "training_file": job.training_file})
    run.event("Job queued: it starts when the server's scheduler has a free slot", type="status")
    return reg.get_job(job_id)


# ------------------------------------------------------------------------------------ the child
def train_recorded_job(job_id: str, *, log: Callable[[str], None] = print) -> dict:
    """Train the job the API recorded as `queued` (its row, run folder and events are the ones the child updates).
    The smallest composition of the training loop's parts: the stored spec, checked again, then `_execute`."""
    from rft.errors import RftError
    from rft.jobcheck import parse_job
    from rft.registry import Registry
    from rft.train.loop import _execute
    from rft.train.runlog import RunLog

    reg = Registry()
    row = reg.get_job(job_id)
    if row["status"] != "queued":
        raise RftError(f"job {row['id']} is {row['status']}; only a queued job can be started")
    job = parse_job(dict(row["spec"]), f"job {row['id']} (stored spec)")
    run = RunLog(Path(row["run_dir"]), row["id"])
    run.attach(reg)
    reg.claim_job(row["id"], status="validating_files")  # this process runs it; a pending request stays
    return _execute(job, run, reg, progress=None, log=log, resume=None)


def child_main(argv: list[str]) -> int:
    """`python -m rft.serve.scheduler train|resume JOB_ID`: the exit code says how it ended (0 succeeded, 75
    paused, 3 cancelled, 1 failed; the registry row says it too)."""
    from rft.train.loop import JobStopped, resume_job

    if len(argv) != 2 or argv[0] not in ("train", "resume"):
        print("usage: python -m rft.serve.scheduler train|resume JOB_ID", file=sys.stderr)
        return 2
    action, job_id = argv
    log = lambda s: print(s, flush=True)  # noqa: E731
    try:
        if action == "train":
            train_recorded_job(job_id, log=log)
        else:
            resume_job(job_id, log=log, actor="rft-serve")
    except JobStopped as e:
        log(f"job {job_id}: {e.status}: {e.message}")
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the registry already says failed; the log says why
        log(f"job {job_id} failed: {type(e).__name__}: {e}")
        return 1
    return 0


# -------------------------------------------------------------------------------- the scheduler
class JobScheduler:
    """Starts pending API jobs in child processes, `max_running` at a time; `poll_s` is how often it looks
    (a new job or a request wakes it at once). `held = True` keeps it from starting anything (tests, drains)."""

    def __init__(self, *, max_running: int = 1, poll_s: float = 0.5, log: Callable[[str], None] = lambda s: None,
                 python: str = sys.executable):
        self.max_running = max(1, int(max_running))
        self.poll_s = poll_s
        self.log = log
        self.python = python
        self.held = False
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The registry and environment of the server that made this scheduler, captured once: the polling thread
        # must not follow a later change of RFT_HOME / RFT_DATABASE_URL in this process (tests change them per
        # test while a server lives on), and children train where the server's registry is.
        from rft.registry import Registry

        self.registry = Registry()
        self._env = dict(os.environ)

    # ------------------------------------------------------------------------------ lifecycle
    def start(self, recover: bool = True) -> None:
        if recover:
            try:
                self.recover()
            except Exception as e:  # noqa: BLE001 - a broken registry must not keep the server from starting
                self.log(f"scheduler: recovery failed: {type(e).__name__}: {e}")
        self._thread = threading.Thread(target=self._loop, name="rft-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop starting jobs; running children go on and record their own outcome."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def wake(self) -> None:
        self._wake.set()

    def running_ids(self) -> list[str]:
        with self._lock:
            return list(self._procs)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - the scheduler thread must survive anything one job does
                self.log(f"scheduler: {type(e).__name__}: {e}")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    # ---------------------------------------------------------------------------------- a tick
    def tick(self) -> None:
        """Reap finished children, then start pending jobs while there is a free slot."""
        self._reap()
        with self._lock:
            if self.held:
                return
            while len(self._procs) < self.max_running:
                nxt = self._next_pending()
                if nxt is None:
                    return
                self._spawn(*nxt)

    def _pending(self) -> list[tuple[dict, str]]:
        """(row, "train"|"resume") of API jobs waiting to start, oldest first."""
        import sqlalchemy as sa

        from rft.registry.db import jobs

        reg = self.registry
        # read the rows without reconciling: a queued job owned by a dead server must stay queued
        with reg.engine.connect() as c:
            rows = [dict(r._mapping) for r in c.execute(
                sa.select(jobs).where(jobs.c.status.in_(("queued",) + RESUMABLE)).order_by(jobs.c.created_at))]
        out = []
        for r in rows:
            if r["id"] in self._procs:
                continue
            m = read_marker(r["run_dir"])
            if not m or not m.get("pending"):
                continue
            if m["pending"] == "train" and r["status"] == "queued":
                out.append((r, "train"))
            elif m["pending"] == "resume" and r["status"] in RESUMABLE:
                out.append((r, "resume"))
        return out

    def _next_pending(self) -> tuple[dict, str] | None:
        p = self._pending()
        return p[0] if p else None

    def _spawn(self, row: dict, action: str) -> None:

        job_id, run_dir = row["id"], Path(row["run_dir"])
        write_marker(run_dir, None)
        if action == "train":
            self.registry.claim_job(job_id, status="queued")  # owned by this server until the child claims it
        logf = open(run_dir / "scheduler.log", "ab")
        try:
            proc = subprocess.Popen([self.python, "-m", "rft.serve.scheduler", action, job_id], stdout=logf,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env,
                                    start_new_session=True)
        except OSError as e:
            self._crashed(job_id, f"the job's process could not start: {e}")
            return
        finally:
            logf.close()
        self._procs[job_id] = proc
        self.log(f"scheduler: {action} {job_id} (pid {proc.pid})")

    def _reap(self) -> None:
        with self._lock:
            done = [(j, p) for j, p in self._procs.items() if p.poll() is not None]
            for job_id, proc in done:
                del self._procs[job_id]
        for job_id, proc in done:
            self._after_exit(job_id, proc.returncode)

    def _after_exit(self, job_id: str, rc: int) -> None:
        """A child ended: if it left its job active (it crashed before recording an outcome), the job failed."""
        import sqlalchemy as sa

        from rft.registry.db import jobs

        reg = self.registry
        with reg.engine.connect() as c:
            st = c.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
        if st in ACTIVE or st == "interrupted":
            self._crashed(job_id, f"the job's process exited with code {rc} without recording an outcome")

    def _crashed(self, job_id: str, message: str) -> None:

        reg = self.registry
        err = {"code": "process_exited", "message": message, "param": None}
        reg.update_job(job_id, status="failed", error=err, finished_at=time.time(), requested=None)
        reg.add_event(job_id, "error", "status", f"Job failed: {message}")
        self.log(f"scheduler: job {job_id}: {message}")

    # -------------------------------------------------------------------------------- recovery
    def recover(self) -> None:
        """Take over queued API jobs; resume API jobs whose process died with the last server."""
        import sqlalchemy as sa

        from rft.registry.db import jobs

        reg = self.registry
        with reg.engine.connect() as c:
            rows = [dict(r._mapping) for r in c.execute(
                sa.select(jobs).where(jobs.c.status.in_(ACTIVE + ("interrupted",))).order_by(jobs.c.created_at))]
        for r in rows:
            m = read_marker(r["run_dir"])
            if m is None:
                continue  # the CLI's job: `rft jobs resume` is its owner's call
            if m.get("pending") == "train" and r["status"] in ("queued", "interrupted"):
                reg.claim_job(r["id"], status="queued", error=None)  # stays queued, owned by this server now
                continue
            live = reg.get_job(r["id"])  # reconciles: a job whose process is gone reads interrupted
            if live["status"] == "interrupted":
                write_marker(r["run_dir"], "resume")
                reg.add_event(r["id"], "warn", "status", "The server restarted; the job resumes from its last "
                              "training state")

    # ------------------------------------------------------------------------------ requests
    def cancel(self, job_id: str, actor: str | None = None) -> dict:
        """Cancel: a job not started yet at once; a running one at its next step boundary."""

        reg = self.registry
        with self._lock:
            row = reg.get_job(job_id)
            m = read_marker(row["run_dir"])
            if m and m.get("pending") and row["id"] not in self._procs and row["status"] in ("queued",) + RESUMABLE:
                write_marker(row["run_dir"], None)
                if row["status"] == "queued":  # Registry.request only flags an active job
                    reg.update_job(row["id"], status="cancelled", finished_at=time.time(), requested=None)
                    reg.add_event(row["id"], "warn", "status", "Job cancelled before it started")
                    reg.audit(actor or "rft-serve", "job.cancel", row["id"], {"status": "queued"},
                              {"status": "cancelled"})
                    return reg.get_job(row["id"])
            return reg.request(row["id"], "cancel", actor)

    def pause(self, job_id: str, actor: str | None = None) -> dict:
        """Pause: a queued job not started yet at once (resume starts it); a running one at its next step."""

        reg = self.registry
        with self._lock:
            row = reg.get_job(job_id)
            m = read_marker(row["run_dir"])
            if m and m.get("pending") == "train" and row["id"] not in self._procs and row["status"] == "queued":
                write_marker(row["run_dir"], None)
                reg.update_job(row["id"], status="paused", requested=None)
                reg.add_event(row["id"], "warn", "status", "Job paused before it started")
                reg.audit(actor or "rft-serve", "job.pause", row["id"], {"status": "queued"}, {"status": "paused"})
                return reg.get_job(row["id"])
            return reg.request(row["id"], "pause", actor)

    def resume(self, job_id: str, actor: str | None = None) -> dict:
        """Resume a paused, interrupted or failed job in a child process (`resume_job`)."""
        from rft.errors import RftError

        self._reap()  # a child that just paused may have exited since the last tick
        reg = self.registry
        with self._lock:
            row = reg.get_job(job_id)
            if row["status"] not in RESUMABLE or row["id"] in self._procs:
                raise RftError(f"job {row['id']} is {row['status']}; only paused, interrupted or failed jobs can be "
                               "resumed")
            write_marker(row["run_dir"], "resume")
            reg.add_event(row["id"], "info", "status", "Resume requested; the job resumes when the scheduler has "
                          "a free slot")
            reg.audit(actor or "rft-serve", "job.resume.request", row["id"], {"status": row["status"]},
                      {"pending": "resume"})
        self.wake()
        return reg.get_job(row["id"])


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
