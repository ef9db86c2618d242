"""Batch jobs: create, run, resume, redrive, cancel, list, show. The CLI and the server call these.

Lifecycle (OpenAI's, plus one): `validating -> in_progress -> finalizing -> completed | completed_with_errors |
failed | cancelled | expired`. `completed` means every request succeeded; `completed_with_errors` that some
succeeded and some are in the error file (OpenAI reports this as `completed` with a failed count, which a
script checking the status alone reads as success; catalogue B1). `failed` is a batch whose input did not
validate, or in which every request failed. A run that stops early
(circuit breaker open, `max_cost` reached, interrupted, killed) leaves the batch `in_progress` with a
`stop_reason`; `resume` continues it.

Exactly once, by construction: the output and error files are the journal. A run appends each finished
request and fsyncs before going on; on start it reads both files back (cutting off a torn last line) and runs
only the custom_ids found in neither. One process runs a batch at a time (a `flock` in the batch folder), so
nothing can be appended twice. `finalizing` compacts the error file to one record per custom_id and drops
custom_ids that have since succeeded (a redrive), with an atomic rewrite.

Dead letters: a request that failed for good goes to the error file with the request itself, every attempt's
error and timestamps, and the round it failed in. `redrive` starts a new round that re-runs only those.

Cost: tokens are summed from the output bodies; wall time is summed over runs; the price table turns them
into an estimate (tokens for remote endpoints, machine hours for local models). Simplification: the wall
time of a run killed with `kill -9` counts up to its last state write (after each committed group).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Callable

from rft.batch.config import BatchConfig
from rft.batch.executors import LocalExecutor, Outcome, RemoteExecutor
from rft.batch.retry import CircuitBreaker, Clock
from rft.batch.store import (BatchLock, JsonlAppender, batch_folder, batches_dir, is_running, line_id, visible_batch_ids,
                             new_batch_id, read_records, read_state, write_atomic, write_state)
from rft.batch.validate import MAX_BYTES, BatchRequest, load_requests, validate_file
from rft.errors import Problem, RftError
from rft.userinput import check_input_path, check_output_file

TERMINAL = ("completed", "completed_with_errors", "failed", "cancelled", "expired")
ENDPOINT = "/v1/chat/completions"


def is_remote(model: str) -> bool:
    return model.startswith(("http://", "https://"))


def idempotency_key(batch_id: str, custom_id: str) -> str:
    """Stable across attempts, runs and redrives of one request: derived from (batch, custom_id) only."""
    digest = hashlib.sha256(("key\0" + batch_id + "\0" + custom_id).encode()).hexdigest()
    return f"{batch_id}-{digest[:32]}"


def _window_seconds(window: str) -> float:
    m = re.fullmatch(r"(\d+)\s*([smhd])", window.strip())
    if not m or int(m.group(1)) <= 0:
        raise RftError(f"invalid completion window '{window}'", hint="use a duration like 24h, 90m or 7d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _errors_path(output: Path) -> Path:
    name = output.name[:-len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(name + ".errors.jsonl")


def _check_output_paths(output: str | Path) -> Path:
    """The absolute output path, when it and its errors file (`OUT.errors.jsonl`) can be created without
    touching anything already there, else RftError naming the path: a directory, a folder on the way that is
    a file, a name longer than the file system allows, a folder that cannot be written, or a file that already
    has content (a stranger's file is never truncated or appended to; an empty one, as `mktemp` makes, is
    used)."""
    name = str(output)
    p = check_output_file(Path(name).expanduser(), "batch output")
    try:
        p = p.resolve()
        for path in (p, _errors_path(p)):
            check_output_file(path, "batch output")
            if len(str(path).encode()) >= 4096 or any(len(part.encode()) > 255 for part in path.parts):
                raise RftError(f"{name[:80]}...: the batch output path is longer than the file system allows")
            if path.exists():
                if not path.is_file():
                    raise RftError(f"{path}: not a regular file; the batch output must be a file path")
                if path.stat().st_size > 0:
                    raise RftError(f"{path}: already exists and is not this batch's; nothing was run "
                                   "(it was left as it was)", hint="choose another --output, or move the old file away")
        anc = p.parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise RftError(f"{name}: {anc} is a file, not a folder; nothing was run")
        if not os.access(anc, os.W_OK | os.X_OK):
            raise RftError(f"{name}: no permission to write in {anc}")
    except OSError as e:
        raise RftError(f"{name[:200]}: cannot use this batch output path: {e.strerror or e}") from None
    return p


# ------------------------------------------------------------------------------------------- create
def create_batch(input_path: str | Path, *, model: str, remote_model: str | None = None,
                 output: str | Path | None = None, config: BatchConfig | None = None,
                 completion_window: str = "24h", metadata: dict | None = None, clock=None) -> dict:
    """Validate the input and record a new batch (status `in_progress` with nothing run yet). Invalid input
    records a `failed` batch and raises an RftError that lists every problem with its line and field."""
    clock = clock or Clock()
    config = config or BatchConfig()
    window_s = _window_seconds(completion_window)
    # Every path is checked before anything is written: a refused batch leaves no folder and no output file.
    input_path = check_input_path(input_path, "batch input", max_bytes=1 << 62)
    size = input_path.stat().st_size
    if size > MAX_BYTES:
        raise RftError(f"{input_path}: the file is {size / 1e6:.1f} MB; a batch file may hold at most "
                       f"{MAX_BYTES / 1e6:.0f} MB; nothing was run", hint="split it into several batches")
    user_out = _check_output_paths(output) if output else None
    remote = is_remote(model)
    if remote and config.strategy:
        raise RftError("an inference strategy (config 'strategy') runs on local models only; a remote endpoint "
                       "answers requests as they are", hint="leave 'strategy' out for a remote model")
    model_path = None
    if not remote:
        from rft import models

        resolved = models.resolve(model, prepare=False)  # fails now, with a hint, for a reference that cannot load
        if Path(model).expanduser().exists():
            model = str(Path(model).expanduser().resolve())
        elif model.startswith(("ckpt:", "alias:")):
            # Pinned now: an alias moved (promote, rollback) while the batch runs must not mix two models.
            model_path = str(resolved.path)
    batch_id = new_batch_id()
    folder = batches_dir() / batch_id
    folder.mkdir(parents=True)
    out = user_out or folder / "output.jsonl"
    err = _errors_path(out)
    now = clock.now()
    state = {
        "id": batch_id, "object": "batch", "endpoint": ENDPOINT, "model": model, "model_path": model_path,
        "remote_model": remote_model,
        "executor": "remote" if remote else "local", "input_file": str(input_path.resolve()),
        "output_file": str(out), "error_file": str(err), "completion_window": completion_window,
        "status": "validating", "errors": None, "created_at": now, "in_progress_at": None,
        "expires_at": now + window_s, "finalizing_at": None, "completed_at": None, "failed_at": None,
        "cancelling_at": None, "cancelled_at": None, "expired_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "wall_seconds": 0.0, "throughput": {"completion_tokens_per_second": 0.0, "total_tokens_per_second": 0.0},
        "cost": {"estimate_usd": 0.0, "basis": "per_1k_tokens" if remote else "per_hour", "max_cost_usd": config.max_cost},
        "round": 0, "stop_reason": None, "metadata": metadata or {},
        "config": config.model_dump(),
    }
    write_state(folder, state)
    # The copy is what runs: edits to the original after this point change nothing.
    tmp = folder / "input.jsonl.tmp"
    shutil.copyfile(input_path, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / "input.jsonl")
    try:
        requests, body_model = validate_file(folder / "input.jsonl", local=not remote)
        if config.strategy:
            _check_strategy(requests, config.strategy, folder / "input.jsonl")
        if remote and not (remote_model or body_model):
            raise RftError("a remote endpoint needs a model name: pass --remote-model NAME or set body.model in "
                           "the requests")
        for path in (out, err):  # again: one may have appeared since the check above
            if path.exists() and path.stat().st_size > 0:
                raise RftError(f"{path} already exists; nothing was run",
                               hint="choose another --output, or move the old file away")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.touch()
            err.touch()
        except OSError as e:
            raise RftError(f"{out}: cannot create the batch output: {e.strerror or e}") from None
    except RftError as e:
        # Validation errors name the user's file, not the copy.
        msg = e.message.replace(str(folder / "input.jsonl"), str(input_path))
        problems = [type(p)(p.message, str(input_path), p.line, p.field) if p.file else p for p in e.problems]
        state.update(status="failed", failed_at=clock.now(),
                     errors={"object": "list", "data": [{"code": "invalid_input", "message": str(p),
                                                          "line": p.line, "param": p.field} for p in problems]
                             or [{"code": "invalid_input", "message": msg, "line": None, "param": None}]})
        write_state(folder, state)
        raise RftError(f"{msg} (batch {batch_id} is marked failed)", problems, hint=e.hint) from None
    state["body_model"] = body_model
    state["request_counts"]["total"] = len(requests)
    state["status"] = "in_progress"
    state["in_progress_at"] = clock.now()
    write_state(folder, state)
    return state


def _check_strategy(requests, strategy: str, path: Path) -> None:
    """Every line must accept the batch's strategy (no stream, n > 1, prediction or tools with it): checked before
    anything runs, with each problem's line."""
    from rft.openai_chat import ChatRequestError, parse_chat_body

    problems = []
    for r in requests:
        if "rft" in r.body:
            continue  # the line's own strategy, checked by validate_file
        try:
            parse_chat_body({**r.body, "rft": {"strategy": strategy}})
        except ChatRequestError as e:
            problems.append(Problem(f"{e.message} (the batch config sets strategy {strategy})", str(path), r.line,
                                    f"body.{e.param}" if e.param else "body"))
    if problems:
        raise RftError(f"{len(problems)} request(s) cannot run with the batch's strategy", problems)


# ---------------------------------------------------------------------------------------------- run
class _Sink:
    """Receives outcomes from an executor: appends them to the output / error file, keeps the counts, usage
    and cost up to date, and raises the stop flag when the cost limit is reached."""

    def __init__(self, folder: Path, state: dict, progress, clock, run_start: float, base_wall: float,
                 prior_errors: dict[str, dict]):
        self.folder = folder
        self.state = state
        self.progress = progress
        self.clock = clock
        self.run_start = run_start
        self.base_wall = base_wall
        self.prior_errors = prior_errors
        self.out = JsonlAppender(Path(state["output_file"]))
        self.err = JsonlAppender(Path(state["error_file"]))
        self.cost_stop = False
        self.finished: set[str] = set()
        self._last_write = time.monotonic()
        self._dirty = False

    def put(self, o: Outcome) -> None:
        bid, cid = self.state["id"], o.request.custom_id
        self.finished.add(cid)
        if o.gave_up is None:
            self.out.append({"id": line_id(bid, cid), "custom_id": cid,
                             "response": {"status_code": o.status_code, "request_id": o.request_id, "body": o.body},
                             "error": None})
            self.state["request_counts"]["completed"] += 1
            u = o.body.get("usage") or {}
            self.state["usage"]["prompt_tokens"] += int(u.get("prompt_tokens") or 0)
            self.state["usage"]["completion_tokens"] += int(u.get("completion_tokens") or 0)
            self.state["usage"]["total_tokens"] = self.state["usage"]["prompt_tokens"] + self.state["usage"]["completion_tokens"]
        else:
            g = o.gave_up
            last = g.last
            response = None
            if last.status_code is not None:
                response = {"status_code": last.status_code, "request_id": last.request_id, "body": last.body}
            prior = self.prior_errors.get(cid, {}).get("attempts", [])
            self.err.append({"id": line_id(bid, cid), "custom_id": cid, "response": response,
                             "error": {"code": last.code, "message": last.message}, "reason": g.reason,
                             "attempts": prior + [a | {"round": self.state["round"]} for a in o.attempts],
                             "request": {"method": "POST", "url": ENDPOINT, "body": o.request.body},
                             "round": self.state["round"], "failed_at": self.clock.now()})
            self.state["request_counts"]["failed"] += 1
        self._dirty = True

    def commit(self) -> None:
        self.out.commit()
        self.err.commit()
        self.report()

    def report(self) -> None:
        _account(self.state, self.base_wall + (self.clock.now() - self.run_start))
        mc = self.state["cost"]["max_cost_usd"]
        if mc is not None and mc > 0 and self.state["cost"]["estimate_usd"] >= mc:
            self.cost_stop = True
        if self._dirty and time.monotonic() - self._last_write >= 1.0:
            write_state(self.folder, self.state)
            self._last_write = time.monotonic()
            self._dirty = False
        if self.progress:
            rc = self.state["request_counts"]
            self.progress({"total": rc["total"], "completed": rc["completed"], "failed": rc["failed"],
                           "completion_tokens": self.state["usage"]["completion_tokens"],
                           "wall_seconds": self.state["wall_seconds"], "cost_usd": self.state["cost"]["estimate_usd"]})

    def close(self) -> None:
        self.out.close()
        self.err.close()


def _account(state: dict, wall: float) -> None:
    """Wall time, throughput and the cost estimate from the usage so far."""
    state["wall_seconds"] = wall
    u = state["usage"]
    state["throughput"] = {"completion_tokens_per_second": u["completion_tokens"] / wall if wall > 0 else 0.0,
                           "total_tokens_per_second": u["total_tokens"] / wall if wall > 0 else 0.0}
    prices = BatchConfig.model_validate(state["config"]).prices
    if state["executor"] == "local":
        est = wall / 3600.0 * prices.local_per_hour
    else:
        p = prices.for_remote(state.get("remote_model") or state.get("body_model"))
        est = u["prompt_tokens"] / 1000.0 * p.prompt_per_1k + u["completion_tokens"] / 1000.0 * p.completion_per_1k
    state["cost"]["estimate_usd"] = round(est, 6)


def _progress_of(state: dict) -> tuple[list[BatchRequest], dict[str, dict], dict[str, dict], list[BatchRequest]]:
    """(all requests, output records by custom_id, latest error record by custom_id, pending requests of the
    current round). Repairs a torn last line in both files."""
    requests = load_requests(batches_dir() / state["id"] / "input.jsonl")
    ids = {r.custom_id for r in requests}
    ok: dict[str, dict] = {}
    for rec in read_records(Path(state["output_file"]), repair=True, batch_id=state["id"]):
        if rec["custom_id"] in ids:
            ok.setdefault(rec["custom_id"], rec)
    dead: dict[str, dict] = {}
    for rec in read_records(Path(state["error_file"]), repair=True, batch_id=state["id"]):
        if rec["custom_id"] in ids and rec["custom_id"] not in ok:
            dead[rec["custom_id"]] = rec  # later lines win: a redrive's record carries all earlier attempts
    rnd = state["round"]
    if rnd == 0:
        pending = [r for r in requests if r.custom_id not in ok and r.custom_id not in dead]
    else:
        pending = [r for r in requests if r.custom_id in dead and dead[r.custom_id].get("round", 0) < rnd]
    return requests, ok, dead, pending


def _recount(state: dict, requests, ok: dict, dead: dict, rnd_pending: list | None = None) -> None:
    redo = {r.custom_id for r in rnd_pending or []}  # dead letters a redrive round is re-running
    state["request_counts"] = {"total": len(requests), "completed": len(ok),
                               "failed": sum(1 for cid in dead if cid not in redo)}
    prompt = sum(int(((r.get("response") or {}).get("body") or {}).get("usage", {}).get("prompt_tokens") or 0) for r in ok.values())
    comp = sum(int(((r.get("response") or {}).get("body") or {}).get("usage", {}).get("completion_tokens") or 0) for r in ok.values())
    state["usage"] = {"prompt_tokens": prompt, "completion_tokens": comp, "total_tokens": prompt + comp}


def _finalize(folder: Path, state: dict, clock, status: str | None = None) -> dict:
    state["status"] = "finalizing"
    state["finalizing_at"] = clock.now()
    write_state(folder, state)
    requests, ok, dead, _ = _progress_of(state)
    # Compact: one line per custom_id in each file, none in both (atomic rewrites, only when needed).
    out_path, err_path = Path(state["output_file"]), Path(state["error_file"])
    if len(read_records(out_path)) != len(ok):
        write_atomic(out_path, b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in ok.values()))
    if len(read_records(err_path)) != len(dead):
        write_atomic(err_path, b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in dead.values()))
    _recount(state, requests, ok, dead)
    _account(state, state["wall_seconds"])
    if status is None:
        rc = state["request_counts"]
        status = "completed" if rc["failed"] == 0 else "failed" if rc["completed"] == 0 else "completed_with_errors"
    state["status"] = status
    # completed_with_errors is a kind of completed: it sets completed_at, as OpenAI's completed batch does.
    state[f"{status.removesuffix('_with_errors')}_at"] = clock.now()
    state["stop_reason"] = None
    state.pop("pid", None)
    write_state(folder, state)
    return state


def _close_remaining(state: dict, pending: list[BatchRequest], code: str, message: str, clock) -> None:
    """Write requests that will not run (cancelled, expired) to the error file, as OpenAI does."""
    app = JsonlAppender(Path(state["error_file"]))
    for r in pending:
        app.append({"id": line_id(state["id"], r.custom_id), "custom_id": r.custom_id, "response": None,
                    "error": {"code": code, "message": message}, "reason": code, "attempts": [],
                    "request": {"method": "POST", "url": ENDPOINT, "body": r.body}, "round": state["round"],
                    "failed_at": clock.now()})
    app.close()


def _executor(state: dict, config: BatchConfig, *, engine, transport, clock, rng, log):
    if state["executor"] == "remote":
        api_key = os.environ.get(config.api_key_env)
        return RemoteExecutor(state["model"], model_name=state.get("remote_model") or state.get("body_model"),
                              api_key=api_key, policy=config.retry, concurrency=config.concurrency, clock=clock,
                              rng=rng, idempotency_key=lambda cid: idempotency_key(state["id"], cid),
                              transport=transport)
    if engine is None:
        from rft.engine import load_engine

        ref = state.get("model_path") or state["model"]
        log(f"loading model {ref}")
        engine = load_engine(ref)
    return LocalExecutor(engine, model_name=state.get("body_model") or state["model"], policy=config.retry,
                         batch_size=config.batch_size, clock=clock, rng=rng, strategy=config.strategy)


def _run_locked(folder: Path, state: dict, *, engine=None, transport=None, clock=None, rng=None,
                progress: Callable[[dict], None] | None = None, log: Callable[[str], None] | None = None) -> dict:
    clock = clock or Clock()
    rng = rng or random.Random()
    log = log or (lambda s: None)
    if state["status"] == "finalizing":
        return _finalize(folder, state, clock)
    if state["status"] == "validating":  # killed while validating: the input copy may be incomplete
        state.update(status="failed", failed_at=clock.now(), errors={"object": "list", "data": [
            {"code": "interrupted", "message": "interrupted during validation", "line": None, "param": None}]})
        write_state(folder, state)
        raise RftError(f"batch {state['id']} was interrupted while validating its input; run the input again")
    requests, ok, dead, pending = _progress_of(state)
    _recount(state, requests, ok, dead, pending)
    if (folder / "cancel").exists():
        return _cancel_now(folder, state, pending, clock)
    if clock.now() >= state["expires_at"]:
        _close_remaining(state, pending, "batch_expired", "the batch did not finish within its completion window", clock)
        return _finalize(folder, state, clock, "expired")
    if not pending:
        return _finalize(folder, state, clock)
    config = BatchConfig.model_validate(state["config"])
    run_start = clock.now()
    base_wall = float(state.get("wall_seconds") or 0.0)
    state.update(status="in_progress", stop_reason=None, pid=os.getpid())
    state["in_progress_at"] = state["in_progress_at"] or run_start
    _account(state, base_wall)
    write_state(folder, state)
    breaker = CircuitBreaker(config.retry.circuit_breaker_threshold)
    sink = _Sink(folder, state, progress, clock, run_start, base_wall, dead)
    flags = {"cancel": False, "expired": False}

    def stopping() -> bool:
        if (folder / "cancel").exists():
            flags["cancel"] = True
        if clock.now() >= state["expires_at"]:
            flags["expired"] = True
        return sink.cost_stop or flags["cancel"] or flags["expired"]

    try:
        ex = _executor(state, config, engine=engine, transport=transport, clock=clock, rng=rng, log=log)
        sink.report()
        ex.run(pending, sink, stopping, breaker)
    except BaseException as e:
        # Everything appended so far is on disk; record why the run stopped, then let the error through.
        sink.close()
        _account(state, base_wall + (clock.now() - run_start))
        state["stop_reason"] = "interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {type(e).__name__}: {e}"
        write_state(folder, state)
        raise
    sink.close()
    _account(state, base_wall + (clock.now() - run_start))
    left = [r for r in pending if r.custom_id not in sink.finished]
    if flags["cancel"]:
        return _cancel_now(folder, state, left, clock)
    if flags["expired"] and left:
        _close_remaining(state, left, "batch_expired", "the batch did not finish within its completion window", clock)
        return _finalize(folder, state, clock, "expired")
    if left:
        if breaker.open:
            state["stop_reason"] = "circuit_breaker_open"
            log(f"circuit breaker open after {breaker.consecutive} consecutive failures: stopped sending; "
                f"{len(left)} request(s) not attempted (resumable: rft batch resume {state['id']})")
        elif sink.cost_stop:
            state["stop_reason"] = "max_cost_reached"
            log(f"estimated cost ${state['cost']['estimate_usd']:.4f} reached --max-cost "
                f"${state['cost']['max_cost_usd']:.4f}; {len(left)} request(s) left (resumable)")
        else:
            state["stop_reason"] = "incomplete"
        write_state(folder, state)
        return state
    return _finalize(folder, state, clock)


def _cancel_now(folder: Path, state: dict, pending: list[BatchRequest], clock) -> dict:
    (folder / "cancel").touch()  # if this is killed half-way, resume finishes the cancel
    state["cancelling_at"] = state.get("cancelling_at") or clock.now()
    write_state(folder, state)
    _close_remaining(state, pending, "batch_cancelled", "the batch was cancelled before this request ran", clock)
    st = _finalize(folder, state, clock, "cancelled")
    (folder / "cancel").unlink(missing_ok=True)
    return st


def run_batch(batch_id: str, **kw) -> dict:
    """Run the pending requests of a batch (used by `rft batch run` right after `create_batch`)."""
    folder = batch_folder(batch_id)
    with BatchLock(folder):
        state = read_state(folder)
        if state["status"] in TERMINAL:  # e.g. cancelled before its runner (a server's thread) got to it
            return state
        return _run_locked(folder, state, **kw)


_UNSET = object()


def resume_batch(batch_id: str, *, max_cost=_UNSET, **kw) -> dict:
    """Continue a batch that stopped early (breaker, cost limit, interrupt, kill -9): runs only what is not
    yet in the output or error file. `max_cost` replaces the stored limit (None or 0: no limit)."""
    folder = batch_folder(batch_id)
    with BatchLock(folder):
        state = read_state(folder)
        if state["status"] == "failed" and state.get("errors"):
            raise RftError(f"batch {state['id']} failed validation; fix the input and start a new batch",
                           hint=f"`rft batch show {state['id']}` lists the problems")
        if state["status"] in TERMINAL:
            hint = None
            if state["request_counts"]["failed"]:
                hint = f"`rft batch redrive {state['id']}` re-runs its {state['request_counts']['failed']} failed request(s)"
            raise RftError(f"batch {state['id']} is {state['status']}; there is nothing to resume", hint=hint)
        if max_cost is not _UNSET:
            state["cost"]["max_cost_usd"] = max_cost or None
            state["config"]["max_cost"] = max_cost or None
        mc = state["cost"]["max_cost_usd"]
        if mc and state["cost"]["estimate_usd"] >= mc:
            raise RftError(f"batch {state['id']} has reached its cost limit (${state['cost']['estimate_usd']:.4f} of "
                           f"${mc:.4f})", hint="resume with a higher --max-cost, or --max-cost 0 for no limit")
        return _run_locked(folder, state, **kw)


def redrive_batch(batch_id: str, **kw) -> dict:
    """Re-run only the dead-lettered requests of a finished batch (a new round; the key stays the same)."""
    folder = batch_folder(batch_id)
    with BatchLock(folder):
        state = read_state(folder)
        if state["status"] == "failed" and state.get("errors"):
            raise RftError(f"batch {state['id']} failed validation; it has no requests to redrive")
        if state["status"] not in TERMINAL:
            raise RftError(f"batch {state['id']} is {state['status']}; only a finished batch can be redriven",
                           hint=f"`rft batch resume {state['id']}` continues it")
        _, _, dead, _ = _progress_of(state)
        if not dead:
            raise RftError(f"batch {state['id']} has no failed requests to redrive")
        clock = kw.get("clock") or Clock()
        state["round"] += 1
        state["status"] = "in_progress"
        state["expires_at"] = clock.now() + _window_seconds(state["completion_window"])
        for k in ("completed_at", "failed_at", "cancelled_at", "expired_at", "cancelling_at", "finalizing_at"):
            state[k] = None
        write_state(folder, state)
        return _run_locked(folder, state, **kw)


# Fields a caller (the server's batches API) keeps in the state next to the runner's; the runner never sets them.
CALLER_FIELDS = ("input_file_id", "output_file_id", "error_file_id", "files_stored")


def update_batch_fields(batch_id: str, fields: dict, *, tries: int = 200) -> dict:
    """Set caller-owned fields (`CALLER_FIELDS`) in a batch's state, under the batch lock; the new state. A
    running batch holds the lock: this waits for it (up to `tries` x 50 ms, then RftError)."""
    bad = [k for k in fields if k not in CALLER_FIELDS]
    if bad:
        raise RftError(f"{bad[0]} is not a caller field of a batch (allowed: {', '.join(CALLER_FIELDS)})")
    folder = batch_folder(batch_id)
    for i in range(tries):
        try:
            lock = BatchLock(folder).acquire()
        except RftError:
            if i == tries - 1:
                raise
            time.sleep(0.05)
            continue
        try:
            state = read_state(folder)
            state.update(fields)
            write_state(folder, state)
            return state
        finally:
            lock.release()
    raise RftError(f"batch {batch_id}: could not take its lock")  # not reached (tries >= 1)


def cancel_batch(batch_id: str, clock=None) -> dict:
    """Cancel a batch. A running one is asked to stop (it finishes the group in hand, then writes what is left
    to the error file as `batch_cancelled`); one that is not running is cancelled at once."""
    clock = clock or Clock()
    folder = batch_folder(batch_id)
    state = read_state(folder)
    if state["status"] in TERMINAL:
        raise RftError(f"batch {state['id']} is already {state['status']}")
    if is_running(folder):
        (folder / "cancel").touch()
        return show_batch(state["id"])
    with BatchLock(folder):
        state = read_state(folder)
        if state["status"] in TERMINAL:
            raise RftError(f"batch {state['id']} is already {state['status']}")
        _, _, _, pending = _progress_of(state)
        return _cancel_now(folder, state, pending, clock)


def _view(folder: Path, state: dict) -> dict:
    running = is_running(folder)
    v = dict(state)
    v["running"] = running
    if running and (folder / "cancel").exists():
        v["status"] = "cancelling"
    rc = state["request_counts"]
    v["pending"] = max(0, rc["total"] - rc["completed"] - rc["failed"]) if state["status"] not in TERMINAL else 0
    return v


def show_batch(batch_id: str) -> dict:
    folder = batch_folder(batch_id)
    return _view(folder, read_state(folder))


def list_batches() -> list[dict]:
    root = batches_dir()
    rows = []
    if root.exists():
        names = visible_batch_ids(sorted(f.name for f in root.iterdir() if (f / "state.json").exists()))
        for name in names:
            rows.append(_view(root / name, read_state(root / name)))
    rows.sort(key=lambda s: s.get("created_at") or 0, reverse=True)
    return rows
