"""The server's bounded pool of models: one worker (engine thread) per resolved model, loaded on demand.

What: `ModelPool(default_ref, max_models=2)` hands out leases on `rft.serve.worker.ModelWorker`s for any model
reference `rft.models.resolve` accepts (embedded name, local directory, `ckpt:<id>`, `alias:<name>`,
`ft:<base>[:<suffix>]:<job id>`). Workers are keyed by the resolved directory, so every name of one model
(`ckpt:` id, `ft:` name, an alias pointing there, its path) shares one engine. At most `max_models` workers
(loading ones included) are in memory; to make room for another, the least recently used idle worker is closed
(which drops its engine). A worker with a lease out (a request in flight, a running batch) is never evicted, and
neither is the default model's current worker. When every slot is busy, a chat request gets a 503 (`PoolFull`)
and a batch waits for a slot.

How: `with pool.lease(ref) as lease: lease.worker.submit_chat(...)` from a thread, or
`lease = await pool.lease_async(ref)` on the event loop (release it when the response is done). Loads run on one
loader thread, never on the event loop; concurrent requests for a model being loaded wait for that one load.
Each request re-resolves its reference (a registry lookup, no hashing) at most every `refresh_s` seconds, so an
alias that was promoted or rolled back serves its new target from the next request on; the files behind a
reference are re-hashed (`rft.models.resolve`) the first time it is used and whenever what it names changes, so
a checkpoint tampered with after promotion is refused (503), never served. `WorkerEngine(worker)` gives the
batch runner an engine whose generations run on the worker's thread (no second copy of a loaded model).

Errors: `ModelNotFound` (the reference does not resolve: 404 `model_not_found`), `ModelUnavailable` (it
resolves but cannot be served now: the default reference stopped resolving, verification or loading failed,
the pool is full: 503). Both are RftErrors; the HTTP app turns them into OpenAI's error shape.
Security: anyone allowed to call the server can name any model directory the server's user can read, and the
error for one that does not load says why (it exists, it has no config.json...); the token is the boundary.
Simplified: the bound counts models, not bytes; a request queued on a worker before an alias moved is answered
by the model the alias named when the request arrived.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from rft import models
from rft.errors import RftError
from rft.serve.worker import ModelWorker

MAX_REMEMBERED_NAMES = 4096  # lookups remembered per reference name; the table is cleared when it grows past this


class ModelNotFound(RftError):
    """The reference does not resolve to a model (HTTP 404 model_not_found)."""


class ModelUnavailable(RftError):
    """The model cannot be served now (HTTP 503)."""


class PoolFull(ModelUnavailable):
    """Every slot holds a model that is in use or pinned."""


@dataclass(eq=False)
class _Slot:
    key: str  # the resolved directory
    resolved: models.ResolvedModel
    ready: Future = field(default_factory=Future)  # -> ModelWorker, or the load's ModelUnavailable
    worker: ModelWorker | None = None
    leases: int = 0
    used: int = 0  # the pool's use counter at the last lease: least recently used first


class Lease:
    """One use of a worker: `worker` serves `name` until `release()` (idempotent; also `with lease:`)."""

    def __init__(self, pool: "ModelPool", slot: _Slot, name: str):
        self._pool, self._slot, self.name = pool, slot, name
        self._released = False

    @property
    def worker(self) -> ModelWorker:
        return self._slot.ready.result()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._slot)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ModelPool:
    """Workers keyed by resolved model, at most `max_models` at a time. `default_ref` (or None: on demand only)
    answers requests that name no model and is never evicted; `preload()` loads it (a bad reference raises the
    resolver's RftError). `make_worker(resolved, name) -> worker` replaces the ModelWorker factory (tests);
    `loader(resolved) -> engine` is the workers' engine loader. `clock` drives `refresh_s`."""

    def __init__(self, default_ref: str | None = None, *, max_models: int = 2, loader=None, max_batch: int = 32,
                 refresh_s: float = 0.0, log: Callable[[str], None] = lambda s: None,
                 make_worker: Callable | None = None, clock: Callable[[], float] = time.monotonic):
        if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
            raise RftError(f"max_models must be a whole number of at least 1, got {max_models!r}")
        self.default_ref = default_ref
        self.max_models = max_models
        self.loader = loader
        self.max_batch = max_batch
        self.refresh_s = refresh_s
        self.log = log
        self.clock = clock
        self.make_worker = make_worker or self._new_worker
        self.loads = 0  # workers created
        self.closes = 0  # workers closed (evicted, or at shutdown)
        self._slots: dict[str, _Slot] = {}
        self._cv = threading.Condition()
        self._uses = 0
        self._default_key: str | None = None
        self._closed = False
        self._seen: dict[str, tuple[float, models.ResolvedModel]] = {}  # name -> (looked up at, result)
        self._verified: dict[str, str] = {}  # name -> the directory it named when its files were last hashed
        self._loader_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rft-model-load")

    def _new_worker(self, resolved: models.ResolvedModel, name: str) -> ModelWorker:
        return ModelWorker(name, resolved=resolved, loader=self.loader, max_batch=self.max_batch, log=self.log)

    # ------------------------------------------------------------------------------------ public
    def preload(self) -> ModelWorker | None:
        """Load the default model now (start-up); a reference that does not resolve raises its RftError as is."""
        if self.default_ref is None:
            return None
        r = models.resolve(self.default_ref)  # the resolver's own error and hint, for `rft serve`'s one line
        self._remember(self.default_ref, r, verified=True)
        with self.lease(self.default_ref) as lease:
            return lease.worker

    def lease(self, name: str | None = None, *, wait: bool = False) -> Lease:
        """A lease on the worker for `name` (default: the default model), loading it if needed; blocks. With
        `wait`, a full pool is waited out (batches) instead of raising PoolFull."""
        name = self._name(name)
        resolved = self._lookup(name)
        while True:
            try:
                slot = self._reserve(name, resolved)
                break
            except PoolFull:
                if not wait:
                    raise
                with self._cv:
                    if self._closed:
                        raise ModelUnavailable("the server is shutting down") from None
                    self._cv.wait(0.5)
        lease = Lease(self, slot, name)
        try:
            slot.ready.result()
        except BaseException:
            lease.release()
            raise
        return lease

    async def lease_async(self, name: str | None = None) -> Lease:
        """`lease` for the event loop: the lookup and the load run on threads; a cancelled request releases."""
        from starlette.concurrency import run_in_threadpool

        name = self._name(name)
        resolved = await run_in_threadpool(self._lookup, name)
        slot = self._reserve(name, resolved)  # no await between reserving and the try: a cancel cannot leak it
        lease = Lease(self, slot, name)
        try:
            # shielded: one request giving up must not cancel the load other requests wait for
            await asyncio.shield(asyncio.wrap_future(slot.ready))
        except BaseException:
            lease.release()
            raise
        return lease

    def loaded(self) -> list[dict]:
        """The models in memory now: `{"key", "ref", "leases", "default"}`, most recently used first."""
        with self._cv:
            slots = sorted(self._slots.values(), key=lambda s: -s.used)
            return [{"key": s.key, "ref": s.resolved.ref, "leases": s.leases, "loading": not s.ready.done(),
                     "default": s.key == self._default_key} for s in slots]

    def worker_for(self, name: str | None = None) -> ModelWorker | None:
        """The loaded worker that serves `name` now (None when it is not loaded); loads nothing."""
        hit = self._seen.get(self._name(name))
        with self._cv:
            slot = self._slots.get(str(hit[1].path)) if hit else None
        if slot is None or not slot.ready.done() or slot.ready.exception() is not None:
            return None
        return slot.ready.result()

    def close(self) -> None:
        """Stop loading, close every worker (queued work finishes first)."""
        with self._cv:
            self._closed = True
            slots = list(self._slots.values())
            self._slots.clear()
            self._cv.notify_all()
        self._loader_thread.shutdown(wait=True, cancel_futures=True)
        for s in slots:
            if s.ready.done() and s.ready.exception() is None:
                self._close_worker(s.ready.result())

    # ---------------------------------------------------------------------------------- internals
    def _name(self, name: str | None) -> str:
        name = name or self.default_ref
        if name is None:
            raise ModelNotFound("you must name a model: this server was started without a default model "
                                "(--model); see GET /v1/models")
        return name

    def _remember(self, name: str, r: models.ResolvedModel, *, verified: bool) -> None:
        with self._cv:
            if len(self._seen) > MAX_REMEMBERED_NAMES:
                self._seen.clear()
                self._verified.clear()
            self._seen[name] = (self.clock(), r)
            if verified:
                self._verified[name] = str(r.path)

    def _lookup(self, name: str) -> models.ResolvedModel:
        """What `name` names now (blocking: a registry query; hashing when the name is new or moved)."""
        hit = self._seen.get(name)
        if hit is not None and self.clock() - hit[0] < self.refresh_s:
            return hit[1]
        try:
            r = models.resolve(name, verify=False)
        except RftError as e:
            self._seen.pop(name, None)
            if name == self.default_ref:
                raise ModelUnavailable(f"the model reference '{name}' does not resolve any more: {e.message}") from None
            raise ModelNotFound(f"The model '{_short(name)}' does not exist or cannot be served: {e.message}") from None
        except Exception as e:  # noqa: BLE001 - a registry that cannot be read: not the caller's fault
            raise ModelUnavailable(f"cannot look up the model '{_short(name)}': {type(e).__name__}: {e}") from None
        if self._verified.get(name) != str(r.path):
            try:
                r = models.resolve(name)  # the files of a new or moved target are hashed before use
            except RftError as e:
                self._seen.pop(name, None)
                raise ModelUnavailable(f"the model '{_short(name)}' points at {r.path}, which cannot be served: "
                                       f"{e.message}") from None
            self._remember(name, r, verified=True)
        else:
            self._remember(name, r, verified=False)
        return r

    def _reserve(self, name: str, resolved: models.ResolvedModel) -> _Slot:
        """Take a lease on the slot of `resolved` (never blocks): an existing one, or a new one whose load is
        queued on the loader thread after closing the workers evicted to make room."""
        key = str(resolved.path)
        with self._cv:
            if self._closed:
                raise ModelUnavailable("the server is shutting down")
            if name == self.default_ref:
                self._default_key = key  # the default's earlier target (an alias that moved) may now be evicted
            slot = self._slots.get(key)
            if slot is None:
                victims = self._make_room(name)
                slot = _Slot(key, resolved)
                slot.ready.set_running_or_notify_cancel()  # never cancellable: many requests may wait on it
                self._slots[key] = slot
                self._loader_thread.submit(self._load, slot, name, victims)
            self._uses += 1
            slot.used = self._uses
            slot.leases += 1
            return slot

    def _make_room(self, name: str) -> list[_Slot]:
        victims = []
        while len(self._slots) >= self.max_models:
            idle = [s for s in self._slots.values()
                    if s.leases == 0 and s.key != self._default_key and s.ready.done()]
            if not idle:
                busy = ", ".join(s.resolved.ref for s in self._slots.values())
                raise PoolFull(f"cannot load '{_short(name)}' now: all {self.max_models} model slots hold models in "
                               f"use ({_short(busy, 300)}); try again later, or start the server with a larger "
                               "--max-models")
            victim = min(idle, key=lambda s: s.used)
            del self._slots[victim.key]
            victims.append(victim)
        return victims

    def _load(self, slot: _Slot, name: str, victims: list[_Slot]) -> None:
        for v in victims:  # first free their memory, then load
            if v.ready.exception() is None:
                self.log(f"closing {v.resolved.ref} ({v.key}): the least recently used idle model")
                self._close_worker(v.ready.result())
        try:
            self.log(f"loading {name} ({slot.key})")
            worker = self.make_worker(slot.resolved, name)
        except BaseException as e:  # noqa: BLE001 - every waiter gets the reason
            with self._cv:
                if self._slots.get(slot.key) is slot:
                    del self._slots[slot.key]
                self._cv.notify_all()
            msg = e.message if isinstance(e, RftError) else f"{type(e).__name__}: {e}"
            slot.ready.set_exception(ModelUnavailable(f"the model '{_short(name)}' failed to load: {msg}"))
            return
        with self._cv:
            self.loads += 1
            closed = self._closed
        slot.worker = worker
        slot.ready.set_result(worker)
        if closed:  # the pool closed during the load
            self._close_worker(worker)

    def _close_worker(self, worker: ModelWorker) -> None:
        worker.close()
        with self._cv:
            self.closes += 1
        gc.collect()  # the engine's tensors go now, before the next model is loaded

    def _release(self, slot: _Slot) -> None:
        with self._cv:
            slot.leases -= 1
            self._cv.notify_all()


class WorkerEngine:
    """An engine for the batch runner whose generations run on a pool worker's thread (in turn with the chat
    requests), so a batch shares the served copy of its model. Other attributes (`tokenizer`, `model`) are the
    worker's engine's, read-only (the tokenizer is shared as the chat routes share it)."""

    RUN_ON_WORKER = ("generate", "generate_predicted", "stream")

    def __init__(self, worker: ModelWorker):
        self._worker = worker

    def __getattr__(self, name: str):
        attr = getattr(self._worker.engine, name)  # AttributeError when the engine has no such thing
        if name not in self.RUN_ON_WORKER:
            return attr
        if name == "stream":
            raise AttributeError("stream")  # batches do not stream; a generator cannot cross the thread boundary

        def on_worker(*args, **kw):
            return self._worker.call(lambda engine: getattr(engine, name)(*args, **kw)).result()

        return on_worker


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters)"


__all__ = ["Lease", "ModelNotFound", "ModelPool", "ModelUnavailable", "PoolFull", "WorkerEngine"]
