"""Judges: what `score_model` and `label_model` graders ask. A `Judges` cache travels in the `GraderContext`.

What
----
A `Judge` is any object with `complete(messages, params) -> JudgeReply`. `Judges.get(model, api_key_env, http)`
returns the judge for a grader's `model`:
- whatever `Judges.set(model, judge)` (or `Judges({model: judge})`) mapped, `"*"` meaning every model: a scripted
  fake in tests, or OpenAI model names (`gpt-4o-2024-08-06`) mapped to a local judge by a job;
- for `http(s)://host:port/v1/<model>`, a `RemoteJudge`: POST `/v1/chat/completions` through the context's
  `HttpClient`, retried with `rft.graders.retry` (3 attempts, backoff windows 0.5 s and 1 s with full jitter,
  Retry-After honoured up to 30 s); the API key is read at call time from the environment variable named by
  `api_key_env`;
- otherwise a `LocalJudge` for the local model reference, one per reference per `Judges`, whose engine is loaded
  on first use by the `load_engine` callable the cache was given (default: `rft.engine.load_engine` with fp32
  weights and fp32 compute, as judges have always generated).

Simplified: one engine per model reference, generation serialised per engine.

How to run: `python -c "from rft.graders.judges import *; print(Judges().get('http://127.0.0.1:8000/v1/m', None,
None))"`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from rft.errors import RftError
from rft.graders.httpclient import HttpClient
from rft.graders.retry import GaveUp, Retryable, RetryPolicy

DEFAULT_MAX_TOKENS = 512
# A remote judge: 1 try + 2 retries, backoff windows 0.5 s and 1 s; Retry-After honoured up to 30 s.
REMOTE_RETRY_POLICY = RetryPolicy(attempts=3, initial_backoff_s=0.5, multiplier=2.0, retry_after_cap_s=30.0)


@dataclass(frozen=True)
class JudgeReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refusal: str | None = None  # set when the backend reports a refusal explicitly


@dataclass(frozen=True)
class JudgeParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None


class Judge(Protocol):
    def complete(self, messages: list[dict], params: JudgeParams) -> JudgeReply: ...


class JudgeServerError(Exception):
    """The judge could not answer (unreachable, HTTP error, model failed to load)."""


def load_judge_engine(ref: str):
    """The engine of a local judge: `rft.engine.load_engine` with fp32 weights generating in fp32 (judges have
    always generated in fp32; the loader's bf16 default on some CPUs would change judge scores)."""
    import torch

    from rft.engine import load_engine

    return load_engine(ref, dtype=torch.float32, compute_dtype=torch.float32)


class LocalJudge:
    """A local model through rft's own engine. Built lazily; generation is serialised per engine."""

    def __init__(self, ref: str, load_engine: Callable[[str], object] = load_judge_engine):
        self.ref = ref
        self._load_engine = load_engine
        self._engine = None
        self._lock = threading.Lock()

    def _get_engine(self):
        with self._lock:
            if self._engine is None:
                try:
                    self._engine = self._load_engine(self.ref)
                except RftError as e:
                    raise JudgeServerError(
                        f"judge model '{self.ref}': {e}\n(a score_model/label_model `model` must be a local model reference, "
                        "an http(s)://host/v1/<model> URL, or mapped to a judge in the GraderContext's judges)") from None
            return self._engine

    def complete(self, messages, params):
        from rft.engine import SamplingParams

        engine = self._get_engine()
        sp = SamplingParams(n=1, temperature=params.temperature, top_p=params.top_p, max_new_tokens=params.max_tokens,
                            seed=params.seed)
        with self._lock:
            out = engine.generate([messages], sp)
        c = out[0][0]
        return JudgeReply(c.text, prompt_tokens=c.prompt_tokens, completion_tokens=len(c.token_ids))


class RemoteJudge:
    """An OpenAI-compatible chat completions server. `base_url` ends in /v1."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, *, http: HttpClient | None = None,
                 timeout_s: float = 120.0, policy: RetryPolicy = REMOTE_RETRY_POLICY):
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.http, self.timeout_s, self.policy = http or HttpClient(), timeout_s, policy

    def complete(self, messages, params):
        body = {"model": self.model, "messages": messages, "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_tokens, "n": 1}
        if params.seed is not None:
            body["seed"] = params.seed
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise JudgeServerError(f"the environment variable {self.api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        url = self.base_url + "/chat/completions"
        data = json.dumps(body).encode()

        def attempt():
            try:
                resp = self.http.post(url, data, headers, timeout=self.timeout_s)
            except OSError as e:  # URLError, timeouts, refused connections
                raise Retryable(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None
            if resp.status >= 400:
                last = f"HTTP {resp.status} from {url}: {resp.body[:300].decode('utf-8', 'replace')}"
                if resp.status == 429 or resp.status >= 500:
                    raise Retryable(last, resp.retry_after_s)
                raise JudgeServerError(last)
            try:
                return json.loads(resp.body)
            except ValueError as e:
                raise JudgeServerError(f"{url} answered with something that is not JSON: {e}") from None

        try:
            payload = self.http.retry(attempt, self.policy)
        except GaveUp as e:
            raise JudgeServerError(f"{e.errors[-1]} (after {len(e.errors)} attempts)") from None
        try:
            choice = payload["choices"][0]
            msg = choice.get("message") or {}
            text = msg.get("content") or ""
            usage = payload.get("usage") or {}
            return JudgeReply(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                              refusal=msg.get("refusal") or None)
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise JudgeServerError(f"{url} answered without choices[0].message: {e!r}") from None


def parse_remote(model: str) -> tuple[str, str] | None:
    """`http://host:port/v1/<model>` -> (base_url, model name); None when `model` is not a URL."""
    if not model.startswith(("http://", "https://")):
        return None
    if "/v1/" in model:
        base, name = model.split("/v1/", 1)
        return base + "/v1", name
    base, _, name = model.rstrip("/").rpartition("/")
    return base, name


class Judges:
    """The judges of one `GraderContext` (see the module docstring); thread-safe."""

    def __init__(self, mapping: dict[str, Judge] | None = None, *,
                 load_engine: Callable[[str], object] = load_judge_engine):
        self.load_engine = load_engine
        self._judges: dict[str, Judge] = dict(mapping or {})  # model -> judge; "*" overrides every model
        self._lock = threading.Lock()

    def set(self, model: str, judge: Judge | None) -> None:
        """Make `model` (or "*": every model) use `judge`; None removes the mapping."""
        with self._lock:
            if judge is None:
                self._judges.pop(model, None)
            else:
                self._judges[model] = judge

    def get(self, model: str, api_key_env: str | None, http: HttpClient | None) -> Judge:
        with self._lock:
            if "*" in self._judges:
                return self._judges["*"]
            if model in self._judges:
                return self._judges[model]
            remote = parse_remote(model)
            if remote:
                return RemoteJudge(remote[0], remote[1], api_key_env, http=http)
            judge = self._judges[model] = LocalJudge(model, self.load_engine)  # one engine per model reference
            return judge


__all__ = ["DEFAULT_MAX_TOKENS", "Judge", "JudgeParams", "JudgeReply", "JudgeServerError", "Judges", "LocalJudge",
           "REMOTE_RETRY_POLICY", "RemoteJudge", "load_judge_engine", "parse_remote"]
