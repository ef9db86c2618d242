"""The front door of `rft serve`: what every HTTP request passes before a route sees it.

`harden(app, token=..., limits=ServeLimits(...), clock=...)` installs, outermost first, on the local and the
remote app alike:

- `Guard`: the `Host` header allowlist (DNS rebinding: a page on evil.example whose name re-resolves to
  127.0.0.1 sends `Host: evil.example`; loopback binds accept only localhost / 127.0.0.1 / [::1] and the bind
  address, with any port, plus `--allowed-host`), then cross-origin refusal (a POST/PUT/PATCH/DELETE or a CORS
  preflight whose `Origin` is not the server's own, or with `Sec-Fetch-Site: cross-site`, is a 403; no
  `Access-Control-Allow-*` header is ever sent), then the request-body limit (413 when `Content-Length`
  is over it, before a byte of the body is read; bytes are counted as they arrive for chunked bodies);
  `POST /v1/files` (uploads) has its own, larger limit, `ServeLimits.max_upload_bytes`.
- `BearerAuth`: `Authorization: Bearer <token>` on every route when a token is set (401 otherwise). The API
  (`/v1/...`, `/health`) takes only the bearer token. The dashboard's pages (every other path) also take a
  session cookie that `POST /login` sets after checking the token once (`Sessions`): a random session id
  mapped to an expiry in server memory, never the token; HttpOnly, SameSite=Strict. A browser's page GET
  (`Accept: text/html`) without either is redirected to `/login`, anything else is the 401; `/login` itself is open (it checks the token), and so is `/static/`, the
  dashboard's own scripts and styles (the files shipped in the package, no data), which the login page needs.
- CSRF (`Sessions.csrf_token` / `check_csrf`): every state-changing dashboard form carries a token derived
  from the session id with a per-process secret (HMAC-SHA256); the dashboard's routes refuse a POST without it
  (403), on top of the cross-origin refusal. Without a server token the "session" is the anonymous one and
  the CSRF token is per process: a page on another site can neither read it nor get past the Origin check.
- `Access`: who the caller is and whether their role may use the route. A registry without users (the
  single-user mode) keeps the behaviour above: `BearerAuth` with the server token, or no check at all without
  one. Once the registry has users (`rft users add`), every request needs a user's token (`Authorization:
  Bearer <token>`, or a dashboard session opened with it at `/login`; the server token is no longer a user),
  even on loopback; `ROUTE_ROLES` maps each (method, route path) to the least role (`rft.registry.access.ROLES`;
  "public" for the login page and static files), a route missing from it is refused (403), and trainers
  may cancel, pause or resume only their own jobs. The user is then the acting user of the request
  (`rft.registry.access.acting_as`): the registry records it on new jobs, files and batches and in the audit
  log, and hides other teams' rows. Refusals are 403 `permission_denied` in OpenAI's shape.
- `RateLimit` (optional): a token bucket of N requests per minute per bearer token, or per client address
  when the server has no token; 429 with `Retry-After`. `/health` is not counted (probes poll it).
It also answers HTTP errors raised before a route runs (an unknown path: 404 `not_found`; a wrong method: 405)
in OpenAI's error shape, the same for both apps.

Routes read JSON through `read_json_bytes` (415 unless `Content-Type: application/json`, so the simple
requests a web page may send cross-origin without a preflight, `text/plain`, form posts, never reach the
model) and parse and validate it off the event loop with `off_loop` (a thread; long bodies take turns on a
few threads, so many of them cannot crowd out the small ones).

Security boundary, stated honestly: the Origin/Sec-Fetch-Site check stops browsers, which always send those
headers cross-origin; a non-browser client can send any header and is stopped only by the token. The rate
limit keys on the client address seen by the server: behind a reverse proxy every client shares one bucket.
Buckets live in memory, per process. The body limit bounds one request, not the number of concurrent ones.
Dashboard sessions live in memory, per process: a restart logs everyone out. The session cookie is not marked
`Secure` (the server speaks plain HTTP; put a TLS proxy in front off loopback). Login attempts are limited only
by the optional rate limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rft.openai_chat import ChatRequestError

PUBLIC = "public"  # no user needed (the login page, the dashboard's static files)
# The least role for every route of the local and remote apps, by (method, route path as declared).
# tests/serve/test_permissions_http.py walks the routes of fully built apps and fails on any route missing here.
ROUTE_ROLES: dict[tuple[str, str], str] = {
    ("GET", "/health"): "viewer",
    ("GET", "/v1/models"): "viewer",
    ("GET", "/v1/models/{model_id:path}"): "viewer",
    ("POST", "/v1/chat/completions"): "viewer",
    ("POST", "/v1/files"): "trainer",
    ("GET", "/v1/files"): "viewer",
    ("GET", "/v1/files/{file_id}"): "viewer",
    ("GET", "/v1/files/{file_id}/content"): "viewer",
    ("DELETE", "/v1/files/{file_id}"): "trainer",
    ("POST", "/v1/fine_tuning/alpha/graders/run"): "trainer",
    ("POST", "/v1/fine_tuning/alpha/graders/validate"): "trainer",
    ("POST", "/v1/batches"): "trainer",
    ("GET", "/v1/batches"): "viewer",
    ("GET", "/v1/batches/{batch_id}"): "viewer",
    ("POST", "/v1/batches/{batch_id}/cancel"): "trainer",
    ("POST", "/v1/fine_tuning/jobs"): "trainer",
    ("GET", "/v1/fine_tuning/jobs"): "viewer",
    ("GET", "/v1/fine_tuning/jobs/{job_id}"): "viewer",
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): "trainer",
    ("POST", "/v1/fine_tuning/jobs/{job_id}/pause"): "trainer",
    ("POST", "/v1/fine_tuning/jobs/{job_id}/resume"): "trainer",
    ("GET", "/v1/fine_tuning/jobs/{job_id}/events"): "viewer",
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): "viewer",
    ("GET", "/v1/rft/jobs/{job_id}/review/queue"): "viewer",  # review (issue 18): rft.serve.api_review
    ("POST", "/v1/rft/jobs/{job_id}/review/verdicts"): "trainer",
    ("GET", "/v1/rft/jobs/{job_id}/review/agreement"): "viewer",
    ("POST", "/v1/rft/jobs/{job_id}/replay"): "trainer",  # replay and explain (issue 18): rft.serve.api_replay
    ("GET", "/v1/rft/jobs/{job_id}/replays"): "viewer",
    ("GET", "/v1/rft/checkpoints/{ckpt_id}/explain"): "viewer",
    # the dashboard
    ("GET", "/static/{name:path}"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("GET", "/"): "viewer",
    ("GET", "/jobs/{job_id}"): "viewer",
    ("GET", "/jobs/{job_id}/curves.json"): "viewer",
    ("GET", "/jobs/{job_id}/samples"): "viewer",
    ("GET", "/jobs/{job_id}/review"): "viewer",
    ("POST", "/jobs/{job_id}/review"): "trainer",
    ("GET", "/checkpoints/{ckpt_id}"): "viewer",
    ("POST", "/checkpoints/{ckpt_id}/approve"): "approver",
    ("POST", "/checkpoints/{ckpt_id}/promote"): "admin",
    ("POST", "/aliases/{alias}/rollback"): "admin",
    ("GET", "/lineage"): "viewer",
    ("GET", "/batches"): "viewer",
    ("GET", "/batches/{batch_id}"): "viewer",
    ("GET", "/models"): "viewer",
    ("GET", "/audit"): "viewer",
}
# Routes on one job whose {job_id} a trainer must have created.
OWN_JOB_ROUTES = frozenset({("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"),
                            ("POST", "/v1/fine_tuning/jobs/{job_id}/pause"),
                            ("POST", "/v1/fine_tuning/jobs/{job_id}/resume")})

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024
UPLOAD_PATH = "/v1/files"  # POST here is an upload: the body limit is max_upload_bytes
SESSION_COOKIE = "rft_session"
LOGIN_PATH = "/login"
STATIC_PREFIX = "/static/"  # the dashboard's own scripts and styles (the package's files, no data): open
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 1000  # live dashboard sessions kept; the oldest is dropped past this
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LONG_BODY_BYTES = 256 * 1024  # bodies above this are parsed on at most LONG_BODIES_AT_ONCE threads
LONG_BODIES_AT_ONCE = 4
MAX_BUCKETS = 10_000  # rate-limit buckets kept before idle (full) ones are dropped


@dataclass(frozen=True)
class ServeLimits:
    """The front door's settings (see the module docstring)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES  # the body limit of POST /v1/files
    allowed_hosts: tuple[str, ...] | None = None  # None: any Host (a public bind, where the token protects)
    rate_limit: int = 0  # requests per minute per token (per client address without one); 0: off


def error_response(e: ChatRequestError, headers: dict | None = None) -> Response:
    """The error in OpenAI's shape. ASCII JSON: a message quoting user text with a lone surrogate (legal in a
    JSON string, not in UTF-8) must still render, as the escape `\\ud800`."""
    body = json.dumps(e.to_dict(), ensure_ascii=True)
    return Response(body, status_code=e.status_code, headers=headers, media_type="application/json")


async def _refuse(scope, receive, send, e: ChatRequestError, headers: dict | None = None) -> None:
    if scope["type"] == "websocket":  # closing before accept makes the server answer the handshake with 403
        await send({"type": "websocket.close", "code": 1008})
        return
    await error_response(e, headers)(scope, receive, send)


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return None


def split_host(value: str) -> tuple[str, int | None]:
    """'Host' header or allowlist entry -> (lower-case name without brackets, port or None).
    '[::1]:8000' -> ('::1', 8000); 'localhost' -> ('localhost', None); a bare '::1' is a name."""
    v = value.strip().lower()
    if v.startswith("["):
        name, _, rest = v[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif v.count(":") == 1:
        name, _, port = v.partition(":")
    else:
        name, port = v, ""
    if port and not (port.isascii() and port.isdigit()):
        return v, -1  # a port that is not a number matches no entry
    return name, int(port) if port else None


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    if "*" in allowed:
        return True
    if not host:
        return False
    name, port = split_host(host)
    for entry in allowed:
        e_name, e_port = split_host(entry)
        if e_name == name and (e_port is None or e_port == port):
            return True
    return False


def same_origin(origin: str, host: str | None) -> bool:
    """Whether an `Origin` header names this server (compared with the Host the request came to)."""
    scheme, sep, netloc = origin.strip().lower().partition("://")
    if not sep or not host or scheme not in ("http", "https"):
        return False  # 'null' (sandboxed frames, file: pages) and anything odd is foreign
    default = {"http": ":80", "https": ":443"}[scheme]
    host = host.strip().lower()
    return netloc.removesuffix(default) == host.removesuffix(default)


class _BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: Host allowlist, cross-origin refusal, request-body limit (see the module docstring)."""

    def __init__(self, app, *, max_body_bytes: int, allowed_hosts: tuple[str, ...] | None,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = _header(scope, b"host")
        if self.allowed_hosts is not None and not host_allowed(host, self.allowed_hosts):
            shown = repr(host[:100]) if host else "(none)"
            return await _refuse(scope, receive, send, ChatRequestError(
                f"Host {shown} is not allowed on this server (DNS rebinding protection); start it with "
                "--allowed-host NAME to accept it", None, status_code=403, code="host_not_allowed"))
        method = scope.get("method", "GET")
        origin = _header(scope, b"origin")
        cross = (_header(scope, b"sec-fetch-site") or "").lower() == "cross-site" or (
            origin is not None and not same_origin(origin, host))
        # A websocket handshake is a GET any page may open: refuse foreign ones like a state change.
        if cross and (method in STATE_CHANGING or method == "OPTIONS" or scope["type"] == "websocket"):
            return await _refuse(scope, receive, send, ChatRequestError(
                "cross-origin requests are refused: this API is for programs, not for web pages on other sites",
                None, status_code=403, code="cross_origin_refused"))
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        upload = method == "POST" and scope.get("path", "").rstrip("/") == UPLOAD_PATH
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None:
            if not (length.isascii() and length.strip().isdigit()):
                return await _refuse(scope, receive, send, ChatRequestError(
                    "the Content-Length header is not a number", None))
            if int(length) > limit:  # answered before a byte of the body is read
                return await _refuse(scope, receive, send, self._too_large(upload))

        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # chunked (or lying) bodies: stop reading here
                    raise _BodyTooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if started:
                raise
            await _refuse(scope, receive, send, self._too_large(upload))

    def _too_large(self, upload: bool = False) -> ChatRequestError:
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        what = "upload" if upload else "request body"
        mb = limit / (1024 * 1024)
        return ChatRequestError(f"the {what} is larger than this server's limit of {mb:g} MiB "
                                f"({limit:,} bytes{'' if upload else '; rft serve --max-body-mb'})", None,
                                status_code=413, code="request_too_large")


def is_api_path(path: str) -> bool:
    """The OpenAI-shaped API and the health probe: bearer token only, never the dashboard's cookie."""
    return path == "/v1" or path.startswith("/v1/") or path == "/health"


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token).digest()


class Sessions:
    """The dashboard's logins and CSRF tokens (see the module docstring), in memory. `token` is the server's
    API token (None: no login, pages are open, only the anonymous CSRF token applies); `clock()` returns
    seconds (time.monotonic; tests inject one)."""

    ANONYMOUS = "-"

    def __init__(self, token: str | None, *, ttl_s: float = SESSION_TTL_S,
                 clock: Callable[[], float] | None = None):
        self.digest = _digest(token) if token else None
        self.ttl_s = ttl_s
        self.clock = clock or time.monotonic
        self._secret = secrets.token_bytes(32)
        self._ids: dict[str, float] = {}  # session id -> when it expires
        self._users: dict[str, str] = {}  # session id -> the user it was opened for (registries with users)

    @property
    def required(self) -> bool:
        """Whether pages need a login (the server has a token)."""
        return self.digest is not None

    def token_ok(self, given: str) -> bool:
        return self.digest is not None and hmac.compare_digest(_digest(given.strip()), self.digest)

    def login(self, given: str) -> str | None:
        """A new session id when `given` is the server's token, else None."""
        if not self.token_ok(given):
            return None
        return self._new()

    def login_user(self, name: str) -> str:
        """A new session for a user whose token the caller checked (the user is re-read on every request)."""
        sid = self._new()
        self._users[sid] = name
        return sid

    def user_of(self, sid: str | None) -> str | None:
        return self._users.get(sid) if sid and self.valid(sid) else None

    def _new(self) -> str:
        now = self.clock()
        self._ids = {k: t for k, t in self._ids.items() if t > now}
        while len(self._ids) >= MAX_SESSIONS:
            self._ids.pop(next(iter(self._ids)))
        self._users = {k: u for k, u in self._users.items() if k in self._ids}
        sid = secrets.token_urlsafe(32)
        self._ids[sid] = now + self.ttl_s
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        exp = self._ids.get(sid)
        if exp is None:
            return False
        if exp <= self.clock():
            self._ids.pop(sid, None)
            return False
        return True

    def logout(self, sid: str | None) -> None:
        if sid:
            self._ids.pop(sid, None)
            self._users.pop(sid, None)

    def current(self, scope) -> str:
        """The request's valid session id, or ANONYMOUS (no cookie, an unknown or expired one)."""
        sid = session_cookie(scope)
        return sid if sid is not None and self.valid(sid) else self.ANONYMOUS

    def csrf_token(self, sid: str) -> str:
        return hmac.new(self._secret, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, sid: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_token(sid).encode(), given.encode("utf-8", "replace"))


def session_cookie(scope) -> str | None:
    """The value of the `rft_session` cookie of a request, if it has one."""
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == SESSION_COOKIE:
            return value.strip() or None
    return None


class BearerAuth:
    """ASGI middleware: every HTTP request and websocket needs `Authorization: Bearer <token>`, else 401.
    Compared in constant time, on SHA-256 digests so the comparison does not depend on the length either."""

    def __init__(self, app, token: str, sessions: Sessions | None = None):
        self.app = app
        self.digest = hashlib.sha256(token.encode()).digest()
        self.sessions = sessions

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        value = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                value = v
                break
        scheme, _, given = value.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(hashlib.sha256(given.strip()).digest(), self.digest):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if self.sessions is not None and scope["type"] == "http" and not is_api_path(path):
            if path == LOGIN_PATH or path.startswith(STATIC_PREFIX) or self.sessions.valid(session_cookie(scope)):
                return await self.app(scope, receive, send)
            if scope.get("method") in ("GET", "HEAD") and not value and "text/html" in (_header(scope, b"accept") or ""):
                # a browser opening a page: ask for the token once (programs get the 401 below)
                return await Response(status_code=303, headers={"Location": LOGIN_PATH, "Cache-Control": "no-store"})(
                    scope, receive, send)
        msg = "missing bearer token" if not value else "invalid bearer token"
        e = ChatRequestError(f"{msg}: send 'Authorization: Bearer <RFT_API_TOKEN>'", None, status_code=401,
                             code="invalid_api_key")
        await _refuse(scope, receive, send, e, headers={"WWW-Authenticate": "Bearer"})


def iter_routes(routes):
    """The leaf routes of an app, through the routers FastAPI includes lazily (`_IncludedRouter` in FastAPI
    0.165: its `effective_candidates()`; older versions list the leaves directly)."""
    for r in routes:
        cands = getattr(r, "effective_candidates", None)
        if callable(cands):
            yield from iter_routes(cands())
        else:
            yield r


def match_route(scope) -> tuple[str, dict] | None:
    """(the route path as declared, its path parameters) of the app's route that fully matches the request
    (method included), or None (an unknown path or a wrong method: the app answers 404 / 405)."""
    from starlette.routing import Match

    for route in iter_routes(getattr(scope.get("app"), "routes", ())):
        m, child = route.matches(scope)
        if m == Match.FULL:
            return getattr(route, "path", ""), dict(child.get("path_params") or {})
    return None


def _registry():
    from rft.registry import Registry

    return Registry()


class Access:
    """ASGI middleware: identify the caller and check their role (see the module docstring). `registry()`
    opens the registry (default: `rft.registry.Registry()`, the one the routes use)."""

    def __init__(self, app, *, token: str | None, sessions: Sessions, registry: Callable | None = None):
        self.app = app
        self.sessions = sessions
        self.single = BearerAuth(app, token=token, sessions=sessions) if token else app
        self.registry = registry or _registry
        self.seen_users = False  # once a registry had users, one that cannot be read is not "single-user"

    def users_mode(self) -> bool:
        from rft.errors import RftError

        try:
            has = self.registry().has_users()
        except RftError:
            has = self.seen_users  # fail closed once users were seen
        self.seen_users = self.seen_users or has
        return has

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        users = await run_in_threadpool(self.users_mode)
        if not users:
            return await self.single(scope, receive, send)
        from rft.registry.access import RANK, acting_as

        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        method = "GET" if method == "HEAD" else method
        hit = match_route(scope)
        role = ROUTE_ROLES.get((method, hit[0])) if hit else None
        if hit and role == PUBLIC:
            return await self.app(scope, receive, send)
        principal, value = await run_in_threadpool(self._principal, scope)
        if principal is None:
            path = scope.get("path", "")
            if (scope["type"] == "http" and not is_api_path(path) and not value and method == "GET"
                    and "text/html" in (_header(scope, b"accept") or "")):
                return await Response(status_code=303, headers={"Location": LOGIN_PATH, "Cache-Control": "no-store"})(
                    scope, receive, send)
            msg = "missing bearer token" if not value else "invalid bearer token (unknown, rotated or revoked)"
            return await _refuse(scope, receive, send, ChatRequestError(
                f"{msg}: this server has users; send 'Authorization: Bearer <your rft token>'", None,
                status_code=401, code="invalid_api_key"), headers={"WWW-Authenticate": "Bearer"})
        if hit is not None:
            if role is None:
                return await _refuse(scope, receive, send, _denied(
                    f"{method} {hit[0]} has no role in rft.serve.guard.ROUTE_ROLES; refused"))
            if RANK[principal.role] < RANK[role]:
                return await _refuse(scope, receive, send, _denied(
                    f"user '{principal.name}' ({principal.role}) may not {method} {hit[0]}: it needs the {role} role"))
            if (method, hit[0]) in OWN_JOB_ROUTES and not principal.can("approver"):
                why = await run_in_threadpool(self._not_owner, principal, hit[1].get("job_id"))
                if why:
                    return await _refuse(scope, receive, send, _denied(why))
        with acting_as(principal):
            return await self.app(scope, receive, send)

    def _principal(self, scope):
        """(the user of the request or None, the Authorization header's value)."""
        value = _header(scope, b"authorization") or ""
        scheme, _, given = value.partition(" ")
        reg = self.registry()
        if value:
            return (reg.authenticate(given.strip()) if scheme.lower() == "bearer" else None), value
        name = self.sessions.user_of(session_cookie(scope)) if scope["type"] == "http" else None
        return (reg.principal(name) if name else None), value

    def _not_owner(self, principal, job_id) -> str | None:
        from rft.errors import RftError
        from rft.registry.access import acting_as

        try:
            with acting_as(principal):
                job = self.registry().get_job(str(job_id))
        except RftError:
            return None  # unknown or another team's: the route answers 404
        if job["id"] != job_id or job.get("created_by") == principal.name:
            return None
        return (f"user '{principal.name}' ({principal.role}) may cancel, pause or resume only their own jobs; "
                f"job {job['id']} was created by {job.get('created_by') or 'someone else'}")


def _denied(message: str) -> ChatRequestError:
    return ChatRequestError(message, None, status_code=403, code="permission_denied")


class RateLimit:
    """ASGI middleware: a token bucket per bearer token (or client address) holding `per_minute` requests,
    refilled continuously; an empty bucket is a 429 with `Retry-After` (whole seconds until one refills).
    `clock()` returns seconds (time.monotonic; tests inject a fake one)."""

    def __init__(self, app, *, per_minute: int, clock: Callable[[], float]):
        self.app = app
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # requests per second
        self.clock = clock
        self.buckets: dict[bytes | str, tuple[float, float]] = {}  # key -> (requests left, when)

    def take(self, key: bytes | str) -> float:
        """0 when the request may go ahead (and it is counted), else the seconds until it could."""
        now = self.clock()
        left, then = self.buckets.get(key, (self.capacity, now))
        left = min(self.capacity, left + max(0.0, now - then) * self.rate)
        if left >= 1 - 1e-9:  # the epsilon: waiting exactly Retry-After seconds must be enough
            self.buckets[key] = (left - 1, now)
            return 0.0
        self.buckets[key] = (left, now)
        if len(self.buckets) > MAX_BUCKETS:
            self._prune(now)
        return (1 - left) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k, (left, then) in self.buckets.items() if left + (now - then) * self.rate >= self.capacity]
        for k in full:
            del self.buckets[k]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") == "/health":
            return await self.app(scope, receive, send)
        key: bytes | str = _header(scope, b"authorization") or (scope.get("client") or ("unknown",))[0]
        wait = self.take(key)
        if wait <= 0:
            return await self.app(scope, receive, send)
        retry = max(1, math.ceil(wait))
        per = int(self.capacity)
        e = ChatRequestError(f"rate limit reached: {per} requests per minute; retry after {retry} s", None,
                             status_code=429, code="rate_limit_exceeded", type="requests")
        await _refuse(scope, receive, send, e, headers={"Retry-After": str(retry),
                                                         "x-ratelimit-limit-requests": str(per),
                                                         "x-ratelimit-remaining-requests": "0"})


def harden(app, *, token: str | None, limits: ServeLimits, clock: Callable[[], float] | None = None) -> None:
    """Install the front door on a FastAPI app (the last middleware added runs first), and answer HTTP errors
    (an unknown route, a wrong method) in OpenAI's error shape. `app.state.sessions` is the dashboard's
    `Sessions` (logins and CSRF tokens)."""
    sessions = Sessions(token)
    app.state.sessions = sessions

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        code = "not_found" if exc.status_code == 404 else None
        return error_response(ChatRequestError(str(exc.detail), None, status_code=exc.status_code, code=code))

    if limits.rate_limit:
        app.add_middleware(RateLimit, per_minute=limits.rate_limit, clock=clock or time.monotonic)
    app.add_middleware(Access, token=token, sessions=sessions)  # BearerAuth in the single-user mode
    app.add_middleware(Guard, max_body_bytes=limits.max_body_bytes, allowed_hosts=limits.allowed_hosts,
                       max_upload_bytes=limits.max_upload_bytes)


async def read_json_bytes(request) -> bytes:
    """The body of a JSON route: 415 unless the content type is JSON (see the module docstring)."""
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        shown = repr(media[:60]) if media else "none"
        raise ChatRequestError(f"send the body as JSON with 'Content-Type: application/json' (got {shown})", None,
                               status_code=415, code="unsupported_media_type")
    return await request.body()


# One semaphore per event loop (an asyncio semaphore belongs to the loop that first waits on it).
_long_bodies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def off_loop(size: int, fn: Callable[..., Any], *args) -> Any:
    """`fn(*args)` on a worker thread, so parsing, validating and tokenising a request never stalls the event
    loop (and the other requests on it). `size` is the body's length: long bodies take turns on
    LONG_BODIES_AT_ONCE threads, bounding the memory their token lists take at once."""
    if size <= LONG_BODY_BYTES:
        return await run_in_threadpool(fn, *args)
    loop = asyncio.get_running_loop()
    sem = _long_bodies.get(loop)
    if sem is None:
        sem = _long_bodies[loop] = asyncio.Semaphore(LONG_BODIES_AT_ONCE)
    async with sem:
        return await run_in_threadpool(fn, *args)


def query_limit(query, *, default: int, maximum: int) -> int:
    """The `limit` query parameter of a list route (OpenAI pagination): an integer in [1, maximum], else a 400."""
    text = query.get("limit")
    try:
        limit = default if text is None else int(text)
    except ValueError:
        raise ChatRequestError(f"limit must be an integer between 1 and {maximum:,}", "limit") from None
    if not 1 <= limit <= maximum:
        raise ChatRequestError(f"limit must be between 1 and {maximum:,}, got {limit}", "limit")
    return limit
