"""The entry of `rft serve`: which app answers, and the server that runs it.

`create_app(ref)` returns the local app (`rft.serve.local`: rft engines on worker threads, a bounded pool of
models loaded on demand, `ref` the default one; None: no default) for a model reference, or the remote proxy (`rft.serve.remote`) for an http(s) URL of an OpenAI-compatible endpoint; both
share the front door (`rft.serve.guard`) and OpenAI's routes and error shapes. `serve(ref, host, port)` checks
the settings (`check_serve_options`), builds the Host allowlist (`bind_hosts`), binds the port and runs uvicorn.
This module imports both apps and neither imports it or the other.

Security boundary (the front door is `rft.serve.guard`, shared by both modes): with a token
(`create_app(token=...)`; `rft serve` reads `RFT_API_TOKEN`), every route and every path, including unknown
ones, needs `Authorization: Bearer <token>` (compared in constant time); a public bind refuses tokens shorter
than 32 characters. Loopback binds check the `Host` header against an allowlist (DNS rebinding); no bind
accepts a state-changing request from a cross-origin page, and no CORS header is ever sent. Request bodies are
limited (4 MiB by default), parsed, validated and tokenised off the event loop. The server speaks plain HTTP:
off loopback, the token and the prompts cross the network in clear unless a TLS proxy sits in front. Rate
limiting is optional (`rate_limit` requests per minute per token); there is no per-user isolation: anyone
with the token can use the whole model.
How to run: `rft serve --model alias:production` and point any OpenAI client at `http://127.0.0.1:8000/v1`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from typing import Callable, Sequence

from fastapi import FastAPI

from rft.errors import RftError
from rft.serve.guard import LOOPBACK_HOSTS, ServeLimits
from rft.serve.local import create_local_app
from rft.serve.remote import create_remote_app, is_remote

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


def create_app(model_ref: str | None, *, token: str | None = None, loader=None, refresh_s: float = 0.0,
               max_batch: int = 32, max_models: int = 2, max_jobs: int = 1, log=lambda s: None,
               remote_model: str | None = None,
               api_key_env: str = "OPENAI_API_KEY", transport=None, limits: ServeLimits = ServeLimits(),
               clock: Callable[[], float] | None = None, make_worker=None) -> FastAPI:
    """The ASGI app serving `model_ref`: `rft.serve.local.create_local_app` for a model reference (embedded name,
    directory, `ckpt:<id>`, `alias:<name>`, `ft:...`, or None: models on demand only), with at most `max_models`
    in memory; `rft.serve.remote.create_remote_app` for an http(s) URL of an OpenAI-compatible endpoint
    (`remote_model`, `api_key_env` and `transport` are the remote's; `loader`, `make_worker`, `refresh_s`,
    `max_batch` and `log` the local engines'; `max_jobs` the fine-tuning jobs run at once). A bad reference raises
    RftError here."""
    if model_ref is not None and is_remote(model_ref):  # a remote OpenAI-compatible endpoint behind the same front end
        return create_remote_app(model_ref, remote_model, token=token, api_key_env=api_key_env, transport=transport,
                                 limits=limits, clock=clock)
    app = create_local_app(model_ref, token=token, loader=loader, refresh_s=refresh_s, max_batch=max_batch,
                           max_models=max_models, max_jobs=max_jobs, log=log, limits=limits, clock=clock,
                           make_worker=make_worker)
    from rft.serve.api_review import review_router

    app.include_router(review_router())  # people's review of the grader (issue 18): /v1/rft/jobs/{id}/review/...
    from rft.serve.api_replay import replay_router

    app.include_router(replay_router())  # replay and explain (issue 18): /v1/rft/jobs/{id}/replay, .../explain
    return app


def bind_hosts(host: str, extra: Sequence[str] = ()) -> tuple[str, ...] | None:
    """The Host allowlist for a bind address: loopback names plus the address itself plus `extra` on loopback
    binds; only `extra` (or None: any Host) elsewhere."""
    if is_loopback(host):
        own = host if not (":" in host and not host.startswith("[")) else f"[{host}]"
        return tuple(dict.fromkeys((*LOOPBACK_HOSTS, own, *extra)))
    return tuple(extra) or None


MAX_MODELS_LIMIT = 64
MAX_JOBS_LIMIT = 64


def check_serve_options(host: str, port: int, token: str | None, max_body_mb: float, rate_limit: int,
                        max_models: int = 2, max_jobs: int = 1) -> None:
    """Refuse bad `rft serve` settings before anything is loaded or bound (one-line RftErrors)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise RftError(f"--port must be between 1 and 65535, got {port}")
    if isinstance(max_models, bool) or not isinstance(max_models, int) or not 1 <= max_models <= MAX_MODELS_LIMIT:
        raise RftError(f"--max-models must be between 1 and {MAX_MODELS_LIMIT} (models kept in memory at once), "
                       f"got {max_models}")
    if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or not 1 <= max_jobs <= MAX_JOBS_LIMIT:
        raise RftError(f"--max-jobs must be between 1 and {MAX_JOBS_LIMIT} (fine-tuning jobs run at once), got {max_jobs}")
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


def serve(model_ref: str | None, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log=print, remote_model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
          max_body_mb: float = DEFAULT_MAX_BODY_MB, allowed_hosts: Sequence[str] = (), rate_limit: int = 0,
          max_models: int = 2, max_jobs: int = 1) -> None:
    """Run the server with uvicorn until interrupted. Off loopback a token of at least 32 characters is
    required (RFT_API_TOKEN); every setting is checked before the model is loaded or the port bound.
    `model_ref` None: no default model, every request names its own (loaded on demand, `max_models` at once)."""
    import uvicorn

    token = token if token is not None else (os.environ.get("RFT_API_TOKEN") or None)
    check_serve_options(host, port, token, max_body_mb, rate_limit, max_models, max_jobs)
    if remote_model is not None and not (model_ref is not None and is_remote(model_ref)):
        raise RftError("--remote-model names a model of a remote endpoint: it needs an http(s) --model")
    if model_ref is not None and is_remote(model_ref) and max_models != 2:
        raise RftError("--max-models applies to local models; a remote endpoint (http(s) --model) serves one")
    limits = ServeLimits(max_body_bytes=int(max_body_mb * 1024 * 1024), allowed_hosts=bind_hosts(host, allowed_hosts),
                         rate_limit=rate_limit)
    app = create_app(model_ref, token=token, log=log, remote_model=remote_model, api_key_env=api_key_env,
                     limits=limits, max_models=max_models, max_jobs=max_jobs)
    sock = _listen_socket(host, port)
    auth = "bearer token required" if token else "no token (loopback only)"
    hosts = "any Host" if limits.allowed_hosts is None else "Host " + ", ".join(limits.allowed_hosts)
    rate = f"; at most {rate_limit} requests/min per token" if rate_limit else ""
    front = f"{auth}; {hosts}; bodies up to {max_body_mb:g} MiB{rate}"
    if getattr(app.state, "pool", None) is None:
        log(f"serving '{remote_model}' from the remote endpoint {model_ref} on http://{host}:{port}/v1; {front}")
    else:
        w = app.state.worker
        what = f"'{model_ref}' ({w.resolved.path}) and" if w is not None else "no default model;"
        log(f"serving {what} any model a request names (at most {max_models} in memory) on "
            f"http://{host}:{port}/v1; {front}; requests are micro-batched on one engine thread per model")
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
