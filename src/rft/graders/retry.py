"""One retry helper for graders that call out over the network (endpoint graders, remote judges), on tenacity.

What: `call_with_retries(attempt, policy, timing)` calls `attempt()` until it returns. `attempt` raises
`Retryable` (with the server's Retry-After, when it sent one) to ask for another try; any other exception
passes straight through, untried again. The policy bounds it:

- at most `policy.attempts` attempts;
- never a wait that would end past `policy.deadline_s` after the first attempt started (None: no deadline;
  the attempts and each request's own timeout bound it);
- between attempts, exponential backoff with full jitter: a uniform draw in [0, window], the window starting at
  `initial_backoff_s` and multiplied by `multiplier` per retry up to `max_backoff_s`; a Retry-After is honoured
  instead, up to `retry_after_cap_s`.

When it stops trying it raises `GaveUp` with every attempt's error and why it stopped (`attempts`, `deadline`).
`Timing` (clock, sleep, a uniform random draw) is injected, so tests drive time with fakes and never sleep.

Simplified: synchronous (graders run in threads); `rft.batch.retry` has the async policy batch jobs use, with the
same backoff shape.

How to run: `python -c "from rft.graders.retry import *; print(call_with_retries(lambda: 1, RetryPolicy()))"`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from tenacity import Retrying, retry_if_exception_type

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # total, the first one included
    initial_backoff_s: float = 0.5  # backoff window before the first retry
    multiplier: float = 2.0
    max_backoff_s: float = 30.0
    retry_after_cap_s: float = 30.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")


@dataclass(frozen=True)
class Timing:
    """Time as the retry loop sees it: `clock()` in seconds, `sleep(s)`, `random()` uniform in [0, 1)."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = field(default=random.random)


class Retryable(Exception):
    """One failed attempt that another attempt may fix (connection error, timeout, 429, 5xx)."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class GaveUp(Exception):
    """No more attempts: `errors` holds each attempt's message in order; `reason` is attempts or deadline."""

    def __init__(self, errors: list[str], reason: str):
        super().__init__(f"gave up after {len(errors)} attempt(s) ({reason}): {errors[-1] if errors else ''}")
        self.errors = errors
        self.reason = reason


def backoff_window(policy: RetryPolicy, retry_number: int) -> float:
    """Upper end of the jitter window before retry `retry_number` (1 = the first retry)."""
    return min(policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** (retry_number - 1))


def next_wait(policy: RetryPolicy, retry_number: int, err: BaseException | None, draw: Callable[[], float]) -> float:
    if isinstance(err, Retryable) and err.retry_after_s is not None:
        return min(max(0.0, err.retry_after_s), policy.retry_after_cap_s)
    return draw() * backoff_window(policy, retry_number)


def call_with_retries(attempt: Callable[[], T], policy: RetryPolicy, timing: Timing | None = None) -> T:
    """Run `attempt()` under `policy` (see the module docstring)."""
    timing = timing or Timing()
    errors: list[str] = []
    start = timing.clock()
    why = {"stop": "attempts"}

    def stop(rs) -> bool:
        if rs.attempt_number >= policy.attempts:
            why["stop"] = "attempts"
            return True
        if policy.deadline_s is not None and timing.clock() - start + rs.upcoming_sleep > policy.deadline_s:
            why["stop"] = "deadline"
            return True
        return False

    retrying = Retrying(stop=stop, retry=retry_if_exception_type(Retryable), sleep=timing.sleep, reraise=True,
                        wait=lambda rs: next_wait(policy, rs.attempt_number, rs.outcome.exception(), timing.random))
    try:
        for tried in retrying:
            with tried:
                try:
                    return attempt()
                except Retryable as e:
                    errors.append(str(e))
                    raise
    except Retryable:
        raise GaveUp(errors, why["stop"]) from None
    raise AssertionError("unreachable: tenacity returns or raises")


__all__ = ["GaveUp", "RetryPolicy", "Retryable", "Timing", "backoff_window", "call_with_retries", "next_wait"]
