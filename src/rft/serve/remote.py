"""`rft serve --model http(s)://host/v1 --remote-model NAME`: the same OpenAI-compatible front end (routes, token
check, error shapes) in front of a remote OpenAI-compatible endpoint instead of a local engine.

Requests are forwarded as they are (the remote decides which fields it accepts), with `model` set to the remote
model name and the remote's key (from the environment variable named by `api_key_env`) as the bearer token;
responses, usage and errors come back unchanged, streams are relayed line by line. Connection failures and
timeouts become a 502 / 504 in OpenAI's error shape. No retries here: a client of a server retries itself
(batch jobs against a remote endpoint have their own retry policy, see rft.batch). The front door is the local
mode's (`rft.serve.guard`: Host allowlist, cross-origin refusal, body limit, token, rate limit), and bodies are
parsed as strictly as there: NaN, Infinity, 1e999 and deep nesting are a 400 here and never forwarded.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Callable

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from rft.errors import RftError
from rft.openai_chat import ChatRequestError, parse_json_body
from rft.serve.guard import ServeLimits, error_response, harden, off_loop, read_json_bytes


def is_remote(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def _error(message: str, status: int, param: str | None = None, code: str | None = None) -> Response:
    return error_response(ChatRequestError(message, param, status_code=status, code=code))


def create_remote_app(base_url: str, remote_model: str | None, *, token: str | None = None,
                      api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 600.0,
                      transport: httpx.AsyncBaseTransport | None = None, limits: ServeLimits = ServeLimits(),
                      clock: Callable[[], float] | None = None) -> FastAPI:
    """The ASGI app forwarding /v1/chat/completions to `base_url` (see the module docstring)."""
    if not remote_model:
        raise RftError(f"serving the remote endpoint {base_url} needs --remote-model NAME (the model it serves)")
    base = base_url.rstrip("/")
    key = os.environ.get(api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout_s, transport=transport)
    name = remote_model

    @asynccontextmanager
    async def lifespan(app):
        yield
        await client.aclose()

    app = FastAPI(title="rft serve (remote)", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    harden(app, token=token, limits=limits, clock=clock)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return _error(f"invalid request: {exc}", 422)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "remote": base}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": base}]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id != name:
            return _error(f"The model '{model_id}' does not exist; this server serves '{name}'", 404, "model",
                          "model_not_found")
        return {"id": name, "object": "model", "created": 0, "owned_by": base}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            raw = await read_json_bytes(request)
            body = await off_loop(len(raw), parse_json_body, raw)
        except ChatRequestError as e:
            return error_response(e)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error("'messages' must be a non-empty list", 400, "messages")
        if body.get("model") not in (None, name):
            return _error(f"The model '{body['model']}' does not exist; this server serves '{name}'", 404, "model",
                          "model_not_found")
        body = dict(body) | {"model": name}
        try:
            if not body.get("stream"):
                r = await client.post("/chat/completions", json=body)
                return Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type",
                                                                                                "application/json"))
            req = client.build_request("POST", "/chat/completions", json=body)
            r = await client.send(req, stream=True)
        except httpx.TimeoutException as e:
            return _error(f"the remote endpoint {base} timed out: {e}", 504, code="upstream_timeout")
        except httpx.HTTPError as e:
            return _error(f"the remote endpoint {base} could not be reached: {e}", 502, code="upstream_unreachable")
        if r.status_code != 200:  # an error before the stream started keeps its status and body
            content = await r.aread()
            await r.aclose()
            return Response(content, status_code=r.status_code, media_type=r.headers.get("content-type", "application/json"))

        async def relay():
            try:
                async for line in r.aiter_lines():
                    yield line + "\n"
            finally:
                await r.aclose()

        return StreamingResponse(relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app
