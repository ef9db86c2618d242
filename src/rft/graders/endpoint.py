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

Simplified: plain `urllib` (HTTP/1.1, one connection per request); no TLS client certificates.

How to run: start any server answering `{"score": 1}` on 127.0.0.1:8000, then
`python -c "from rft.graders import build, make_sample; g = build({'type': 'endpoint', 'url':
'http://127.0.0.1:8000/grade'}); print(g.grade(make_sample('x'), {}))"`.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid

from rft.errors import Problem
from rft.graders.base import Grader, GraderError, register_grader

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

    def __init__(self, spec):
        super().__init__(spec)
        rate = spec.get("rate_limit")
        self.bucket = shared_bucket(spec["url"], rate) if rate else None
        self.sleep = time.sleep

    @classmethod
    def validate_spec(cls, spec, where):
        problems = super().validate_spec(spec, where)
        url = spec.get("url")
        if "url" in spec and (not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url)):
            problems.append(Problem(f"url must be an http:// or https:// URL, got {url!r}", field=f"{where}.url"))
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
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=float(self.spec.get("timeout_s", 600))) as resp:
                raw = resp.read(MAX_PAYLOAD_BYTES + 1)
        except urllib.error.HTTPError as e:
            snippet = e.read(300).decode("utf-8", "replace")
            if e.code == 429 or e.code >= 500:
                ra = e.headers.get("Retry-After") if e.headers else None
                try:
                    retry_after = min(30.0, float(ra)) if ra is not None else None
                except ValueError:
                    retry_after = None
                raise _Retryable(f"HTTP {e.code}: {snippet}", retry_after) from None
            raise GraderError("other_error", f"{url} answered HTTP {e.code}: {snippet}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            raise _Retryable(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None
        try:
            payload = json.loads(raw)
        except ValueError:
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


__all__ = ["EndpointGrader", "MAX_PAYLOAD_BYTES", "RETRIES", "TokenBucket", "shared_bucket"]
