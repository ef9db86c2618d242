"""The engine interface: `InferenceEngine.generate(prompts, params)` and the values it takes and reports.

`InferenceEngine.generate(prompts, params)` takes chat prompts (lists of OpenAI-style messages) and returns,
for each prompt, `params.n` `Completion`s with token ids and log-probabilities. This module imports nothing
heavy (no torch), so graders, batch and the server can name these types without loading an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from rft.engine.constrain import Constraint
from rft.types import Completion


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means off
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Grammar-constrained decoding (engine/constrain.py), e.g. from OpenAI's response_format; None: free text
    # (and no mask is computed at all).
    constraint: Constraint | None = None


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class InferenceEngine(Protocol):
    def generate(self, prompts: Sequence[list[dict]], params: SamplingParams) -> list[list[Completion]]: ...
