"""The FastAPI app behind `rft serve`: OpenAI-compatible chat completions and model listing.

Routes:
- `POST /v1/chat/completions`: the OpenAI body (validated by `rft.openai_chat.parse_chat_body`); JSON
  `chat.completion` with usage, or, with `"stream": true`, server-sent events `data: {chat.completion.chunk}`
  ending in `data: [DONE]` (`stream_options.include_usage` adds a final chunk with `choices: []` and usage).
- `GET /v1/models`, `GET /v1/models/{id}`: the one served model, named as the reference given to the server.
- `GET /health`: `{"status": "ok", "model": ...}`.
Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}` with 400 (invalid request),
401 (missing or wrong token), 404 (unknown model or route), 503 (the reference no longer resolves).

Security boundary: with a token (`create_app(token=...)`; `rft serve` reads `RFT_API_TOKEN`), every route
and every path, including unknown ones, needs `Authorization: Bearer <token>` (compared in constant time).
The server speaks plain HTTP: off loopback, the token and the prompts cross the network in clear unless a
TLS proxy sits in front. There is no rate limiting and no per-user isolation: anyone with the token can
use the whole model.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rft.errors import RftError
from rft.openai_chat import ChatRequestError, chunk_body, new_id, parse_chat_body
from rft.serve.worker import ModelWorker, StreamJob

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other host name may resolve off-machine


def _error_response(e: ChatRequestError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(e.to_dict(), status_code=e.status_code, headers=headers)


class BearerAuth:
    """ASGI middleware: every HTTP request and websocket needs `Authorization: Bearer <token>`, else 401."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        value = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                value = v
                break
        scheme, _, given = value.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        msg = "missing bearer token" if not value else "invalid bearer token"
        e = ChatRequestError(f"{msg}: send 'Authorization: Bearer <RFT_API_TOKEN>'", None, status_code=401,
                             code="invalid_api_key")
        resp = _error_response(e, headers={"WWW-Authenticate": "Bearer"})
        await resp(scope, receive, send)


def create_app(model_ref: str, *, token: str | None = None, served_name: str | None = None, loader=None,
               refresh_s: float = 0.0, max_batch: int = 32, log=lambda s: None, remote_model: str | None = None,
               api_key_env: str = "OPENAI_API_KEY", transport=None):
    """The ASGI app serving `model_ref` (embedded name, directory, `ckpt:<id>`, `alias:<name>`).

    Loads the engine now (a bad reference raises RftError here). `loader(resolved) -> engine` replaces the
    default LocalEngine loader (tests); `refresh_s` is how often the reference is re-resolved (0: before
    every batch). `app.state.worker` is the ModelWorker; the app closes it on shutdown.
    """
    from rft.serve.remote import create_remote_app, is_remote

    if is_remote(model_ref):  # a remote OpenAI-compatible endpoint behind the same front end
        return create_remote_app(model_ref, remote_model, token=token, api_key_env=api_key_env, transport=transport)
    worker = ModelWorker(model_ref, served_name=served_name, loader=loader, refresh_s=refresh_s,
                         max_batch=max_batch, log=log)
    name = worker.served_name

    @asynccontextmanager
    async def lifespan(app):
        yield
        worker.close()

    app = FastAPI(title="rft serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    if token:
        app.add_middleware(BearerAuth, token=token)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        code = "not_found" if exc.status_code == 404 else None
        return _error_response(ChatRequestError(str(exc.detail), None, status_code=exc.status_code, code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        first = (exc.errors() or [{}])[0]
        param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return _error_response(ChatRequestError(f"invalid request: {first.get('msg', exc)}", param, status_code=422))

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
            return _error_response(unknown_model(model_id))
        return model_obj()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as e:
            return _error_response(ChatRequestError(f"the request body is not valid JSON: {e}", None))
        try:
            call = parse_chat_body(body)
            if call.model is not None and call.model != name:
                raise unknown_model(call.model)
        except ChatRequestError as e:
            return _error_response(e)
        if not call.stream:
            res = await asyncio.wrap_future(worker.submit_chat(call))
            if isinstance(res, ChatRequestError):
                return _error_response(res)
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
            return _error_response(val)
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


def serve(model_ref: str, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log=print, remote_model: str | None = None, api_key_env: str = "OPENAI_API_KEY") -> None:
    """Run the server with uvicorn until interrupted. Off loopback a token is required (RFT_API_TOKEN)."""
    import uvicorn

    token = token if token is not None else (os.environ.get("RFT_API_TOKEN") or None)
    if not is_loopback(host) and not token:
        raise RftError(f"refusing to bind to {host} without a token: anyone who can reach it could use the model",
                       hint="set RFT_API_TOKEN to a long random secret (clients send it as 'Authorization: "
                            "Bearer <token>'), or bind to 127.0.0.1")
    app = create_app(model_ref, token=token, log=log, remote_model=remote_model, api_key_env=api_key_env)
    auth = "bearer token required" if token else "no token (loopback only)"
    if getattr(app.state, "worker", None) is None:
        log(f"serving '{remote_model}' from the remote endpoint {model_ref} on http://{host}:{port}/v1; {auth}")
    else:
        w = app.state.worker
        log(f"serving '{model_ref}' ({w.resolved.path}) on http://{host}:{port}/v1; {auth}"
            "; requests are micro-batched on one engine thread")
    uvicorn.run(app, host=host, port=port, log_level="info")
