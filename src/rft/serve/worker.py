"""The one thread that owns the engine: it follows the model reference and micro-batches requests.

Every generation on a served model runs on this worker thread, so requests to one engine never overlap
(transformers models and the fast decoder's KV cache are not thread-safe). While a batch runs, new requests
queue; when the worker comes back, it takes every queued non-streaming request (up to `max_batch`) at once
and hands them to `run_chat_calls`, which puts calls with identical sampling parameters into one
`engine.generate` batch. There is no waiting window: a lone request starts at once, and batches form only
under load. Streaming requests run one at a time, in arrival order.

Before each batch the worker re-resolves the model reference (`rft.models.resolve`; cheap) at most every
`refresh_s` seconds; when the resolved directory changed (an alias was promoted or rolled back), it loads
the new engine and drops the old one, so `alias:<name>` follows its target without a restart. If the
reference stops resolving or the new target fails to load, requests get a 503 rather than answers from a
model the reference no longer names.
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


class ModelWorker:
    def __init__(self, model_ref: str, *, served_name: str | None = None, loader=None, refresh_s: float = 0.0,
                 max_batch: int = 32, log: Callable[[str], None] = lambda s: None):
        self.ref = model_ref
        self.served_name = served_name or model_ref
        self.loader = loader or default_loader
        self.refresh_s = refresh_s
        self.max_batch = max_batch
        self.log = log
        # Load eagerly: a bad reference fails `rft serve` at start-up with the resolver's RftError.
        self.resolved = models.resolve(model_ref)
        self.engine = self.loader(self.resolved)
        self.loads = 1
        self.loaded_at = int(time.time())
        self._checked = time.monotonic()
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

    def _put(self, job) -> None:
        with self._cv:
            if self._closed:
                raise ChatRequestError("the server is shutting down", None, status_code=503)
            self._jobs.append(job)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=30)

    # -- the worker thread --------------------------------------------------------------------------------
    def _next(self) -> list | None:
        """The next unit of work: one StreamJob, or every queued ChatJob up to max_batch (FIFO otherwise)."""
        with self._cv:
            while not self._jobs and not self._closed:
                self._cv.wait()
            if self._closed and not self._jobs:
                return None
            first = self._jobs.popleft()
            if isinstance(first, StreamJob):
                return [first]
            batch, rest = [first], deque()
            while self._jobs and len(batch) < self.max_batch:
                j = self._jobs.popleft()
                (batch if isinstance(j, ChatJob) else rest).append(j)
            self._jobs.extendleft(reversed(rest))  # streams skipped over keep their place at the front
            return batch

    def _loop(self) -> None:
        while True:
            work = self._next()
            if work is None:
                return
            try:
                self._refresh()
            except ChatRequestError as e:
                for job in work:
                    self._fail(job, e)
                continue
            try:
                if isinstance(work[0], StreamJob):
                    self._run_stream(work[0])
                else:
                    self._run_chats(work)
            except Exception as e:  # noqa: BLE001 - the worker thread must survive anything
                err = ChatRequestError(f"internal error: {type(e).__name__}: {e}", None, status_code=500)
                for job in work:
                    if isinstance(job, StreamJob):
                        job.send(("error", err))
                    elif not job.future.done():
                        job.future.set_result(err)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        try:
            r = models.resolve(self.ref, verify=False)  # a registry lookup; files are re-hashed only on a change
            if r.path != self.resolved.path:
                r = models.resolve(self.ref)
        except Exception as e:  # noqa: BLE001 - RftError or a registry failure: say so, don't serve a stale model
            raise ChatRequestError(f"the model reference '{self.ref}' does not resolve any more: {e}", "model",
                                   status_code=503, type="server_error") from None
        if r.path == self.resolved.path:
            return
        self.log(f"'{self.ref}' now points at {r.path} (was {self.resolved.path}); loading it")
        try:
            engine = self.loader(r)
        except Exception as e:  # noqa: BLE001
            raise ChatRequestError(f"'{self.ref}' now points at a model that failed to load: {e}", "model",
                                   status_code=503, type="server_error") from None
        self.engine, self.resolved = engine, r
        self.loads += 1
        self.loaded_at = int(time.time())
        self.log(f"serving {r.path}")

    @staticmethod
    def _fail(job, e: ChatRequestError) -> None:
        if isinstance(job, ChatJob):
            if job.future.set_running_or_notify_cancel():
                job.future.set_result(e)
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
            j.future.set_result(r)

    def _run_stream(self, job: StreamJob) -> None:
        call = job.call
        if job.cancelled.is_set():
            return
        try:
            if call.params.n > 1:  # the engine streams one sequence; n > 1 is generated whole, then sent
                [res] = run_chat_calls(self.engine, [call], model_name=self.served_name)
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
