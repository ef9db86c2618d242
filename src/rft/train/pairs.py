"""Preference pairs from a grader: `rft pairs JOB.yaml -o pairs.jsonl` writes OpenAI-format DPO rows.

    build_pairs(job, out_path=..., samples_per_prompt=8, min_gap=0.1, seed=0, log=None, engine=None) -> dict

For every training prompt of a reinforcement job, the base model (`job.model`) samples `samples_per_prompt`
completions with the job's sampling settings (rft.sampling: temperature, top_p, top_k, max_new_tokens, stop;
the job's response_format), the job's grader scores them (with rft.extraction), and the prompt gives one
pair: its best-scored completion as `preferred_output`, its worst as `non_preferred_output`. A prompt gives no
pair when fewer than two of its samples were scored (`unscored`), when every scored sample has the same score
(`tie`), when best - worst < `min_gap` (`below_gap`), or when the best and worst texts are the same
(`same_text`). Ties between equally scored samples are broken by sample order (the first best, the first
worst), so the file is a function of (job, seed).

Each row: {"input": {"messages": <the prompt>, "tools"?}, "preferred_output": [{"role": "assistant",
"content": best}], "non_preferred_output": [...]} plus the training row's other top-level fields (its
reference fields), so a DPO job on the file can be evaluated with the same grader (`method.dpo.grader`).
The returned counts: prompts, samples, unscored samples, pairs, excluded by reason, seconds, path.

Simplified: one process; the whole training file is sampled (limit it with `builtin:...?n=` or a shorter file).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from rft.config import JobSpec
from rft.errors import RftError
from rft.fsutil import write_atomic
from rft.train.setup import load_inputs

PROMPTS_PER_BATCH = 16


def pick_pair(scores: list[float | None], texts: list[str], min_gap: float) -> tuple[int, int] | str:
    """(best index, worst index) of one prompt's samples, or why it gives no pair."""
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return "unscored"
    best = max(s for s, _ in scored)
    worst = min(s for s, _ in scored)
    if best == worst:
        return "tie"
    if best - worst < min_gap:
        return "below_gap"
    b = next(i for s, i in scored if s == best)
    w = next(i for s, i in scored if s == worst)
    if texts[b] == texts[w]:
        return "same_text"
    return b, w


def pair_row(row: dict, best: str, worst: str) -> dict:
    """An OpenAI DPO row for a reinforcement training row (its reference fields kept)."""
    out = {"input": {"messages": row["messages"]} | ({"tools": row["tools"]} if row.get("tools") else {}),
           "preferred_output": [{"role": "assistant", "content": best}],
           "non_preferred_output": [{"role": "assistant", "content": worst}]}
    out |= {k: v for k, v in row.items() if k not in ("messages", "tools") and k not in out}
    return out


def build_pairs(job: JobSpec, *, out_path: str | Path, samples_per_prompt: int = 8, min_gap: float = 0.1,
                seed: int = 0, log: Callable[[str], None] | None = None, engine=None) -> dict:
    """Sample, grade and pair (see the module docstring); writes `out_path` atomically and returns the counts.
    `engine`: an InferenceEngine to sample from (default: the job's base model on the local engine)."""
    from rft.engine.local import render_prompt
    from rft.train.step import grade_groups, sampling_params

    if job.method.type != "reinforcement":
        raise RftError(f"rft pairs needs a reinforcement job (its training prompts and grader); this one is "
                       f"{job.method.type}", hint="point it at the RFT job whose grader should rank the samples")
    if not 2 <= samples_per_prompt <= 256:
        raise RftError(f"samples_per_prompt must be in [2, 256], got {samples_per_prompt}")
    if not min_gap >= 0:
        raise RftError(f"min_gap must be >= 0, got {min_gap}")
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    inputs = load_inputs(job)
    try:
        if engine is None:
            from rft import models
            from rft.engine.local import LocalEngine
            from rft.train.setup import device_for

            model, tok = models.load(inputs.model_ref, dtype=inputs.compute_dtype, device=device_for(job))
            model.eval()
            engine = LocalEngine(model, tok, compute_dtype=inputs.compute_dtype)
        tok = engine.tokenizer
        rows = list(inputs.train_ds.rows)
        out_rows: list[dict] = []
        excluded = {"unscored": 0, "tie": 0, "below_gap": 0, "same_text": 0}
        n_unscored = 0
        for start in range(0, len(rows), PROMPTS_PER_BATCH):
            batch = rows[start:start + PROMPTS_PER_BATCH]
            prompt_ids = [render_prompt(tok, r["messages"], r.get("tools")) for r in batch]
            groups = engine.generate_ids(prompt_ids, sampling_params(job, samples_per_prompt, seed * 100_003 + start))
            flat, grades = grade_groups(job, inputs.grader, batch, groups)  # [n*G], [n*G]
            for j, row in enumerate(batch):
                sl = slice(j * samples_per_prompt, (j + 1) * samples_per_prompt)
                scores = [g.score for g in grades[sl]]
                texts = [c.text for c in flat[sl]]
                n_unscored += sum(s is None for s in scores)
                pick = pick_pair(scores, texts, min_gap)
                if isinstance(pick, str):
                    excluded[pick] += 1
                else:
                    out_rows.append(pair_row(row, texts[pick[0]], texts[pick[1]]))
            say(f"pairs: {min(start + len(batch), len(rows))}/{len(rows)} prompts, {len(out_rows)} pairs")
        write_atomic(Path(out_path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out_rows).encode())
    finally:
        inputs.close()
    res = {"object": "rft.pairs", "path": str(out_path), "model": job.model, "training_file": job.training_file,
           "grader": inputs.grader.name, "prompts": len(rows), "samples_per_prompt": samples_per_prompt,
           "samples": len(rows) * samples_per_prompt, "unscored_samples": n_unscored, "pairs": len(out_rows),
           "excluded": excluded, "min_gap": min_gap, "seed": seed, "seconds": time.perf_counter() - t0}
    say(f"pairs: {res['pairs']} pairs from {res['prompts']} prompts written to {out_path} "
        f"(excluded: {', '.join(f'{k} {v}' for k, v in excluded.items())})")
    return res
