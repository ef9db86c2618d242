"""The parent side of the sandbox: a pool of warm worker processes, and the pools of one grader context.

What: `SandboxPool` starts `worker.py` processes on demand (one per slot), hands each call to a free worker,
keeps a second, longer deadline per call, and kills and replaces a worker that stops answering.
`SharedPools` is what a `GraderContext` holds: one pool per distinct (limits, size), started when the first
python grader needs it and closed when the last grader using it is closed.

Simplified: one call per worker at a time; workers are started lazily, not pre-warmed.
How to run: see the package docstring.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref

from rft.graders.sandbox.protocol import SCRUBBED_ENV, SandboxLimits, SandboxResult, recv_message, send_message, source_sha256

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")

class SandboxUnavailable(RuntimeError):
    """The sandbox could not start a worker (a setup problem, not a grader problem)."""


_UID_BASE = 1_800_000_000  # far above any real account; each pool slot gets its own uid


class _WorkerHandle:
    """Parent-side handle of one worker process."""

    def __init__(self, pool: "SandboxPool", slot: int):
        self.pool, self.slot = pool, slot
        lim = pool.limits
        self.host_dir = tempfile.mkdtemp(prefix=f"rft-sandbox-{os.getpid()}-{slot}-")
        os.chmod(self.host_dir, 0o755)
        self.uid = _UID_BASE + (os.getpid() % 100_000) * 256 + slot
        self.loaded: set[str] = set()
        self.ns_pid: int | None = None
        self.isolation: dict = {}
        self.calls = 0
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        cfg = {
            "req_fd": req_r, "resp_fd": resp_w, "host_dir": self.host_dir, "uid": self.uid,
            "timeout_s": lim.timeout_s, "cpu_s": lim.cpu_s, "memory_mb": lim.memory_mb, "nproc": lim.nproc,
            "fsize_mb": lim.fsize_mb, "scratch_mb": lim.scratch_mb, "output_bytes": lim.output_bytes,
            "isolation": lim.isolation, "extra_sys_path": pool.extra_sys_path, "force_userns": pool._force_userns,
        }
        self.log_path = os.path.join(self.host_dir, "worker.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", WORKER_SCRIPT, "--worker", json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(req_r, resp_w),
                env=dict(SCRUBBED_ENV), cwd=self.host_dir, start_new_session=True, close_fds=True,
            )
        os.close(req_r)
        os.close(resp_w)
        try:
            deadline = time.monotonic() + 60
            while True:
                msg = recv_message(self.resp_r, deadline)
                if msg is None:
                    raise SandboxUnavailable(f"the sandbox worker exited during start-up: {self._log_tail()}")
                if msg.get("op") == "pid":
                    self.ns_pid = int(msg["pid"])
                elif msg.get("op") == "fatal":
                    raise SandboxUnavailable(msg.get("error", "unknown error"))
                elif msg.get("op") == "hello":
                    self.isolation = msg["isolation"]
                    break
        except TimeoutError:
            self.kill()
            raise SandboxUnavailable("the sandbox worker did not start within 60 s") from None
        except BaseException:
            self.kill()
            raise

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace").strip() or "(no output)"
        except OSError:
            return "(no log)"

    def call(self, sha: str, source: str, sample, item, timeout: float, cpu: float | None) -> SandboxResult:
        self.calls += 1
        msg = {"op": "call", "id": self.calls, "sha": sha, "sample": sample, "item": item, "timeout": timeout, "cpu": cpu}
        if sha not in self.loaded:
            msg["source"] = source
        t0 = time.monotonic()
        try:
            send_message(self.req_w, msg)
        except ValueError as e:  # NaN/inf or similar in the sample/item
            return SandboxResult("error", error=f"the sample or item cannot be sent to the grader as JSON: {e}")
        except OSError as e:
            self.kill()
            return SandboxResult("crash", error=f"the sandbox worker is gone ({e}): {self._log_tail()}")
        # The worker enforces `timeout` itself; this deadline only catches a worker that stopped answering
        # (its module top level hangs, or it was killed).
        deadline = t0 + timeout + self.pool.grace_s
        try:
            out = recv_message(self.resp_r, deadline)
        except TimeoutError:
            self.kill()
            return SandboxResult("timeout", error=f"the grader did not answer within {timeout:g} s (plus {self.pool.grace_s:g} s grace); "
                                 "its worker was killed and replaced", seconds=time.monotonic() - t0)
        except (OSError, ValueError) as e:
            self.kill()
            return SandboxResult("crash", error=f"lost contact with the sandbox worker: {e}", seconds=time.monotonic() - t0)
        if out is None:
            self.kill()
            return SandboxResult("crash", error=f"the sandbox worker died: {self._log_tail()}", seconds=time.monotonic() - t0)
        if out.get("status") == "need_source":  # the worker lost the module; resend once
            self.loaded.discard(sha)
            return self.call(sha, source, sample, item, timeout, cpu)
        if out.get("loaded"):
            self.loaded.add(sha)
        return SandboxResult(
            status=out.get("status", "crash"), value=out.get("value"), error=out.get("error", ""),
            traceback=out.get("traceback", ""), stdout=out.get("stdout", ""), stderr=out.get("stderr", ""),
            stdout_truncated=bool(out.get("stdout_truncated")), stderr_truncated=bool(out.get("stderr_truncated")),
            seconds=time.monotonic() - t0,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill the worker: PID 1 of its namespace (which takes every sandboxed process with it) and its group."""
        for pid in (self.ns_pid,):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except Exception:
            pass
        for fd in (self.req_w, self.resp_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.req_w = self.resp_r = -1
        shutil.rmtree(self.host_dir, ignore_errors=True)

    def close(self) -> None:
        if self.req_w >= 0 and self.alive:
            try:
                send_message(self.req_w, {"op": "exit"})
                self.proc.wait(timeout=2)
            except Exception:
                pass
        self.kill()


class SandboxPool:
    """A pool of sandbox workers; thread-safe. `run()` blocks until a worker is free, then runs one call.

    size: how many calls run at once (default: the CPU count, at least 2). grace_s: extra time the parent
    waits past the per-call timeout before it gives up on a worker and replaces it. extra_sys_path: more
    directories graders may import from (added to sys.path and, in namespace mode, mounted read-only; by
    default only the interpreter, its site-packages and the system libraries are visible; when started as root
    the sandbox runs as an unprivileged uid, so they must be world-readable). Call `close()`
    when done (pools still open at exit are closed then).
    """

    def __init__(self, size: int | None = None, limits: SandboxLimits | None = None, *, grace_s: float = 5.0,
                 extra_sys_path: list[str] | None = None):
        if not hasattr(os, "fork"):
            raise SandboxUnavailable("python graders need a POSIX system with fork() (Linux or macOS)")
        self.limits = limits or SandboxLimits()
        self.size = max(1, size or max(2, os.cpu_count() or 2))
        self.grace_s = grace_s
        self.extra_sys_path = list(extra_sys_path or [])
        self._idle: list[_WorkerHandle] = []
        self._free_slots = list(range(self.size))
        self._cond = threading.Condition()
        self._closed = False
        self.stats = {"calls": 0, "timeouts": 0, "crashes": 0, "workers_started": 0, "workers_replaced": 0}
        self._isolation: dict | None = None
        self._force_userns = False  # tests only: exercise the unprivileged path on a root machine
        _ALL_POOLS.add(self)  # closed at exit, so no worker or scratch directory outlives the process

    # -- worker checkout -----------------------------------------------------------------------------------
    def _acquire(self) -> _WorkerHandle:
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxUnavailable("the sandbox pool is closed")
                while self._idle:
                    w = self._idle.pop()
                    if w.alive:
                        return w
                    w.kill()  # died while idle (e.g. the OOM killer): free its slot
                    self._free_slots.append(w.slot)
                    self.stats["workers_replaced"] += 1
                if self._free_slots:
                    slot = self._free_slots.pop()
                    break
                self._cond.wait()
        try:
            w = _WorkerHandle(self, slot)
        except BaseException:
            with self._cond:
                self._free_slots.append(slot)
                self._cond.notify()
            raise
        with self._cond:
            self.stats["workers_started"] += 1
            if self._isolation is None:
                self._isolation = dict(w.isolation)
        return w

    def _release(self, w: _WorkerHandle) -> None:
        with self._cond:
            if w.alive and not self._closed:
                self._idle.append(w)
            else:
                if w.req_w >= 0:
                    w.kill()
                self.stats["workers_replaced"] += 1
                self._free_slots.append(w.slot)
            self._cond.notify()

    # -- public --------------------------------------------------------------------------------------------
    def run(self, source: str, sample, item, *, timeout_s: float | None = None, cpu_s: float | None = None) -> SandboxResult:
        """Run `grade(sample, item)` from `source` in a sandbox worker."""
        timeout = float(timeout_s or self.limits.timeout_s)
        sha = source_sha256(source)
        w = self._acquire()
        try:
            res = w.call(sha, source, sample, item, timeout, cpu_s or self.limits.cpu_s)
        finally:
            self._release(w)
        with self._cond:
            self.stats["calls"] += 1
            self.stats["timeouts"] += res.status == "timeout"
            self.stats["crashes"] += res.status == "crash"
        return res

    @property
    def isolation(self) -> dict:
        """What this machine lets the sandbox enforce (starts a worker if none ran yet)."""
        if self._isolation is None:
            self._release(self._acquire())
        return dict(self._isolation or {})

    def worker_pids(self) -> list[int]:
        with self._cond:
            return [w.proc.pid for w in self._idle] + [w.ns_pid for w in self._idle if w.ns_pid]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for w in idle:
            w.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SharedPools:
    """The sandbox pools of one `GraderContext`: one per distinct (limits, size), shared by every python grader
    built with that context. Reference counted: `acquire` starts the pool (its workers start on first use) or
    reuses it, `release` closes it when the last grader holding it lets go, so whoever closes the graders
    closes the pools. `close()` closes whatever is still open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple, list] = {}  # (limits, size) -> [pool, holders]

    def acquire(self, limits: SandboxLimits, size: int | None) -> SandboxPool:
        key = (limits, size)
        with self._lock:
            entry = self._pools.get(key)
            if entry is None or entry[0]._closed:
                entry = self._pools[key] = [SandboxPool(size, limits), 0]
            entry[1] += 1
            return entry[0]

    def release(self, pool: SandboxPool) -> None:
        with self._lock:
            for key, entry in list(self._pools.items()):
                if entry[0] is pool:
                    entry[1] -= 1
                    if entry[1] > 0:
                        return
                    del self._pools[key]
                    break
            else:
                return
        pool.close()

    def close(self) -> None:
        with self._lock:
            pools, self._pools = [e[0] for e in self._pools.values()], {}
        for pool in pools:
            pool.close()


# Every pool of the process, closed at exit, so no worker or scratch directory outlives the process. Not
# configuration: only the exit hook reads it.
_ALL_POOLS: "weakref.WeakSet[SandboxPool]" = weakref.WeakSet()


@atexit.register
def close_all_pools() -> None:
    """Close every pool of this process (registered at exit)."""
    for p in list(_ALL_POOLS):
        p.close()


def describe_isolation(iso: dict) -> str:
    """A one-line, honest summary of what is enforced."""
    if iso.get("mode") == "namespaces":
        who = "unprivileged slot uid" if iso.get("uid_dropped") else "no capabilities"
        return f"namespaces (network, pid, mount; read-only root; {who}) + rlimits"
    return ("basic: rlimits, scrubbed env, scratch cwd, Python-level socket block only "
            f"(no OS network/filesystem isolation{': ' + iso['reason'] if iso.get('reason') else ''})")


__all__ = ["SandboxPool", "SandboxUnavailable", "SharedPools", "WORKER_SCRIPT", "close_all_pools", "describe_isolation"]
