"""The FastAPI app behind `rft serve`: OpenAI-compatible chat completions and model listing.

Routes:
- `POST /v1/chat/completions`: the OpenAI body (validated by `rft.openai_chat.parse_chat_body`); JSON
  `chat.completion` with usage, or, with `"stream": true`, server-sent events `data: {chat.completion.chunk}`
  ending in `data: [DONE]` (`stream_options.include_usage` adds a final chunk with `choices: []` and usage).
- `GET /v1/models`, `GET /v1/models/{id}`: the one served model, named as the reference given to the server.
- `GET /health`: `{"status": "ok", "model": ...}`.
Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}` with 400 (invalid request: bad JSON,
NaN/Infinity, nesting deeper than 32, a bad parameter), 401 (missing or wrong token), 403 (a Host outside the
allowlist, a cross-origin request), 404 (unknown model or route), 413 (body over the limit), 415 (not
`application/json`), 429 (rate limit), 503 (the reference no longer resolves).

Security boundary (the front door is `rft.serve.guard`, shared with the remote mode): with a token
(`create_app(token=...)`; `rft serve` reads `RFT_API_TOKEN`), every route and every path, including unknown
ones, needs `Authorization: Bearer <token>` (compared in constant time); a public bind refuses tokens shorter
than 32 characters. Loopback binds check the `Host` header against an allowlist (DNS rebinding); no bind
accepts a state-changing request from a cross-origin page, and no CORS header is ever sent. Request bodies are
limited (4 MiB by default), parsed, validated and tokenised off the event loop. The server speaks plain HTTP:
off loopback, the token and the prompts cross the network in clear unless a TLS proxy sits in front. Rate
limiting is optional (`rate_limit` requests per minute per token); there is no per-user isolation: anyone
with the token can use the whole model.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import os
import socket
import time
from contextlib import asynccontextmanager
from typing import Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rft.errors import RftError
from rft.openai_chat import ChatCall, ChatRequestError, check_call, chunk_body, new_id, parse_chat_body, parse_json_body
from rft.serve.guard import LOOPBACK_HOSTS, ServeLimits, error_response, harden, off_loop, read_json_bytes
from rft.serve.worker import ModelWorker, StreamJob

LOOPBACK_NAMES = ("localhost",)
DEFAULT_MAX_BODY_MB = 4
MIN_TOKEN_CHARS = 32
TOKEN_HOWTO = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other host name may resolve off-machine


def create_app(model_ref: str, *, token: str | None = None, served_name: str | None = None, loader=None,
               refresh_s: float = 0.0, max_batch: int = 32, log=lambda s: None, remote_model: str | None = None,
               api_key_env: str = "OPENAI_API_KEY", transport=None, limits: ServeLimits = ServeLimits(),
               clock: Callable[[], float] | None = None):
    """The ASGI app serving `model_ref` (embedded name, directory, `ckpt:<id>`, `alias:<name>`).

    Loads the engine now (a bad reference raises RftError here). `loader(resolved) -> engine` replaces the
    default LocalEngine loader (tests); `refresh_s` is how often the reference is re-resolved (0: before
    every batch). `limits` sets the body limit, the Host allowlist (None here: `serve` sets it for loopback
    binds) and the rate limit, whose `clock` tests inject. `app.state.worker` is the ModelWorker; the app
    closes it on shutdown.
    """
    from rft.serve.remote import create_remote_app, is_remote

    if is_remote(model_ref):  # a remote OpenAI-compatible endpoint behind the same front end
        return create_remote_app(model_ref, remote_model, token=token, api_key_env=api_key_env, transport=transport,
                                 limits=limits, clock=clock)
    worker = ModelWorker(model_ref, served_name=served_name, loader=loader, refresh_s=refresh_s,
                         max_batch=max_batch, log=log)
    name = worker.served_name

    @asynccontextmanager
    async def lifespan(app):
        yield
        worker.close()

    app = FastAPI(title="rft serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    harden(app, token=token, limits=limits, clock=clock)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        code = "not_found" if exc.status_code == 404 else None
        return error_response(ChatRequestError(str(exc.detail), None, status_code=exc.status_code, code=code))

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

    return app


async def _sse(events: asyncio.Queue, job: StreamJob, name: str):
    """chat.completion.chunk events for one call, then the usage chunk (if asked for) and [DONE]."""
    from rft.openai_chat import usage_body

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


def bind_hosts(host: str, extra: Sequence[str] = ()) -> tuple[str, ...] | None:
    """The Host allowlist for a bind address: loopback names plus the address itself plus `extra` on loopback
    binds; only `extra` (or None: any Host) elsewhere."""
    if is_loopback(host):
        own = host if not (":" in host and not host.startswith("[")) else f"[{host}]"
        return tuple(dict.fromkeys((*LOOPBACK_HOSTS, own, *extra)))
    return tuple(extra) or None


def check_serve_options(host: str, port: int, token: str | None, max_body_mb: float, rate_limit: int) -> None:
    """Refuse bad `rft serve` settings before anything is loaded or bound (one-line RftErrors)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise RftError(f"--port must be between 1 and 65535, got {port}")
    if not (isinstance(max_body_mb, (int, float)) and math.isfinite(max_body_mb) and 0 < max_body_mb <= 1024):
        raise RftError(f"--max-body-mb must be more than 0 and at most 1024, got {max_body_mb}")
    if rate_limit < 0:
        raise RftError(f"--rate-limit must be 0 (off) or a number of requests per minute, got {rate_limit}")
    if is_loopback(host):
        return
    if not token:
        raise RftError(f"refusing to bind to {host} without a token: anyone who can reach it could use the model; "
                       f"set RFT_API_TOKEN to a random secret of at least {MIN_TOKEN_CHARS} characters "
                       f"({TOKEN_HOWTO}) or bind to 127.0.0.1")
    if len(token) < MIN_TOKEN_CHARS:
        raise RftError(f"refusing to bind to {host} with a {len(token)}-character RFT_API_TOKEN: a public server "
                       f"needs at least {MIN_TOKEN_CHARS} random characters; generate one with {TOKEN_HOWTO}")


def _listen_socket(host: str, port: int) -> socket.socket:
    """The bound socket uvicorn will serve on: a port in use or not ours is a one-line RftError, not a log."""
    name = host.strip("[]")
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it Nagle's algorithm and delayed ACKs add ~40 ms to every small response.
    sock = socket.socket(socket.AF_INET6 if ":" in name else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
    try:
        sock.bind((name, port))
    except OSError as e:
        sock.close()
        raise RftError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(model_ref: str, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log=print, remote_model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
          max_body_mb: float = DEFAULT_MAX_BODY_MB, allowed_hosts: Sequence[str] = (), rate_limit: int = 0) -> None:
    """Run the server with uvicorn until interrupted. Off loopback a token of at least 32 characters is
    required (RFT_API_TOKEN); every setting is checked before the model is loaded or the port bound."""
    import uvicorn

    token = token if token is not None else (os.environ.get("RFT_API_TOKEN") or None)
    check_serve_options(host, port, token, max_body_mb, rate_limit)
    limits = ServeLimits(max_body_bytes=int(max_body_mb * 1024 * 1024), allowed_hosts=bind_hosts(host, allowed_hosts),
                         rate_limit=rate_limit)
    app = create_app(model_ref, token=token, log=log, remote_model=remote_model, api_key_env=api_key_env,
                     limits=limits)
    sock = _listen_socket(host, port)
    auth = "bearer token required" if token else "no token (loopback only)"
    hosts = "any Host" if limits.allowed_hosts is None else "Host " + ", ".join(limits.allowed_hosts)
    rate = f"; at most {rate_limit} requests/min per token" if rate_limit else ""
    front = f"{auth}; {hosts}; bodies up to {max_body_mb:g} MiB{rate}"
    if getattr(app.state, "worker", None) is None:
        log(f"serving '{remote_model}' from the remote endpoint {model_ref} on http://{host}:{port}/v1; {front}")
    else:
        w = app.state.worker
        log(f"serving '{model_ref}' ({w.resolved.path}) on http://{host}:{port}/v1; {front}"
            "; requests are micro-batched on one engine thread")
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
