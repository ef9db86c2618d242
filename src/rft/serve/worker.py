"""The one thread that owns an engine: it runs every generation on that engine and micro-batches requests.

Every generation on a served model runs on its worker's thread, so requests to one engine never overlap
(transformers models and the fast decoder's KV cache are not thread-safe). While a batch runs, new requests
queue; when the worker comes back, it takes every queued non-streaming request (up to `max_batch`) at once
and hands them to `run_chat_calls`, which puts calls with identical sampling parameters into one
`engine.generate` batch. There is no waiting window: a lone request starts at once, and batches form only
under load. Streaming requests, and engine calls from the batch runner (`call(fn)`), run one at a time, in
arrival order.

A worker serves one resolved model directory for its whole life; which directory a reference (an alias, say)
names is the pool's business (`rft.serve.pool`), which starts a worker per directory and closes idle ones.
Each answer carries the model name its request asked for (`ChatCall.model`), so one worker can serve every
name of its directory (`ckpt:<id>`, the `ft:` name of the same job, an alias pointing there).
How to use: `w = ModelWorker(ref, resolved=models.resolve(ref)); w.submit_chat(call).result(); w.close()`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from rft import models
from rft.engine import load_engine
from rft.openai_chat import ChatCall, ChatRequestError, check_call, run_chat_calls


def default_loader(resolved):
    """Load a LocalEngine for a resolved model directory (fp32 weights, the CPU's best compute dtype), from the
    already-resolved path, so a concurrent alias change cannot slip in between."""
    return load_engine(resolved)


@dataclass
class ChatJob:
    call: ChatCall
    future: Future = field(default_factory=Future)  # -> dict body | ChatRequestError


@dataclass
class StreamJob:
    """A streaming call. `emit` receives, from the worker thread: ("start", None) once the call passed the
    engine checks, then ("delta", text)*, then ("done", Completion), or ("body", chat.completion dict) for
    n > 1 (generated whole), or ("error", ChatRequestError) at any point."""

    call: ChatCall
    emit: Callable[[tuple], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    def send(self, event: tuple) -> None:
        """emit, but a consumer that is gone (event loop closed at shutdown) cancels the job instead of
        killing the worker thread."""
        try:
            self.emit(event)
        except Exception:  # noqa: BLE001
            self.cancelled.set()


@dataclass
class EngineJob:
    """`fn(engine)` run on the worker thread (the batch runner's engine calls); its result or exception lands in
    `future`."""

    fn: Callable
    future: Future = field(default_factory=Future)


class ModelWorker:
    """The thread that owns the engine of one resolved model. `resolved` (default: `models.resolve(model_ref)`)
    is loaded now with `loader(resolved) -> engine`; a failure raises here. `served_name` answers requests that
    name no model."""

    def __init__(self, model_ref: str, *, resolved: models.ResolvedModel | None = None, served_name: str | None = None,
                 loader=None, max_batch: int = 32, log: Callable[[str], None] = lambda s: None):
        self.ref = model_ref
        self.served_name = served_name or model_ref
        self.loader = loader or default_loader
        self.max_batch = max_batch
        self.log = log
        self.resolved = resolved if resolved is not None else models.resolve(model_ref)
        self.engine = self.loader(self.resolved)
        self.loaded_at = int(time.time())
        self._jobs: deque = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="rft-serve-worker", daemon=True)
        self._thread.start()

    # -- submitting (any thread) --------------------------------------------------------------------------
    def submit_chat(self, call: ChatCall) -> Future:
        job = ChatJob(call)
        self._put(job)
        return job.future

    def submit_stream(self, call: ChatCall, emit: Callable[[tuple], None]) -> StreamJob:
        job = StreamJob(call, emit)
        self._put(job)
        return job

    def call(self, fn: Callable) -> Future:
        """Run `fn(engine)` on the worker thread, in turn with the requests; the future holds its result."""
        job = EngineJob(fn)
        self._put(job)
        return job.future

    def _put(self, job) -> None:
        with self._cv:
            if self._closed:
                raise ChatRequestError("the server is shutting down", None, status_code=503)
            self._jobs.append(job)
            self._cv.notify()

    def close(self) -> None:
        """Refuse new work, finish what is queued, stop the thread and drop the engine (its memory is freed when
        nothing else holds it; an engine with a `close()` is closed)."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            return  # a generation still runs: its engine stays until it ends
        engine, self.engine = self.engine, None
        close = getattr(engine, "close", None)
        if callable(close):
            try:
                close()
            except Exception as e:  # noqa: BLE001 - closing must not fail the server
                self.log(f"closing the engine of {self.resolved.path}: {type(e).__name__}: {e}")

    # -- the worker thread --------------------------------------------------------------------------------
    def _next(self) -> list | None:
        """The next unit of work: one StreamJob, or every queued ChatJob up to max_batch (FIFO otherwise)."""
        with self._cv:
            while not self._jobs and not self._closed:
                self._cv.wait()
            if self._closed and not self._jobs:
                return None
            first = self._jobs.popleft()
            if not isinstance(first, ChatJob):
                return [first]
            batch, rest = [first], deque()
            while self._jobs and len(batch) < self.max_batch:
                j = self._jobs.popleft()
                (batch if isinstance(j, ChatJob) else rest).append(j)
            self._jobs.extendleft(reversed(rest))  # streams and calls skipped over keep their place at the front
            return batch

    def _loop(self) -> None:
        while True:
            work = self._next()
            if work is None:
                return
            try:
                if isinstance(work[0], StreamJob):
                    self._run_stream(work[0])
                elif isinstance(work[0], EngineJob):
                    self._run_call(work[0])
                else:
                    self._run_chats(work)
            except Exception as e:  # noqa: BLE001 - the worker thread must survive anything
                err = ChatRequestError(f"internal error: {type(e).__name__}: {e}", None, status_code=500)
                for job in work:
                    if isinstance(job, StreamJob):
                        job.send(("error", err))
                    elif not job.future.done():
                        job.future.set_result(err)

    def _run_call(self, job: EngineJob) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn(self.engine))
        except BaseException as e:  # noqa: BLE001 - the caller re-raises it from the future
            job.future.set_exception(e)

    @staticmethod
    def _fail(job, e: ChatRequestError) -> None:
        if isinstance(job, ChatJob):
            if job.future.set_running_or_notify_cancel():
                job.future.set_result(e)
        elif isinstance(job, EngineJob):
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(e)
        else:
            job.send(("error", e))

    def _run_chats(self, jobs: list[ChatJob]) -> None:
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]  # skip clients that went away
        if not live:
            return
        try:
            results = run_chat_calls(self.engine, [j.call for j in live], model_name=self.served_name)
        except Exception as e:  # noqa: BLE001 - never leave a client hanging
            results = [ChatRequestError(f"generation failed: {type(e).__name__}: {e}", None, status_code=500)] * len(live)
        for j, r in zip(live, results):
            if isinstance(r, dict) and j.call.model:
                r["model"] = j.call.model  # the name this request asked for (a worker serves every name of its model)
            j.future.set_result(r)

    def _run_stream(self, job: StreamJob) -> None:
        call = job.call
        if job.cancelled.is_set():
            return
        try:
            if call.params.n > 1:  # the engine streams one sequence; n > 1 is generated whole, then sent
                [res] = run_chat_calls(self.engine, [call], model_name=call.model or self.served_name)
                if isinstance(res, ChatRequestError):
                    job.send(("error", res))
                else:
                    job.send(("start", None))
                    job.send(("body", res))
                return
            check_call(self.engine, call)
            if not hasattr(self.engine, "stream"):
                raise ChatRequestError("this engine does not support streaming", "stream")
            job.send(("start", None))
            it = self.engine.stream(call.messages, call.params, call.prediction)
            try:
                for delta, completion in it:
                    if job.cancelled.is_set():
                        return  # the client went away: stop generating
                    if completion is not None:
                        job.send(("done", completion))
                        return
                    if delta:
                        job.send(("delta", delta))
            finally:
                close = getattr(it, "close", None)
                if close:
                    close()
            job.send(("error", ChatRequestError("the engine's stream ended without a completion", None,
                                                status_code=500)))
        except ChatRequestError as e:
            job.send(("error", e))
        except Exception as e:  # noqa: BLE001
            job.send(("error", ChatRequestError(f"generation failed: {type(e).__name__}: {e}", None, status_code=500)))
