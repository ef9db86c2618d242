"""The local mode of `rft serve`: OpenAI-compatible chat completions and model listing from an rft engine.

Routes:
- `POST /v1/chat/completions`: the OpenAI body (validated by `rft.openai_chat.parse_chat_body`); JSON
  `chat.completion` with usage, or, with `"stream": true`, server-sent events `data: {chat.completion.chunk}`
  ending in `data: [DONE]` (`stream_options.include_usage` adds a final chunk with `choices: []` and usage).
- `GET /v1/models`, `GET /v1/models/{id}`: the one served model, named as the reference given to the server.
- `GET /health`: `{"status": "ok", "model": ...}`.
- OpenAI's Files API (`rft.serve.api_files`), graders run/validate (`rft.serve.api_graders`) and Batch API
  (`rft.serve.api_batches`: batches run on their own engine, loaded with this server's loader), and the dashboard.
Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}` with 400 (invalid request: bad JSON,
NaN/Infinity, nesting deeper than 32, a bad parameter), 401 (missing or wrong token), 403 (a Host outside the
allowlist, a cross-origin request), 404 (unknown model or route), 413 (body over the limit), 415 (not
`application/json`), 429 (rate limit), 503 (the reference no longer resolves).

The engine is owned by one worker thread (`rft.serve.worker`) that micro-batches requests and follows alias
changes; the request/response logic is `rft.openai_chat`, shared with batch inference. The front door (Host
allowlist, cross-origin refusal, body limit, token, rate limit) is `rft.serve.guard`, shared with the remote mode.
Simplified: one model per server, named as the reference it was started with.
How to run: `rft serve --model alias:production`, or in-process `rft.serve.create_app(ref)` (which picks this
app for every reference that is not an http(s) URL) with any ASGI client.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from rft.openai_chat import (ChatCall, ChatRequestError, check_call, chunk_body, new_id, parse_chat_body,
                             parse_json_body, usage_body)
from rft.serve.dashboard import dashboard_router
from rft.serve.guard import ServeLimits, error_response, harden, off_loop, read_json_bytes
from rft.serve.worker import ModelWorker, StreamJob


def create_local_app(model_ref: str, *, token: str | None = None, served_name: str | None = None, loader=None,
                     refresh_s: float = 0.0, max_batch: int = 32, log=lambda s: None,
                     limits: ServeLimits = ServeLimits(), clock: Callable[[], float] | None = None) -> FastAPI:
    """The ASGI app serving `model_ref` (embedded name, directory, `ckpt:<id>`, `alias:<name>`) from a local engine.

    Loads the engine now (a bad reference raises RftError here). `loader(resolved) -> engine` replaces the
    default LocalEngine loader (tests); `refresh_s` is how often the reference is re-resolved (0: before
    every batch). `limits` sets the body limit, the Host allowlist (None here: `serve` sets it for loopback
    binds) and the rate limit, whose `clock` tests inject. `app.state.worker` is the ModelWorker; the app
    closes it on shutdown.
    """
    worker = ModelWorker(model_ref, served_name=served_name, loader=loader, refresh_s=refresh_s,
                         max_batch=max_batch, log=log)
    name = worker.served_name

    @asynccontextmanager
    async def lifespan(app):
        app.state.scheduler.start()  # resumes jobs a dead server left running; queued ones stay queued
        yield
        app.state.scheduler.close()
        app.state.batches.close()
        worker.close()

    app = FastAPI(title="rft serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    harden(app, token=token, limits=limits, clock=clock)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        first = (exc.errors() or [{}])[0]
        param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return error_response(ChatRequestError(f"invalid request: {first.get('msg', exc)}", param, status_code=422))

    def model_obj() -> dict:
        return {"id": name, "object": "model", "created": worker.loaded_at, "owned_by": "rft"}

    def unknown_model(model: str) -> ChatRequestError:
        return ChatRequestError(f"The model '{model}' does not exist; this server serves '{name}'", "model",
                                status_code=404, code="model_not_found")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_obj()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id != name:
            return error_response(unknown_model(model_id))
        return model_obj()

    def prepare(raw: bytes) -> ChatCall:
        """Parse, validate and tokenise one request (on a threadpool thread: a long prompt takes seconds to
        tokenise, which must stall neither the event loop nor the engine's worker thread). The worker checks
        the call again before generating: the alias may have moved to another model in between. Sharing the
        tokenizer with the worker thread is safe because no caller changes its padding or truncation settings
        (the fast tokenizer's only mutable state)."""
        call = parse_chat_body(parse_json_body(raw))
        if call.model is not None and call.model != name:
            raise unknown_model(call.model)
        check_call(worker.engine, call)
        return call

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            raw = await read_json_bytes(request)
            call = await off_loop(len(raw), prepare, raw)
        except ChatRequestError as e:
            return error_response(e)
        if not call.stream:
            res = await asyncio.wrap_future(worker.submit_chat(call))
            if isinstance(res, ChatRequestError):
                return error_response(res)
            return JSONResponse(res)

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = worker.submit_stream(call, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
        try:
            kind, val = await events.get()  # wait until the worker accepted the call: errors keep their status
        except BaseException:
            job.cancel()
            raise
        if kind == "error":
            return error_response(val)
        return StreamingResponse(_sse(events, job, name), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    from rft.serve.api_batches import BatchService, make_batches_router
    from rft.serve.api_files import make_files_router
    from rft.serve.api_graders import make_graders_router

    app.include_router(make_files_router(limits=limits))  # OpenAI's Files API: /v1/files
    app.include_router(make_graders_router())  # OpenAI's graders run/validate (no private hosts for endpoint graders)
    batches = BatchService(model_ref, engine_for=_batch_engines(worker), log=log)
    app.state.batches = batches
    app.include_router(make_batches_router(batches))  # OpenAI's Batch API: /v1/batches, on files from /v1/files
    from rft.serve.api_jobs import make_jobs_router
    from rft.serve.scheduler import JobScheduler

    app.state.scheduler = JobScheduler(log=log)  # queued jobs run in child processes, one at a time
    app.include_router(make_jobs_router(app.state.scheduler))  # OpenAI's fine-tuning jobs: /v1/fine_tuning/jobs
    app.include_router(dashboard_router())  # the dashboard at /, on the same token
    return app


def _batch_engines(worker: ModelWorker):
    """`engine_for(state)` of the batch runner: an engine of its own per model path, loaded with the server's
    loader (the serving engine belongs to the worker thread), kept for the next batch on the same model."""
    import threading

    from rft import models

    cache: dict = {}
    lock = threading.Lock()

    def engine_for(state: dict):
        ref = state.get("model_path") or state["model"]
        with lock:
            if ref not in cache:
                cache.clear()  # one batch engine at a time
                cache[ref] = worker.loader(models.resolve(ref))
            return cache[ref]

    return engine_for


async def _sse(events: asyncio.Queue, job: StreamJob, name: str):
    """chat.completion.chunk events for one call, then the usage chunk (if asked for) and [DONE]."""
    cid, created, with_usage = new_id(), int(time.time()), job.call.include_usage

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
