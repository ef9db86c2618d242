"""Executors: run pending batch requests on a local engine or against a remote OpenAI-compatible endpoint.

Both report every finished request to a `sink` (`put(outcome)`, then `commit()` to make it durable) and
check `stopping()` before starting more work. A request whose run was cut short by the circuit breaker or a
stop is simply not reported: it stays pending and `resume` picks it up.

- `LocalExecutor` sorts the requests by sampling parameters and prompt length, and sends groups of
  `batch_size` through `rft.openai_chat.run_chat_calls`, which batches compatible calls on the engine (the
  engine left-pads and batches similar lengths, so sorting keeps padding small). Each group is committed
  before the next starts. Engine failures (status 500) are retried under the policy; request errors are not.
- `RemoteExecutor` keeps at most `concurrency` requests in flight with httpx, each under
  `retry.call_with_retries`, and sends the batch's stable `Idempotency-Key` with every attempt, so a
  server that applied a request whose response was lost can answer the retry without doing the work twice.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Callable

from rft.batch.config import RetryPolicy
from rft.batch.retry import AttemptError, CircuitBreaker, GaveUp, Unfinished, call_with_retries, next_wait
from rft.batch.validate import BatchRequest


@dataclass
class Outcome:
    """A finished request: a response body (success) or the reason it was given up (a dead letter)."""

    request: BatchRequest
    body: dict | None = None
    status_code: int | None = None
    request_id: str | None = None
    gave_up: GaveUp | None = None
    attempts: list[dict] = field(default_factory=list)  # failed attempts, in order


def _prompt_chars(call) -> int:
    return sum(len(m["content"]) for m in call.messages)


class LocalExecutor:
    def __init__(self, engine, *, model_name: str, policy: RetryPolicy, batch_size: int, clock, rng: random.Random,
                 strategy: str | None = None):
        self.strategy = strategy  # the batch's inference strategy for lines without their own `rft` extension
        self.engine = engine
        self.model_name = model_name
        self.policy = policy
        self.batch_size = batch_size
        self.clock = clock
        self.rng = rng

    def run(self, requests: list[BatchRequest], sink, stopping: Callable[[], bool], breaker: CircuitBreaker) -> None:
        from rft.openai_chat import parse_chat_body

        def body(r: BatchRequest) -> dict:
            if self.strategy and "rft" not in r.body:
                return {**r.body, "rft": {"strategy": self.strategy}}
            return r.body

        calls = {r.custom_id: parse_chat_body(body(r)) for r in requests}
        # Same parameters together (one engine call), then similar prompt lengths together (little padding).
        order = sorted(requests, key=lambda r: (repr(calls[r.custom_id].params), calls[r.custom_id].prediction is not None,
                                                _prompt_chars(calls[r.custom_id])))
        for start in range(0, len(order), self.batch_size):
            if stopping() or breaker.open:
                return
            self._run_group(order[start:start + self.batch_size], calls, sink, stopping, breaker)
            sink.commit()

    def _run_group(self, group: list[BatchRequest], calls: dict, sink, stopping, breaker) -> None:
        from rft.openai_chat import run_chat_calls

        started = self.clock.now()
        attempts: dict[str, list[dict]] = {r.custom_id: [] for r in group}
        todo = group
        attempt = 1
        while todo:
            t0 = self.clock.now()
            results = run_chat_calls(self.engine, [calls[r.custom_id] for r in todo], model_name=self.model_name)
            t1 = self.clock.now()
            again: list[tuple[BatchRequest, AttemptError]] = []
            for req, res in zip(todo, results):
                if isinstance(res, dict):
                    breaker.success()
                    sink.put(Outcome(req, body=res, status_code=200, request_id=res.get("id"),
                                     attempts=attempts[req.custom_id]))
                    continue
                err = AttemptError("engine" if res.status_code >= 500 else "invalid_request", res.message,
                                   status_code=res.status_code, body=res.to_dict())
                attempts[req.custom_id].append(err.record(attempt, t0, t1))
                breaker.failure(err)
                if err.retryable:
                    again.append((req, err))
                else:
                    sink.put(Outcome(req, gave_up=GaveUp(err, attempts[req.custom_id], "permanent_error"),
                                     attempts=attempts[req.custom_id]))
            if not again or breaker.open or stopping():
                return  # what is left stays pending
            wait = max(next_wait(self.policy, attempt, e, self.rng) for _, e in again)
            reason = None
            if attempt >= self.policy.max_attempts:
                reason = "max_attempts"
            elif self.clock.now() - started + wait >= self.policy.request_deadline_s:
                reason = "deadline_exceeded"
            if reason:
                for req, e in again:
                    sink.put(Outcome(req, gave_up=GaveUp(e, attempts[req.custom_id], reason),
                                     attempts=attempts[req.custom_id]))
                return
            self.clock.sleep(wait)
            attempt += 1
            todo = [r for r, _ in again]


class RemoteExecutor:
    def __init__(self, base_url: str, *, model_name: str | None, api_key: str | None, policy: RetryPolicy,
                 concurrency: int, clock, rng: random.Random, idempotency_key: Callable[[str], str],
                 transport=None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name = model_name
        self.api_key = api_key
        self.policy = policy
        self.concurrency = concurrency
        self.clock = clock
        self.rng = rng
        self.idempotency_key = idempotency_key
        self.transport = transport

    def run(self, requests: list[BatchRequest], sink, stopping: Callable[[], bool], breaker: CircuitBreaker) -> None:
        asyncio.run(self._run(requests, sink, stopping, breaker))

    async def _send(self, client, req: BatchRequest, timeout: float) -> tuple[dict, int, str | None]:
        import httpx

        from rft.batch.retry import parse_retry_after

        body = dict(req.body)
        if self.model_name:
            body["model"] = self.model_name
        headers = {"Idempotency-Key": self.idempotency_key(req.custom_id)}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            r = await client.post(self.url, json=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException as e:
            raise AttemptError("timeout", f"no response within {timeout:.1f} s ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise AttemptError("connection", f"{type(e).__name__}: {e}") from None
        rid = r.headers.get("x-request-id")
        if not 200 <= r.status_code < 300:
            try:
                data = r.json()
            except ValueError:
                data = {"error": {"message": r.text[:500]}}
            err = data.get("error") if isinstance(data, dict) else None
            msg = err.get("message") if isinstance(err, dict) else None
            raise AttemptError("http_status", f"HTTP {r.status_code}: {msg or r.reason_phrase}",
                               status_code=r.status_code, body=data if isinstance(data, dict) else None,
                               retry_after_s=parse_retry_after(r.headers, self.clock.now()), request_id=rid)
        try:
            data = r.json()
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                raise ValueError("no 'choices' list")
        except ValueError as e:
            raise AttemptError("invalid_response", f"HTTP {r.status_code} with an invalid body: {e}") from None
        return data, r.status_code, rid or data.get("id")

    async def _run(self, requests, sink, stopping, breaker) -> None:
        import httpx

        pending = iter(requests)  # shared by the workers; safe, they all run on one event loop

        async with httpx.AsyncClient(transport=self.transport, timeout=self.policy.attempt_timeout_s) as client:
            async def worker() -> None:
                for req in pending:
                    if breaker.open or stopping():
                        return

                    async def send(timeout: float, req=req):
                        return await self._send(client, req, timeout)

                    try:
                        (body, status, rid), attempts = await call_with_retries(
                            send, policy=self.policy, clock=self.clock, rng=self.rng, breaker=breaker,
                            stopping=stopping)
                    except Unfinished:
                        continue
                    except GaveUp as g:
                        sink.put(Outcome(req, gave_up=g, attempts=g.attempts))
                    else:
                        sink.put(Outcome(req, body=body, status_code=status, request_id=rid, attempts=attempts))
                    sink.commit()

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
