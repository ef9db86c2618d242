"""`endpoint` grader (Azure Foundry's preview type): an HTTP service you run computes the score.

What: `{type: "endpoint", name?, url, headers?, rate_limit?, pass_threshold?, timeout_s?}`. Each grade POSTs
the JSON `{"sample": ..., "item": ..., "trace_id": ...}` to `url` and expects `{"score": <number>}` back.

- `headers`: values may reference environment variables as `${NAME}` (so keys stay out of the spec); a
  variable that is not set is a validation problem.
- `rate_limit`: at most this many requests per second to this URL, enforced by one token bucket per URL
  shared by every endpoint grader in the process (burst: one second's worth).
- `timeout_s` (rft extension; default 600, Azure's documented limit): per request.
- Connection errors, timeouts, HTTP 429 and 5xx are retried 3 times with exponential backoff (0.5 s, 1 s, 2 s;
  a 429's `Retry-After` is honoured, up to 30 s); after that the sample is unscored with
  `unresponsive_reward_error` (never scored 0). Other 4xx answers, a body that is not `{"score": number}`, or
  a non-finite score are unscored with `other_error` and not retried. A payload over 1 MB (Azure's limit) is
  not sent: unscored with `truncated_observation_error`.
- `trace_id`: `sample["trace_id"]` when the caller sets one (stable across one rollout), else a fresh UUID per
  grade; retries of one grade reuse it so the service can deduplicate.
- `pass_threshold` does not change the reward; it decides `passed` in `rft grader run` output and evals.
- SSRF (catalogue W7): the URL may not reach loopback, link-local (cloud metadata), private, unspecified,
  multicast or reserved addresses unless the build context allows it (`GraderContext(allow_private_hosts=...)`,
  the job's `rft.network.allow_private_hosts`; see `rft.graders.netguard`). An IP literal or `localhost` is
  refused when the grader is validated; a name is resolved at every request, each address is checked, and the
  connection goes to a checked address (so a name that rebinds to 127.0.0.1 is caught): refused, the sample is
  unscored with `other_error` and nothing is sent. Redirects are never followed: a 3xx answer is `other_error`.
  Proxy settings from the environment are not used.

Simplified: plain `http.client` (HTTP/1.1, one connection per request, TLS with the system's default
verification); no TLS client certificates.

How to run: start any server answering `{"score": 1}` on 127.0.0.1:8000, then
`python -c "from rft.graders import GraderContext, build, make_sample; g = build({'type': 'endpoint', 'url':
'http://127.0.0.1:8000/grade'}, context=GraderContext(allow_private_hosts=('127.0.0.1',)));
print(g.grade(make_sample('x'), {}))"`.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import ssl
import threading
import time
import uuid
from urllib.parse import urlsplit

from rft.errors import Problem
from rft.graders.base import DEFAULT_CONTEXT, Grader, GraderError, register_grader
from rft.graders.netguard import RefusedAddress, connect_checked, literal_host_problem

MAX_PAYLOAD_BYTES = 1024 * 1024
RETRIES = 3
_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TokenBucket:
    """`rate` tokens per second, burst `capacity`; `acquire()` blocks until a token is available."""

    def __init__(self, rate: float, capacity: float | None = None, *, clock=time.monotonic, sleep=time.sleep):
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else max(1.0, rate))
        self.tokens = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()
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


_buckets: dict[tuple[str, float], TokenBucket] = {}
_buckets_lock = threading.Lock()


def shared_bucket(url: str, rate: float) -> TokenBucket:
    with _buckets_lock:
        key = (url, float(rate))
        if key not in _buckets:
            _buckets[key] = TokenBucket(rate)
        return _buckets[key]


def expand_env(value: str) -> str:
    def sub(m):
        name = m.group(1)
        if name not in os.environ:
            raise GraderError("other_error", f"header references ${{{name}}}, which is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, value)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@register_grader("endpoint")
class EndpointGrader(Grader):
    concurrency = 8  # requests in flight; the shared token bucket enforces rate_limit

    type = "endpoint"
    allowed_fields = {"type", "name", "url", "headers", "rate_limit", "pass_threshold", "timeout_s"}
    required_fields = {"type", "url"}
    backoff_s = 0.5  # first retry delay; doubles each retry (tests set it to 0)

    def __init__(self, spec, *, context=None):
        super().__init__(spec, context=context)
        rate = spec.get("rate_limit")
        self.bucket = shared_bucket(spec["url"], rate) if rate else None
        self.sleep = time.sleep

    @classmethod
    def validate_spec(cls, spec, where, context=DEFAULT_CONTEXT):
        problems = super().validate_spec(spec, where, context)
        url = spec.get("url")
        if "url" in spec:
            bad = _url_problem(url)
            if bad is None:
                bad = literal_host_problem(url, context.allowlist)
            if bad:
                problems.append(Problem(bad, field=f"{where}.url"))
        headers = spec.get("headers")
        if "headers" in spec:
            if not isinstance(headers, dict):
                problems.append(Problem("headers must be an object {name: value}", field=f"{where}.headers"))
            else:
                for k, v in headers.items():
                    f = f"{where}.headers.{k}"
                    if not isinstance(v, str):
                        problems.append(Problem("a header value must be a string", field=f))
                        continue
                    for m in _ENV_REF.finditer(v):
                        name = m.group(1)
                        if not _ENV_NAME.match(name):
                            problems.append(Problem(f"'${{{name}}}' is not a valid environment variable reference", field=f))
                        elif name not in os.environ:
                            problems.append(Problem(f"references ${{{name}}}, but the environment variable {name} is not set", field=f))
        for key, positive in (("rate_limit", True), ("timeout_s", True), ("pass_threshold", False)):
            if key in spec:
                v = spec[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and v <= 0):
                    problems.append(Problem(f"{key} must be a {'positive ' if positive else ''}number, got {v!r}", field=f"{where}.{key}"))
        return problems

    def _post_once(self, body: bytes, headers: dict[str, str]) -> float:
        url = self.spec["url"]
        if self.bucket is not None:
            self.bucket.acquire()
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host, port = parts.hostname or "", parts.port or (443 if https else 80)
        timeout = float(self.spec.get("timeout_s", 600))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = _PinnedConnection(host, port, timeout=timeout, allow=self.context.allowlist, tls=https)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            status = resp.status
            raw = resp.read(MAX_PAYLOAD_BYTES + 1)
        except RefusedAddress as e:
            raise GraderError("other_error", f"refused to connect: {e}") from None
        except ssl.SSLCertVerificationError as e:  # a certificate problem is not going to go away on retry
            raise GraderError("other_error", f"{url}: TLS certificate verification failed: {e.verify_message or e}") from None
        except (http.client.HTTPException, TimeoutError, ConnectionError, OSError) as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from None
        except ValueError as e:  # a header value with a newline, a host name that is not ASCII/IDNA
            raise GraderError("other_error", f"could not send the request to {url}: {e}") from None
        finally:
            conn.close()
        if 300 <= status < 400:  # never followed: the target could be an address the policy refuses
            raise GraderError("other_error", f"{url} answered HTTP {status} (redirect to {resp.getheader('Location')!r}); "
                              "endpoint graders do not follow redirects: use the final URL")
        if status >= 400:
            snippet = raw[:300].decode("utf-8", "replace")
            if status == 429 or status >= 500:
                ra = resp.getheader("Retry-After")
                try:
                    retry_after = min(30.0, float(ra)) if ra is not None else None
                except ValueError:
                    retry_after = None
                raise _Retryable(f"HTTP {status}: {snippet}", retry_after)
            raise GraderError("other_error", f"{url} answered HTTP {status}: {snippet}")
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            raise GraderError("other_error", f"{url} answered with something that is not JSON: {raw[:200]!r}") from None
        score = payload.get("score") if isinstance(payload, dict) else None
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise GraderError("other_error", f'{url} must answer {{"score": <number>}}, got {json.dumps(payload)[:200]}')
        if not math.isfinite(score):
            raise GraderError("other_error", f"{url} answered a non-finite score ({score})")
        return float(score)

    def score(self, sample, item):
        trace_id = sample.get("trace_id") if isinstance(sample.get("trace_id"), str) else str(uuid.uuid4())
        try:
            body = json.dumps({"sample": sample, "item": item, "trace_id": trace_id}, allow_nan=False).encode()
        except ValueError as e:
            raise GraderError("other_error", f"the sample or item is not valid JSON: {e}") from None
        if len(body) > MAX_PAYLOAD_BYTES:
            raise GraderError("truncated_observation_error",
                              f"the request would be {len(body)} bytes; endpoint graders accept at most {MAX_PAYLOAD_BYTES}")
        headers = {"Content-Type": "application/json"}
        for k, v in (self.spec.get("headers") or {}).items():
            headers[k] = expand_env(v)
        errors = []
        for attempt in range(RETRIES + 1):
            try:
                return self._post_once(body, headers)
            except _Retryable as e:
                errors.append(str(e))
                if attempt < RETRIES:
                    delay = e.retry_after if e.retry_after is not None else self.backoff_s * 2 ** attempt
                    self.sleep(delay)
        raise GraderError("unresponsive_reward_error",
                          f"{self.spec['url']} did not answer after {RETRIES + 1} attempts: {' | '.join(errors)[-1000:]}")


def _url_problem(url) -> str | None:
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        return f"url must be an http:// or https:// URL, got {repr(url)[:200]}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as e:
        return f"url {url[:200]!r} is not a valid URL: {e}"
    if not parts.hostname:
        return f"url {url[:200]!r} has no host"
    return None


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


__all__ = ["EndpointGrader", "MAX_PAYLOAD_BYTES", "RETRIES", "TokenBucket", "shared_bucket"]
