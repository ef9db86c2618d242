"""Library entry points that the CLI, the server and the dashboard share."""

from __future__ import annotations

from rft import graders, models
from rft.config import ExtractionConfig
from rft.data import load_dataset
from rft.engine.local import LocalEngine, best_cpu_dtype
from rft.eval import evaluate
from rft.types import EvalReport


def load_engine(model_ref: str, *, dtype=None) -> LocalEngine:
    import torch

    resolved = models.resolve(model_ref)
    model, tok = models.load(resolved, dtype=torch.float32)
    return LocalEngine(model, tok, compute_dtype=dtype or best_cpu_dtype())


def evaluate_model(model_ref: str, data: str, grader_path: str, *, n: int = 0, max_new_tokens: int = 64,
                   limit: int | None = None, extract: str | None = None, split: str = "validation",
                   seed: int = 0) -> EvalReport:
    spec = graders.load_grader_file(grader_path)
    grader = graders.build(spec, source=grader_path)
    ds = load_dataset(data, split=split)
    engine = load_engine(model_ref)
    try:
        return evaluate(engine, ds, grader, model_name=model_ref, max_new_tokens=max_new_tokens, samples=n,
                        extraction=ExtractionConfig(pattern=extract), seed=seed, max_items=limit)
    finally:
        grader.close()
