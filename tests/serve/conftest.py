"""Fixtures for the server tests: a second tiny model (different weights), a scripted engine, an SSE parser,
and `live_server(app)`: the app on a real uvicorn server on 127.0.0.1 (a thread, a free port)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from rft.types import Completion
from tests.livetools import run_live


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny Llama of `tiny_model_dir` with other random weights (seed 1)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny_llama_b")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


class ScriptedEngine:
    """A fake engine: the completion text is f"{label}:{last user message}", truncated to max_new_tokens
    characters (one token per character). Records every call. `gate` (an Event), if set, makes the first
    `generate` wait until it is set, after signalling `entered`."""

    def __init__(self, label: str = "fake"):
        self.label = label
        self.generate_calls: list[tuple[list, object]] = []
        self.predicted_calls: list[tuple[list, object, str]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def _complete(self, messages, params) -> Completion:
        if messages[-1]["content"] == "boom":
            raise ValueError("scripted failure")
        text = f"{self.label}:{messages[-1]['content']}"[: params.max_new_tokens]
        finish = "length" if len(text) == params.max_new_tokens else "stop"
        return Completion(text=text, token_ids=tuple(range(len(text))), logprobs=(0.0,) * len(text),
                          finish_reason=finish, prompt_tokens=sum(len(m["content"]) for m in messages))

    def generate(self, prompts, params):
        self.generate_calls.append((list(prompts), params))
        if self.gate is not None and len(self.generate_calls) == 1:
            self.entered.set()
            self.gate.wait(30)
        return [[self._complete(m, params) for _ in range(params.n)] for m in prompts]

    def generate_predicted(self, messages, params, prediction):
        self.predicted_calls.append((messages, params, prediction))
        c = self._complete(messages, params)
        acc = len(c.text) if c.text == prediction else 0
        return Completion(c.text, c.token_ids, c.logprobs, c.finish_reason, c.prompt_tokens,
                          accepted_prediction_tokens=acc, rejected_prediction_tokens=len(prediction) - acc)

    def stream(self, messages, params, prediction=None):
        c = self.generate_predicted(messages, params, prediction) if prediction else self._complete(messages, params)
        for ch in c.text:
            yield ch, None
        yield "", c


def sse_events(text: str) -> list:
    """The `data:` payloads of an SSE body: parsed JSON, or the string '[DONE]'."""
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


@pytest.fixture
def scripted():
    """The ScriptedEngine class."""
    return ScriptedEngine


@pytest.fixture
def parse_sse():
    return sse_events


@pytest.fixture
def live_server():
    """`with live_server(app) as base_url: ...`"""
    return run_live
