"""The local mode of `rft serve`: OpenAI-compatible chat completions and model listing from rft engines.

Routes:
- `POST /v1/chat/completions`: the OpenAI body (validated by `rft.openai_chat.parse_chat_body`); JSON
  `chat.completion` with usage, or, with `"stream": true`, server-sent events `data: {chat.completion.chunk}`
  ending in `data: [DONE]` (`stream_options.include_usage` adds a final chunk with `choices: []` and usage).
  rft's extension `"rft": {"strategy": "best_of_n:n=8,selector=majority", "extract": "-?\\d+"}` (or
  `"reasoning:budget=128"`) answers with an inference strategy (rft.eval.inference; documented in rft.openai_chat).
  `model` may name any model reference (embedded name, model directory, `ckpt:<id>`, `alias:<name>`,
  `ft:<base>[:<suffix>]:<job id>`); it is loaded on demand into the server's bounded pool (`rft.serve.pool`,
  `max_models`); left out, the server's default model (`--model`) answers. The answer's `model` is the name asked.
- `GET /v1/models`: OpenAI's model objects for the default model, the embedded base models, the models in the
  local Hugging Face hub cache (`Org/Name`, as `rft models list` shows them), the fine-tuned models of succeeded
  jobs (`ft:` names) and the aliases (`alias:<name>`); base and hub models carry the engine they get
  (`rft.engine`: "fast" or "transformers"); `GET /v1/models/{id}`: one of those (or a model loaded now).
- `GET /health`: `{"status": "ok", "model": <default model or null>}`.
- OpenAI's Files API (`rft.serve.api_files`), graders run/validate (`rft.serve.api_graders`), Batch API
  (`rft.serve.api_batches`: batches run on the model their lines name, through the same pool), fine-tuning jobs
  (`rft.serve.api_jobs`, run by `rft.serve.scheduler`), and the dashboard.
Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}` with 400 (invalid request: bad JSON,
NaN/Infinity, nesting deeper than 32, a bad parameter), 401 (missing or wrong token), 403 (a Host outside the
allowlist, a cross-origin request), 404 (unknown model, `model_not_found`, or route), 413 (body over the limit),
415 (not `application/json`), 429 (rate limit), 503 (the default reference no longer resolves, a model fails
verification or loading, or every pool slot holds a model in use).

Each model's engine is owned by one worker thread (`rft.serve.worker`) that micro-batches requests; the pool
follows alias changes per request; the request/response logic is `rft.openai_chat`, shared with batch inference.
The front door (Host allowlist, cross-origin refusal, body limit, token, rate limit) is `rft.serve.guard`, shared
with the remote mode.
Simplified: the pool bounds the number of models, not their bytes; a full pool answers 503 rather than queueing.
How to run: `rft serve --model alias:production --max-models 2`, or in-process `rft.serve.create_app(ref)` (which
picks this app for every reference that is not an http(s) URL; `None`: no default model) with any ASGI client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from contextlib import asynccontextmanager, contextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from rft.errors import RftError
from rft.openai_chat import (ChatCall, ChatRequestError, check_call, chunk_body, new_id, parse_chat_body,
                             parse_json_body, usage_body)
from rft.serve.dashboard import dashboard_router
from rft.serve.guard import ServeLimits, error_response, harden, off_loop, read_json_bytes
from rft.serve.pool import Lease, ModelNotFound, ModelPool, ModelUnavailable, WorkerEngine
from rft.serve.worker import StreamJob

def create_local_app(model_ref: str | None, *, token: str | None = None, loader=None, refresh_s: float = 0.0,
                     max_batch: int = 32, max_models: int = 2, max_jobs: int = 1, log=lambda s: None,
                     limits: ServeLimits = ServeLimits(), clock: Callable[[], float] | None = None,
                     make_worker: Callable | None = None) -> FastAPI:
    """The ASGI app serving models from local engines; `model_ref` (embedded name, directory, `ckpt:<id>`,
    `alias:<name>`, `ft:...`; None: none) is the default model, loaded now (a bad reference raises RftError here).

    `max_models` bounds the models in memory (`rft.serve.pool.ModelPool`); `loader(resolved) -> engine` replaces
    the default LocalEngine loader and `make_worker(resolved, name)` the worker factory (tests); `refresh_s` is
    how long a reference's lookup is reused (0: every request). `limits` sets the body limit, the Host allowlist
    (None here: `serve` sets it for loopback binds) and the rate limit, whose `clock` tests inject.
    `app.state.pool` is the pool (closed on shutdown); `app.state.worker` the default model's worker as loaded
    at start (None without a default).
    """
    pool = ModelPool(model_ref, max_models=max_models, loader=loader, max_batch=max_batch, refresh_s=refresh_s,
                     log=log, make_worker=make_worker)
    try:
        default_worker = pool.preload()
    except BaseException:
        pool.close()
        raise

    @asynccontextmanager
    async def lifespan(app):
        app.state.scheduler.start()  # resumes jobs a dead server left running; queued ones stay queued
        yield
        app.state.scheduler.close()
        app.state.batches.close()
        pool.close()

    app = FastAPI(title="rft serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pool = pool
    app.state.worker = default_worker
    harden(app, token=token, limits=limits, clock=clock)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        first = (exc.errors() or [{}])[0]
        param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return error_response(ChatRequestError(f"invalid request: {first.get('msg', exc)}", param, status_code=422))

    started = int(time.time())

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_ref}

    @app.get("/v1/models")
    def list_models():
        try:
            return {"object": "list", "data": model_objects(pool, started)}
        except ChatRequestError as e:
            return error_response(e)

    @app.get("/v1/models/{model_id:path}")
    def get_model(model_id: str):
        try:
            for m in model_objects(pool, started):
                if m["id"] == model_id:
                    return m
        except ChatRequestError as e:
            return error_response(e)
        return error_response(ChatRequestError(f"The model '{_short(model_id)}' does not exist", "model",
                                               status_code=404, code="model_not_found"))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            raw = await read_json_bytes(request)
            call = await off_loop(len(raw), lambda b: parse_chat_body(parse_json_body(b)), raw)
            if call.model is None and pool.default_ref is None:
                raise ChatRequestError("you must provide a model parameter: this server has no default model "
                                       "(see GET /v1/models)", "model")
            lease = await pool.lease_async(call.model)
        except ChatRequestError as e:
            return error_response(e)
        except RftError as e:
            return error_response(pool_error(e))
        try:
            call = dataclasses.replace(call, model=lease.name)
            # tokenised off the loop; the worker checks again before generating (sharing the tokenizer with the
            # worker thread is safe: no caller changes its padding or truncation settings, its only mutable state)
            await off_loop(len(raw), check_call, lease.worker.engine, call)
            if not call.stream:
                res = await asyncio.wrap_future(lease.worker.submit_chat(call))
                return error_response(res) if isinstance(res, ChatRequestError) else JSONResponse(res)
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()
            job = lease.worker.submit_stream(call, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
            try:
                kind, val = await events.get()  # wait until the worker accepted the call: errors keep their status
            except BaseException:
                job.cancel()
                raise
            if kind == "error":
                return error_response(val)
            stream, lease = _sse(events, job, lease), None  # the stream releases the lease when it ends
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        except ChatRequestError as e:
            return error_response(e)
        finally:
            if lease is not None:
                lease.release()

    from rft.serve.api_batches import BatchService, make_batches_router
    from rft.serve.api_files import make_files_router
    from rft.serve.api_graders import make_graders_router

    app.include_router(make_files_router(limits=limits))  # OpenAI's Files API: /v1/files
    app.include_router(make_graders_router())  # OpenAI's graders run/validate (no private hosts for endpoint graders)
    batches = BatchService(model_ref, lease_engine=_batch_engines(pool), log=log)
    app.state.batches = batches
    app.include_router(make_batches_router(batches))  # OpenAI's Batch API: /v1/batches, on files from /v1/files
    from rft.serve.api_jobs import make_jobs_router
    from rft.serve.scheduler import JobScheduler

    app.state.scheduler = JobScheduler(max_running=max_jobs, log=log)  # queued jobs run in child processes
    app.include_router(make_jobs_router(app.state.scheduler))  # OpenAI's fine-tuning jobs: /v1/fine_tuning/jobs
    app.include_router(dashboard_router())  # the dashboard at /, on the same token
    return app


def pool_error(e: RftError) -> ChatRequestError:
    """A pool error in OpenAI's shape: 404 model_not_found, or 503 for a model that cannot be served now."""
    if isinstance(e, ModelNotFound):
        return ChatRequestError(e.message, "model", status_code=404, code="model_not_found")
    if isinstance(e, ModelUnavailable):
        return ChatRequestError(e.message, "model", status_code=503, type="server_error")
    return ChatRequestError(e.message, "model")


def model_objects(pool: ModelPool, started: int) -> list[dict]:
    """OpenAI's model objects: the default model, the embedded base models, the hub cache's models, fine-tuned
    models, aliases."""
    from rft import models
    from rft.engine.archs import with_engines

    out: dict[str, dict] = {}

    def add(mid: str, created: int, owned_by: str, **rft) -> None:
        out.setdefault(mid, {"id": mid, "object": "model", "created": int(created), "owned_by": owned_by,
                             "rft": rft})

    if pool.default_ref is not None:
        add(pool.default_ref, started, "rft", kind="default")
    for m in with_engines(models.list_models() + models.list_hub_models()):
        add(m["id"], _mtime(m["path"]), "rft", kind="base" if m["kind"] == "embedded" else m["kind"],
            status=m["status"], engine=m["engine"])
    try:
        from rft.registry import Registry

        reg = Registry()
        for m in models.list_fine_tuned(reg):
            add(m["id"], m["created"], "user", kind="fine-tuned", job_id=m["job_id"], base=m["base"],
                checkpoint=f"ckpt:{m['checkpoint_id']}")
        for a in reg.list_aliases():
            add(f"alias:{a['name']}", a["updated_at"], "user", kind="alias", checkpoint=f"ckpt:{a['checkpoint_id']}")
    except RftError as e:
        raise ChatRequestError(f"cannot read the registry: {e.message}", None, status_code=503) from None
    for m in pool.loaded():
        add(m["ref"], started, "rft", kind="loaded")
    return list(out.values())


def _mtime(path: str) -> int:
    import os

    try:
        return int(os.stat(path).st_mtime)
    except OSError:
        return 0


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters)"


def _batch_engines(pool: ModelPool):
    """`lease_engine(state)` of the batch runner: a context in which the batch's model (its pinned path, or its
    reference) is leased from the server's pool, as an engine whose generations run on that model's worker
    thread, in turn with the chat requests. A full pool is waited out."""

    @contextmanager
    def lease_engine(state: dict):
        ref = state.get("model_path") or state["model"]
        with pool.lease(ref, wait=True) as lease:
            yield WorkerEngine(lease.worker)

    return lease_engine


async def _sse(events: asyncio.Queue, job: StreamJob, lease: Lease):
    """chat.completion.chunk events for one call, then the usage chunk (if asked for) and [DONE]; the lease on
    the model ends with the stream."""
    cid, created, with_usage, name = new_id(), int(time.time()), job.call.include_usage, lease.name

    def event(**kw) -> str:
        c = chunk_body(id=cid, created=created, model_name=name, **kw)
        if not with_usage:
            c.pop("usage")  # OpenAI sends the usage field only when stream_options.include_usage is set
        return f"data: {json.dumps(c)}\n\n"

    try:
        usage = None
        if job.call.params.n == 1:  # streamed token by token: the role goes out before the first token
            yield event(delta={"role": "assistant", "content": ""})
        while usage is None:
            kind, val = await events.get()
            if kind == "delta":
                yield event(delta={"content": val})
            elif kind == "done":
                yield event(delta={}, finish_reason=val.finish_reason)
                usage = usage_body([val])
            elif kind == "body":  # n > 1, generated whole: each choice in three chunks
                for ch in val["choices"]:
                    yield event(index=ch["index"], delta={"role": "assistant", "content": ""})
                    yield event(index=ch["index"], delta={"content": ch["message"]["content"]})
                    yield event(index=ch["index"], delta={}, finish_reason=ch["finish_reason"])
                usage = val["usage"]
            elif kind == "error":
                yield f"data: {json.dumps(val.to_dict())}\n\n"
                return
        if with_usage:
            yield event(empty_choices=True, usage=usage)
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # a client that disconnected stops the generation
        lease.release()
