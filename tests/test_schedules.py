"""The learning-rate schedule (rft.optimizer.schedule / warmup_steps) against hand-computed values.

Step k is 1-based; with W warmup steps and T total steps, i = k - 1:
    warmup (i < W)   lr = base * (i + 1) / W
    constant         lr = base
    linear           lr = base * max(0, 1 - (i - W) / (T - W))
    cosine           lr = base * 0.5 * (1 + cos(pi * min(1, (i - W) / (T - W))))

Run: `.venv/bin/python -m pytest -q tests/test_schedules.py`.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rft.config import OptimizerConfig
from rft.train.setup import make_scheduler

BASE = 0.1


def _lrs(schedule: str, warmup: int, total: int, steps: list[int]) -> list[float]:
    """The LR `apply` returns at each step, checked against what it sets on every parameter group."""
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                           {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 2 * BASE}], lr=BASE)
    job = SimpleNamespace(rft=SimpleNamespace(optimizer=OptimizerConfig(schedule=schedule, warmup_steps=warmup)))
    sched = make_scheduler(opt, job, total)
    out = []
    for k in steps:
        lr = sched.apply(k)
        assert opt.param_groups[0]["lr"] == lr and opt.param_groups[1]["lr"] == pytest.approx(2 * lr)
        out.append(lr)
    return out


def test_constant():
    assert _lrs("constant", 0, 10, [1, 2, 5, 10, 11]) == [BASE] * 5


def test_constant_with_warmup():
    # W = 4: 1/4, 2/4, 3/4, 4/4 of the base, then the base
    assert _lrs("constant", 4, 10, [1, 2, 3, 4, 5, 10]) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_linear():
    # T = 10, W = 0: 1 - (k - 1) / 10
    assert _lrs("linear", 0, 10, [1, 2, 6, 10, 11, 20]) == pytest.approx([0.1, 0.09, 0.05, 0.01, 0.0, 0.0])


def test_linear_with_warmup():
    # T = 10, W = 2: warmup 0.05, 0.1; then 1 - (k - 3) / 8
    assert _lrs("linear", 2, 10, [1, 2, 3, 7, 10]) == pytest.approx([0.05, 0.1, 0.1, 0.05, 0.0125])


def test_cosine():
    # T = 10, W = 0: 0.5 * (1 + cos(pi * (k - 1) / 10)); k = 4: 0.5 * (1 + cos(0.3 pi)) = 0.7938926
    assert _lrs("cosine", 0, 10, [1, 4, 6, 11, 15]) == pytest.approx([0.1, 0.07938926, 0.05, 0.0, 0.0], abs=1e-8)


def test_cosine_with_warmup():
    # T = 10, W = 2: warmup 0.05, 0.1; then progress (k - 3) / 8: k = 5 -> 0.25 -> 0.5 * (1 + cos(pi / 4)) = 0.8535534
    assert _lrs("cosine", 2, 10, [1, 2, 3, 5, 7, 11]) == pytest.approx([0.05, 0.1, 0.1, 0.08535534, 0.05, 0.0],
                                                                        abs=1e-8)
