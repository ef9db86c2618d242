"""Inference engines. One interface serves training rollouts, evaluation, judge graders, batch and serving.

`InferenceEngine.generate(prompts, params)` takes chat prompts (lists of OpenAI-style messages) and returns,
for each prompt, `params.n` `Completion`s with token ids and log-probabilities (engine/protocol.py).
`load_engine(model_ref)` (engine/loader.py) is the one way to get a local engine for a model reference.

Modules, bottom to top: protocol (these types), sampling (temperature / top-k / top-p draws, stop rules),
decoder (the decoder state and interface; the transformers fallback), cpu_kernels and fast_llama (the fast
decoder), predicted (speculative decoding with a user draft, streaming), local (`LocalEngine`), loader.
"""

from __future__ import annotations

from rft.engine.protocol import GenerationStats, InferenceEngine, SamplingParams

__all__ = ["GenerationStats", "InferenceEngine", "SamplingParams", "load_engine"]


def __getattr__(name: str):
    # `rft.engine.load_engine` without importing torch and transformers for every user of SamplingParams:
    # the loader module (and with it the local engine) is imported on first access.
    if name == "load_engine":
        from rft.engine.loader import load_engine

        return load_engine
    raise AttributeError(f"module 'rft.engine' has no attribute {name!r}")
