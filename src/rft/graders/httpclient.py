"""The HTTP client graders use (endpoint graders, remote judges): one per `GraderContext`, injected, no globals.

What: `HttpClient.post(url, body, headers, timeout=..., allow=...)` sends one POST and returns an `HttpResponse`
(status, lower-cased headers, body) for any HTTP answer, 4xx and 5xx included; transport failures raise
(`OSError` and its kin). `retry(attempt, policy)` runs an attempt under `rft.graders.retry` with this client's
`Timing`. `bucket(url, rate)` is the token bucket of that URL, shared by every grader built with the context.

- With `allow` (a `netguard.HostAllowlist`: endpoint graders), the connection goes to an address netguard
  resolved and checked, never re-resolved; the Host header and TLS server name stay the URL's host; proxies
  from the environment are not used; redirects are returned, not followed.
- Without `allow` (remote judges, whose URL the job author names), urllib sends it: environment proxies apply,
  as they always have for judges.

Simplified: HTTP/1.1, one connection per request, TLS with the system's default verification, no client
certificates.

How to run: `python -c "from rft.graders.httpclient import HttpClient; print(HttpClient().post('http://example.com',
b'{}', {}, timeout=5).status)"`.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, TypeVar
from urllib.parse import urlsplit

from rft.graders.netguard import connect_checked
from rft.graders.retry import RetryPolicy, Timing, call_with_retries

T = TypeVar("T")


class TokenBucket:
    """`rate` tokens per second, burst `capacity`; `acquire()` blocks until a token is available."""

    def __init__(self, rate: float, capacity: float | None = None, *, clock=None, sleep=None):
        timing = Timing()
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else max(1.0, rate))
        self.tokens = self.capacity
        self.clock, self.sleep = clock or timing.clock, sleep or timing.sleep
        self.updated = self.clock()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                wait = (1.0 - self.tokens) / self.rate
            self.sleep(wait)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""

    @property
    def retry_after_s(self) -> float | None:
        """Retry-After in seconds (the seconds form; an HTTP date or junk is ignored)."""
        ra = self.headers.get("retry-after")
        try:
            return max(0.0, float(ra)) if ra is not None else None
        except ValueError:
            return None


class HttpClient:
    """See the module docstring. `timing`: clock, sleep and random draw for retries and rate limits."""

    def __init__(self, *, timing: Timing | None = None):
        self.timing = timing or Timing()
        self._buckets: dict[tuple[str, float], TokenBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, url: str, rate: float) -> TokenBucket:
        with self._lock:
            key = (url, float(rate))
            if key not in self._buckets:
                self._buckets[key] = TokenBucket(rate, clock=self.timing.clock, sleep=self.timing.sleep)
            return self._buckets[key]

    def retry(self, attempt: Callable[[], T], policy: RetryPolicy) -> T:
        return call_with_retries(attempt, policy, self.timing)

    def post(self, url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow=None,
             max_bytes: int | None = None) -> HttpResponse:
        if allow is None:
            return _post_urllib(url, body, headers, timeout, max_bytes)
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host, port = parts.hostname or "", parts.port or (443 if https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = _PinnedConnection(host, port, timeout=timeout, allow=allow, tls=https)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(max_bytes) if max_bytes is not None else resp.read()
            return HttpResponse(resp.status, {k.lower(): v for k, v in reversed(resp.getheaders())}, raw)
        finally:
            conn.close()


def _post_urllib(url: str, body: bytes, headers: dict[str, str], timeout: float, max_bytes: int | None) -> HttpResponse:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read(max_bytes) if max_bytes is not None else resp.read()
            return HttpResponse(resp.status, {k.lower(): v for k, v in reversed(resp.getheaders())}, raw)
    except urllib.error.HTTPError as e:  # an HTTP answer, not a transport failure
        return HttpResponse(e.code, {k.lower(): v for k, v in reversed(list((e.headers or {}).items()))}, e.read())


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to `host`, connected to an address `netguard` resolved and checked (never re-resolved); the Host
    header and the TLS server name stay `host`, so virtual hosting and certificate checks work as usual."""

    def __init__(self, host: str, port: int, *, timeout: float, allow, tls: bool):
        super().__init__(host, port, timeout=timeout)
        self.allow, self.tls = allow, tls

    def connect(self) -> None:
        sock = connect_checked(self.host, self.port, self.allow, self.timeout)
        if self.tls:
            try:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock


__all__ = ["HttpClient", "HttpResponse", "TokenBucket"]
