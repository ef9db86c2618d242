"""`endpoint` grader (Azure Foundry's preview type): an HTTP service you run computes the score.

What: `{type: "endpoint", name?, url, headers?, rate_limit?, pass_threshold?, timeout_s?}`. Each grade POSTs
the JSON `{"sample": ..., "item": ..., "trace_id": ...}` to `url` and expects `{"score": <number>}` back.

- `headers`: values may reference environment variables as `${NAME}` (so keys stay out of the spec); a
  variable that is not set is a validation problem.
- `rate_limit`: at most this many requests per second to this URL, enforced by one token bucket per URL
  shared by every endpoint grader built with the same `GraderContext` (its `http` client; burst: one second's
  worth).
- `timeout_s` (rft extension; default 600, Azure's documented limit): per request.
- Connection errors, timeouts, HTTP 429 and 5xx are retried 3 times (`rft.graders.retry`: exponential backoff
  with full jitter, windows of 0.5 s, 1 s, 2 s; a `Retry-After` is honoured, up to 30 s; the context's clock
  and sleep, so tests never wait); after that the sample is unscored with
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

Simplified: the context's `HttpClient` (`rft.graders.httpclient`: plain `http.client`, HTTP/1.1, one connection
per request, TLS with the system's default verification); no TLS client certificates.

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
import uuid
from urllib.parse import urlsplit

from rft.errors import Problem
from rft.graders.base import DEFAULT_CONTEXT, Grader, GraderError, register_grader
from rft.graders.netguard import RefusedAddress, literal_host_problem
from rft.graders.retry import GaveUp, Retryable, RetryPolicy

MAX_PAYLOAD_BYTES = 1024 * 1024
RETRIES = 3
# 1 try + 3 retries; backoff windows 0.5 s, 1 s, 2 s (full jitter); a Retry-After is honoured up to 30 s.
RETRY_POLICY = RetryPolicy(attempts=RETRIES + 1, initial_backoff_s=0.5, multiplier=2.0, retry_after_cap_s=30.0)
_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def expand_env(value: str) -> str:
    def sub(m):
        name = m.group(1)
        if name not in os.environ:
            raise GraderError("other_error", f"header references ${{{name}}}, which is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, value)


@register_grader("endpoint")
class EndpointGrader(Grader):
    concurrency = 8  # requests in flight; the shared token bucket enforces rate_limit

    type = "endpoint"
    allowed_fields = {"type", "name", "url", "headers", "rate_limit", "pass_threshold", "timeout_s"}
    required_fields = {"type", "url"}

    def __init__(self, spec, *, context=None):
        super().__init__(spec, context=context)
        rate = spec.get("rate_limit")
        self.bucket = self.context.http.bucket(spec["url"], rate) if rate else None

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
        timeout = float(self.spec.get("timeout_s", 600))
        try:
            resp = self.context.http.post(url, body, headers, timeout=timeout, allow=self.context.allowlist,
                                          max_bytes=MAX_PAYLOAD_BYTES + 1)
        except RefusedAddress as e:
            raise GraderError("other_error", f"refused to connect: {e}") from None
        except ssl.SSLCertVerificationError as e:  # a certificate problem is not going to go away on retry
            raise GraderError("other_error", f"{url}: TLS certificate verification failed: {e.verify_message or e}") from None
        except (http.client.HTTPException, TimeoutError, ConnectionError, OSError) as e:
            raise Retryable(f"{type(e).__name__}: {e}") from None
        except ValueError as e:  # a header value with a newline, a host name that is not ASCII/IDNA
            raise GraderError("other_error", f"could not send the request to {url}: {e}") from None
        status, raw = resp.status, resp.body
        if 300 <= status < 400:  # never followed: the target could be an address the policy refuses
            raise GraderError("other_error", f"{url} answered HTTP {status} (redirect to {resp.headers.get('location')!r}); "
                              "endpoint graders do not follow redirects: use the final URL")
        if status >= 400:
            snippet = raw[:300].decode("utf-8", "replace")
            if status == 429 or status >= 500:
                raise Retryable(f"HTTP {status}: {snippet}", resp.retry_after_s)
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
        try:
            return self.context.http.retry(lambda: self._post_once(body, headers), RETRY_POLICY)
        except GaveUp as e:
            raise GraderError("unresponsive_reward_error", f"{self.spec['url']} did not answer after {len(e.errors)} "
                              f"attempts: {' | '.join(e.errors)[-1000:]}") from None


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


__all__ = ["EndpointGrader", "MAX_PAYLOAD_BYTES", "RETRIES", "RETRY_POLICY"]
