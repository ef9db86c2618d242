"""Fixtures for grader tests: a grader context whose judges are scripted (no model needed), whose python graders
share a small, fast sandbox pool, and whose HTTP client never sleeps for real."""

from __future__ import annotations

import threading

import pytest

from rft.graders import GraderContext, HttpClient, Judges
from rft.graders.judges import JudgeReply
from rft.graders.retry import Timing
from rft.graders.sandbox import SandboxLimits, SandboxPool


class ScriptedJudge:
    """Answers with scripted replies in order (the last one repeats) and records every prompt it saw.
    A reply may be a str, a JudgeReply, or an Exception instance to raise."""

    def __init__(self, *replies):
        self.replies = list(replies) or ['{"result": 1}']
        self.calls: list[tuple[list[dict], object]] = []
        self.lock = threading.Lock()

    def complete(self, messages, params):
        with self.lock:
            self.calls.append((messages, params))
            reply = self.replies[min(len(self.calls), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, str):
            return JudgeReply(reply, prompt_tokens=11, completion_tokens=5)
        return reply


class FakeTime:
    """A clock that only moves when something sleeps on it (or `step` is set: every reading advances it); it
    records every sleep. `random()` is the jitter draw: 1.0 gives the top of each backoff window."""

    def __init__(self, step: float = 0.0, draw: float = 1.0):
        self.now, self.step, self.draw = 0.0, step, draw
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def clock(self) -> float:
        with self.lock:
            t = self.now
            self.now += self.step
            return t

    def sleep(self, s: float) -> None:
        with self.lock:
            self.sleeps.append(s)
            self.now += s

    def random(self) -> float:
        return self.draw

    def timing(self) -> Timing:
        return Timing(clock=self.clock, sleep=self.sleep, random=self.random)


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def grader_context(sandbox_pool, fake_time):
    """The context grader tests build with: the shared test sandbox pool (started only if a python grader runs),
    judges that `scripted_judge` fills, and an HTTP client on `fake_time` (retry waits are recorded, not slept)."""
    ctx = GraderContext(sandbox_pool=sandbox_pool, judges=Judges(), http=HttpClient(timing=fake_time.timing()))
    yield ctx
    ctx.close()


@pytest.fixture
def scripted_judge(grader_context):
    """Factory: `judge = scripted_judge('{"result": 0.5}')` routes every judge model of `grader_context` to it."""

    def make(*replies):
        judge = ScriptedJudge(*replies)
        grader_context.judges.set("*", judge)
        return judge

    return make


TEST_LIMITS = SandboxLimits(timeout_s=3.0, memory_mb=768, nproc=64, fsize_mb=16, scratch_mb=48, output_bytes=4096)


@pytest.fixture(scope="session")
def sandbox_pool():
    """A 2-worker pool with a 3 s limit, shared by the grader tests (workers stay warm across tests)."""
    pool = SandboxPool(size=2, limits=TEST_LIMITS, grace_s=2.0)
    yield pool
    pool.close()


@pytest.fixture
def python_sandbox(sandbox_pool, grader_context):
    """The test pool; python graders built with `grader_context` run in it."""
    assert grader_context.sandbox_pool is sandbox_pool
    return sandbox_pool
