"""The retry policy at work: which failures are retried, how long to wait, when to give up, when to stop.

- `AttemptError` is one failed attempt: a transport failure (connection, timeout), an HTTP error status, or
  an engine error. It is retryable only if a retry can succeed: connection errors, timeouts, 408, 409, 429
  and 5xx. Every other 4xx (400, 401, 403, 404, 422, ...) is permanent.
- `next_wait` is exponential backoff with full jitter (a uniform draw in [0, window], the window growing by
  `backoff_multiplier` per attempt up to `max_backoff_s`), unless the server sent `Retry-After` (or OpenAI's
  `retry-after-ms`), which is honoured up to `retry_after_cap_s`.
- `call_with_retries` runs one request under the policy with tenacity's `AsyncRetrying`: at most
  `max_attempts` attempts, and never a wait that would cross the request's total deadline. It returns the
  result and the list of failed attempts, or raises `GaveUp` (a dead letter: permanent error, attempts or
  deadline exhausted) or `Unfinished` (the batch is stopping; the request stays pending and is resumable).
- `CircuitBreaker` counts consecutive failures across all requests that say the endpoint (not the request)
  is at fault: retryable ones, and 401 / 403 / 404. Once `threshold` is reached it opens and no more requests
  are sent in this run; the ones not sent stay pending (resumable), not failed.

`Clock` is injectable (now / sleep / async sleep) so tests drive time with a fake clock.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from typing import Awaitable, Callable

from tenacity import AsyncRetrying

from rft.batch.config import RetryPolicy

RETRYABLE_STATUS = (408, 409, 429)
SYSTEMIC_STATUS = (401, 403, 404)  # permanent, but the same for every request: they trip the breaker


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or 500 <= status <= 599


class Clock:
    """Wall-clock time and sleeping; tests pass a fake with the same three methods."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AttemptError(Exception):
    """One failed attempt. kind: connection | timeout | http_status | invalid_response | engine."""

    def __init__(self, kind: str, message: str, *, status_code: int | None = None,
                 retry_after_s: float | None = None, body: dict | None = None, request_id: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.body = body
        self.request_id = request_id

    @property
    def retryable(self) -> bool:
        if self.status_code is not None:
            return is_retryable_status(self.status_code)
        return self.kind in ("connection", "timeout", "invalid_response")

    @property
    def code(self) -> str:
        """The error code for the error file: the server's own code when it sent one."""
        err = (self.body or {}).get("error") if isinstance(self.body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            return err["code"]
        return f"http_{self.status_code}" if self.status_code is not None else self.kind

    def record(self, attempt: int, started_at: float, finished_at: float) -> dict:
        rec = {"attempt": attempt, "started_at": started_at, "finished_at": finished_at,
               "error": {"kind": self.kind, "code": self.code, "message": self.message,
                         "status_code": self.status_code, "retryable": self.retryable}}
        if self.retry_after_s is not None:
            rec["error"]["retry_after_s"] = self.retry_after_s
        return rec


class GaveUp(Exception):
    """A request that will not be tried again in this run: it goes to the error file (the dead letters)."""

    def __init__(self, last: AttemptError, attempts: list[dict], reason: str):
        super().__init__(f"{reason}: {last.message}")
        self.last = last
        self.attempts = attempts
        self.reason = reason  # permanent_error | max_attempts | deadline_exceeded


class Unfinished(Exception):
    """The batch stopped (circuit breaker, cost limit, cancel) before this request finished: not a failure."""


class CircuitBreaker:
    def __init__(self, threshold: int):
        self.threshold = threshold
        self.consecutive = 0
        self.open = False

    def success(self) -> None:
        self.consecutive = 0

    def failure(self, err: AttemptError) -> None:
        # 400 / 422 say this request is bad, not that the endpoint is sick; 401 / 403 / 404 (bad key, no such
        # model) fail every request alike, so they count, though each is not retried.
        if not (err.retryable or err.status_code in SYSTEMIC_STATUS):
            return
        self.consecutive += 1
        if self.threshold and self.consecutive >= self.threshold:
            self.open = True


def parse_retry_after(headers, now: float) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` (seconds or an HTTP date), else None."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def backoff_window(policy: RetryPolicy, retry_number: int) -> float:
    """Upper end of the jitter window before retry number `retry_number` (1 = the first retry)."""
    return min(policy.max_backoff_s, policy.initial_backoff_s * policy.backoff_multiplier ** (retry_number - 1))


def next_wait(policy: RetryPolicy, retry_number: int, err: BaseException | None, rng: random.Random) -> float:
    if isinstance(err, AttemptError) and err.retry_after_s is not None:
        return min(err.retry_after_s, policy.retry_after_cap_s)
    return rng.uniform(0.0, backoff_window(policy, retry_number))


async def call_with_retries(send: Callable[[float], Awaitable[object]], *, policy: RetryPolicy, clock,
                            rng: random.Random, breaker: CircuitBreaker,
                            stopping: Callable[[], bool]) -> tuple[object, list[dict]]:
    """Run `send(timeout_s)` under the policy. See the module docstring for the outcomes."""
    attempts: list[dict] = []
    start = clock.now()
    why = {"stop": "max_attempts"}

    def stop(rs) -> bool:
        if rs.attempt_number >= policy.max_attempts:
            why["stop"] = "max_attempts"
            return True
        if clock.now() - start + rs.upcoming_sleep >= policy.request_deadline_s:
            why["stop"] = "deadline_exceeded"
            return True
        return False

    def retry(rs) -> bool:
        e = rs.outcome.exception()
        return isinstance(e, AttemptError) and e.retryable and not breaker.open and not stopping()

    retrying = AsyncRetrying(stop=stop, retry=retry, sleep=clock.asleep, reraise=True,
                             wait=lambda rs: next_wait(policy, rs.attempt_number, rs.outcome.exception(), rng))
    try:
        async for attempt in retrying:
            with attempt:
                if breaker.open or stopping():
                    raise Unfinished()
                t0 = clock.now()
                remaining = policy.request_deadline_s - (t0 - start)
                try:
                    result = await send(max(0.001, min(policy.attempt_timeout_s, remaining)))
                except AttemptError as e:
                    attempts.append(e.record(attempt.retry_state.attempt_number, t0, clock.now()))
                    breaker.failure(e)
                    raise
                breaker.success()
                return result, attempts
    except AttemptError as e:
        if e.retryable and (breaker.open or stopping()):
            raise Unfinished() from None
        raise GaveUp(e, attempts, why["stop"] if e.retryable else "permanent_error") from None
    raise AssertionError("unreachable: tenacity returns or raises")
