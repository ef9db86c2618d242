"""Synthetic run folders for the review tests: the files the training loop writes (samples/step_N.jsonl,
eval_baseline.json, eval_final.json), with known grader errors, advantages and regressions."""

from __future__ import annotations

import json
from pathlib import Path

STEPS = 8  # steps 1..8; late steps (last quarter) are 7 and 8
PER_STEP = 8  # 2 prompts x group of 4


def sample_rows(step: int) -> list[dict]:
    """Per step: rewards [1, 0, None, 1, 0, 0, 1, 0] (one grader error per step); advantages grow with the index."""
    rewards = [1.0, 0.0, None, 1.0, 0.0, 0.0, 1.0, 0.0]
    rows = []
    for i, r in enumerate(rewards):
        adv = 0.0 if r is None else (i + 1) / 10 * (1 if r else -1)
        rows.append({"step": step, "prompt": f"What is {step} + {i // 4}?", "completion": f"answer {step + i // 4} {i}",
                     "reward": r, "error": "grader_exception" if r is None else None, "advantage": adv,
                     "finish_reason": "stop"})
    return rows


def eval_report(scores: list[float | None], step: int) -> dict:
    items = [{"index": i, "id": None, "score": s, "passed": None if s is None else s >= 1.0,
              "error": None if s is not None else "grader_timeout", "completion": f"eval answer {i}",
              "completion_tokens": 3, "finish_reason": "stop", "answer": str(i), "fields": {"answer": str(i), "topic": "t" + str(i % 2)}}
             for i, s in enumerate(scores)]
    return {"accuracy": 0.5, "step": step, "items": items}


BASELINE = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
FINAL = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, None, 0.0, 1.0, 0.0]  # items 1 and 2 regressed (1 -> 0); 6 unscored


def make_run(root: Path) -> Path:
    run = Path(root)
    (run / "samples").mkdir(parents=True, exist_ok=True)
    for s in range(1, STEPS + 1):
        text = "".join(json.dumps(r) + "\n" for r in sample_rows(s))
        (run / "samples" / f"step_{s:06d}.jsonl").write_text(text)
    (run / "eval_baseline.json").write_text(json.dumps(eval_report(BASELINE, 0)))
    (run / "eval_final.json").write_text(json.dumps(eval_report(FINAL, STEPS)))
    return run
