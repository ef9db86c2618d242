"""Fixtures for grader tests: a scripted judge (no model needed) and a small, fast sandbox pool."""

from __future__ import annotations

import threading

import pytest

from rft.graders.python_grader import configure_sandbox
from rft.graders.sandbox import SandboxLimits, SandboxPool
from rft.graders.score_model import JudgeReply, judge_override


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


@pytest.fixture
def scripted_judge():
    """Factory: `judge = scripted_judge('{"result": 0.5}')` routes every judge model to it for this test."""
    installed = []

    def make(*replies):
        judge = ScriptedJudge(*replies)
        ctx = judge_override(judge)
        ctx.__enter__()
        installed.append(ctx)
        return judge

    yield make
    for ctx in reversed(installed):
        ctx.__exit__(None, None, None)


TEST_LIMITS = SandboxLimits(timeout_s=3.0, memory_mb=768, nproc=64, fsize_mb=16, scratch_mb=48, output_bytes=4096)


@pytest.fixture(scope="session")
def sandbox_pool():
    """A 2-worker pool with a 3 s limit, shared by the grader tests (workers stay warm across tests)."""
    pool = SandboxPool(size=2, limits=TEST_LIMITS, grace_s=2.0)
    yield pool
    pool.close()


@pytest.fixture
def python_sandbox(sandbox_pool):
    """Route python graders built in this test to the test pool."""
    configure_sandbox(pool=sandbox_pool)
    yield sandbox_pool
    configure_sandbox()
