"""Run a model over a validation set and grade it (the same grader path as training).

Greedy decoding gives the headline accuracy (mean grader score over scored items, with a 95% CI). With
`samples > 0`, that many sampled completions per item give pass@1 and pass@k (unbiased estimator).
"""

from __future__ import annotations

import time

from rft.config import ExtractionConfig
from rft.engine import SamplingParams
from rft.eval.stats import mean_ci, pass_at_k
from rft.extraction import sample_from_text
from rft.graders import Grader, grade_many
from rft.types import EvalReport


def evaluate(
    engine,
    dataset,
    grader: Grader,
    *,
    model_name: str,
    max_new_tokens: int = 64,
    samples: int = 0,
    temperature: float = 1.0,
    extraction: ExtractionConfig | None = None,
    seed: int = 0,
    step: int | None = None,
    max_items: int | None = None,
    grader_workers: int | None = None,
    pass_threshold: float = 1.0,
) -> EvalReport:
    t0 = time.perf_counter()
    extraction = extraction or ExtractionConfig()
    rows = list(dataset.rows[:max_items] if max_items else dataset.rows)
    prompts = [r["messages"] for r in rows]
    greedy = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens))
    texts = [g[0] for g in greedy]
    samples_ns = [sample_from_text(c.text, extraction, finish_reason=c.finish_reason) for c in texts]
    grades = grade_many(grader, samples_ns, rows, max_workers=grader_workers)
    scored = [g.score for g in grades if g.score is not None]
    acc = mean_ci(scored)
    items = tuple(
        {"index": i, "score": g.score, "error": g.error, "completion": c.text, "answer": rows[i].get("answer")}
        for i, (g, c) in enumerate(zip(grades, texts))
    )
    pak: dict[int, float] = {}
    if samples and samples > 0:
        sampled = engine.generate(
            prompts, SamplingParams(n=samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
        )
        flat_s, flat_r = [], []
        for r, comps in zip(rows, sampled):
            for c in comps:
                flat_s.append(sample_from_text(c.text, extraction, finish_reason=c.finish_reason))
                flat_r.append(r)
        sgr = grade_many(grader, flat_s, flat_r, max_workers=grader_workers)
        # a sample "passes" at the grader's own pass_threshold when it has one, else at a full score
        threshold = grader.pass_threshold if getattr(grader, "pass_threshold", None) is not None else pass_threshold
        ks = sorted({1, samples})
        for k in ks:
            vals = []
            for i in range(len(rows)):
                g = sgr[i * samples : (i + 1) * samples]
                c = sum(1 for x in g if x.score is not None and x.score >= threshold)
                vals.append(pass_at_k(samples, c, k))
            pak[k] = sum(vals) / len(vals) if vals else float("nan")
    return EvalReport(
        model=model_name,
        dataset=dataset.name,
        dataset_sha256=dataset.sha256,
        accuracy=acc,
        unscored_frac=1 - len(scored) / max(1, len(grades)),
        pass_at_k=pak,
        mean_completion_tokens=sum(len(c.token_ids) for c in texts) / max(1, len(texts)),
        seconds=time.perf_counter() - t0,
        step=step,
        items=items,
    )
