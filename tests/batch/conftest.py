"""Fixtures for the batch tests (the fakes live in batchfakes.py)."""

from __future__ import annotations

import pytest
from batchfakes import FakeClock, FlakyServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock) -> FlakyServer:
    s = FlakyServer()
    s.clock = clock
    return s
