"""Fakes for the batch tests: a fake clock, a scripted flaky OpenAI-compatible server (an in-process httpx
transport), and input-file helpers."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from pathlib import Path

import httpx


class FakeClock:
    """Time only moves when someone sleeps; every sleep is recorded."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s

    async def asleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s
        await asyncio.sleep(0)


class FlakyServer:
    """A scripted /v1/chat/completions endpoint. A request is identified by its user message (the tests put
    the custom_id there). `script[content]` lists what the server does on each successive call:

    ok            apply the request and answer 200 (the default once a script runs out)
    429:N         429 with Retry-After: N seconds
    503ms:N       503 with retry-after-ms: N
    500           500 server error
    timeout       the client times out (httpx.ReadTimeout)
    connect       connection refused (httpx.ConnectError)
    lost          apply the request, then drop the connection before the response (RemoteProtocolError)
    400 / 401     permanent errors

    Requests carrying an Idempotency-Key the server has already applied get the stored response back and
    are not applied again (as Stripe-style idempotent APIs do). Completion order is shuffled by yielding to
    the event loop a random number of times.
    """

    def __init__(self, script: dict[str, list[str]] | None = None, *, default: str = "ok", seed: int = 0):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.default = default
        self.rng = random.Random(seed)
        self.calls: list[dict] = []  # {content, key, auth, model, t}
        self.applied: dict[str, dict] = {}  # idempotency key -> response body
        self.apply_count: dict[str, int] = defaultdict(int)  # content -> times the work was done
        self.clock: FakeClock | None = None

    def calls_for(self, content: str) -> list[dict]:
        return [c for c in self.calls if c["content"] == content]

    def _apply(self, key: str, content: str, body: dict) -> dict:
        if key not in self.applied:
            self.apply_count[content] += 1
            self.applied[key] = {
                "id": f"chatcmpl-{len(self.applied)}", "object": "chat.completion", "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo {content}"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        return self.applied[key]

    async def handler(self, request: httpx.Request) -> httpx.Response:
        for _ in range(self.rng.randint(0, 6)):
            await asyncio.sleep(0)
        body = json.loads(request.content)
        content = body["messages"][-1]["content"]
        key = request.headers.get("idempotency-key")
        self.calls.append({"content": content, "key": key, "auth": request.headers.get("authorization"),
                           "model": body.get("model"), "t": self.clock.now() if self.clock else None})
        steps = self.script.get(content)
        action = steps.pop(0) if steps else self.default
        if key in self.applied:  # an idempotent replay: no new work, the stored answer
            return httpx.Response(200, json=self.applied[key], headers={"x-request-id": f"req-{key[-6:]}"})
        if action == "ok":
            return httpx.Response(200, json=self._apply(key, content, body), headers={"x-request-id": "req-ok"})
        if action == "lost":
            self._apply(key, content, body)
            raise httpx.RemoteProtocolError("server disconnected without sending a response", request=request)
        if action == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if action == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if action.startswith("429:"):
            return httpx.Response(429, json={"error": {"message": "rate limited", "code": "rate_limit_exceeded"}},
                                  headers={"retry-after": action[4:]})
        if action.startswith("503ms:"):
            return httpx.Response(503, json={"error": {"message": "overloaded"}}, headers={"retry-after-ms": action[6:]})
        code = int(action)
        return httpx.Response(code, json={"error": {"message": f"scripted {code}", "code": f"scripted_{code}"}})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


def write_requests(path: Path, ids: list[str], *, model: str | None = "fake-model", max_tokens: int = 8,
                   extra: dict | None = None) -> Path:
    with open(path, "w") as f:
        for cid in ids:
            body = {"messages": [{"role": "user", "content": cid}], "max_tokens": max_tokens}
            if model:
                body["model"] = model
            body.update(extra or {})
            f.write(json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def assert_exactly_once(state: dict, ids: list[str], *, allow_pending: bool = False) -> tuple[dict, dict]:
    """Every custom_id at most once over output + error file (exactly once unless `allow_pending`)."""
    out = read_jsonl(state["output_file"])
    errs = read_jsonl(state["error_file"])
    seen = [r["custom_id"] for r in out] + [r["custom_id"] for r in errs]
    assert len(seen) == len(set(seen)), "a custom_id appears twice"
    assert set(seen) <= set(ids)
    if not allow_pending:
        assert set(seen) == set(ids)
    return {r["custom_id"]: r for r in out}, {r["custom_id"]: r for r in errs}
