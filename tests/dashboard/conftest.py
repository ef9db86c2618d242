"""Fixtures for the dashboard's browser tests: one registry holding a real tiny run (3 GRPO steps of the random
4-layer Llama, so metrics, samples, evaluations, checkpoints and gate verdicts exist), a live `rft serve` app on
127.0.0.1 (with and without a token), Debian's Chromium driven by Playwright, and a screenshots folder.

Chromium must be /usr/bin/chromium (`make test` installs it as root; `apt-get install -y chromium` otherwise):
a missing browser fails these tests, it never skips them. Never `playwright install`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rft.types import Completion
from tests.livetools import run_live as serve_live

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TOKEN = "dashboard-test-token-0123456789abcdef"


@pytest.fixture(scope="session")
def dash_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dash_home")


@pytest.fixture(autouse=True)
def _rft_home(dash_home, monkeypatch):
    """Overrides the root conftest's per-test home: every dashboard test (and the server thread) reads the one
    registry that holds the trained run."""
    monkeypatch.setenv("RFT_HOME", str(dash_home))


class EchoEngine:
    """The served model of the test server (the dashboard never calls it): echoes the last message."""

    def generate(self, prompts, params):
        return [[self._c(m) for _ in range(params.n)] for m in prompts]

    def _c(self, messages):
        t = messages[-1]["content"][:4]
        return Completion(text=t, token_ids=tuple(range(len(t))), logprobs=(0.0,) * len(t), finish_reason="stop",
                          prompt_tokens=1)


@pytest.fixture(scope="session")
def trained_run(dash_home, tiny_model_dir, tmp_path_factory) -> dict:
    """A finished 3-step job in the dashboard's registry (`run_job`'s result)."""
    from rft.config import parse_job
    from rft.train import loop

    raw = {
        "model": str(tiny_model_dir), "training_file": "builtin:arithmetic", "validation_file": "builtin:arithmetic",
        "seed": 0,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "y",
                       "operation": "like"},
            "hyperparameters": {"batch_size": 2, "eval_interval": 2}}},
        "rft": {"extraction": {"pattern": "-?\\d+"}, "sampling": {"n": 4, "max_new_tokens": 8},
                "eval": {"max_items": 8}, "train": {"max_steps": 3, "dtype": "float32"},
                "gates": {"min_improvement": -1.0}},
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RFT_HOME", str(dash_home))
        res = loop.run_job(parse_job(raw), output_dir=str(tmp_path_factory.mktemp("run")), log=lambda s: None)
    assert res["status"] == "succeeded", res
    return res


def make_app(tiny_model_dir, token=None):
    from rft.serve.app import bind_hosts
    from rft.serve.guard import ServeLimits
    from rft.serve.local import create_local_app

    return create_local_app(str(tiny_model_dir), token=token, loader=lambda resolved: EchoEngine(),
                            limits=ServeLimits(allowed_hosts=bind_hosts("127.0.0.1")))


@pytest.fixture(scope="session")
def base_url(trained_run, tiny_model_dir, dash_home):
    """The dashboard without a token (loopback): pages open directly."""
    with serve_live(make_app(tiny_model_dir)) as url:
        yield url


@pytest.fixture(scope="session")
def token_url(trained_run, tiny_model_dir):
    """The dashboard with RFT_API_TOKEN set: pages need a login."""
    with serve_live(make_app(tiny_model_dir, token=TOKEN)) as url:
        yield url


@pytest.fixture
def live_server_app(tiny_model_dir):
    """`with live_server_app(limits) as url`: a fresh app (no token) with these limits, live on loopback."""
    from rft.serve.local import create_local_app

    return lambda limits: serve_live(create_local_app(str(tiny_model_dir), loader=lambda resolved: EchoEngine(),
                                                      limits=limits))


@pytest.fixture(scope="session")
def api_token() -> str:
    return TOKEN


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """The folder the screenshots go to: $RFT_SCREENSHOTS, else a temporary one (printed either way)."""
    d = Path(os.environ["RFT_SCREENSHOTS"]) if os.environ.get("RFT_SCREENSHOTS") else tmp_path_factory.mktemp("shots")
    d.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {d}")
    return d


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module: Playwright's sync API keeps an asyncio loop running on the main thread while
    it is open, which would make asyncio.run() fail in tests that run after the dashboard's."""
    assert Path(CHROMIUM).exists(), (f"{CHROMIUM} is missing: the dashboard tests need Debian's Chromium "
                                     "(`apt-get install -y chromium`, which `make test` runs as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class ConsoleWatch:
    """Console errors, page errors and failed requests (4xx/5xx) seen by a page."""

    def __init__(self, page, allow_status=()):
        self.problems: list[str] = []
        self.allow_status = set(allow_status)
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("response", lambda r: self.problems.append(f"HTTP {r.status} {r.url}")
                if r.status >= 400 and r.status not in self.allow_status else None)


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(20_000)
    pg.watch = ConsoleWatch(pg)
    try:
        yield pg
    finally:
        ctx.close()
