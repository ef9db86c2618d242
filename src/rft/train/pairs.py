"""Preference pairs from a grader: `rft pairs JOB.yaml -o pairs.jsonl` writes OpenAI-format DPO rows.

    build_pairs(job, out_path=..., samples_per_prompt=8, min_gap=0.1, seed=0, preferred="best", log=None,
                engine=None) -> dict

For every training prompt of a reinforcement job, the base model (`job.model`) samples `samples_per_prompt`
completions with the job's sampling settings (rft.sampling: temperature, top_p, top_k, max_new_tokens, stop;
the job's response_format), the job's grader scores them (with rft.extraction), and the prompt gives one
pair: its best-scored completion as `preferred_output`, its worst as `non_preferred_output`. A prompt gives no
pair when fewer than two of its samples were scored (`unscored`), when every scored sample has the same score
(`tie`), when best - worst < `min_gap` (`below_gap`), or when the best and worst texts are the same
(`same_text`). Ties between equally scored samples are broken by sample order (the first best, the first
worst), so the file is a function of (job, seed).

`preferred="reference"` (`rft pairs --preferred reference`): the preferred output is the job's reference answer
instead of a sample, rendered from the row by `rft.train.reference_output` (else the template
`rft.train.learnability.reference_template` finds: rft.warm_start.reference_output or an exact-match string_check's
reference), and graded like a sample; the non-preferred one is the worst-scoring sample. This is the on-policy
half of a pair (the rejected text is what the base model really writes) with an off-policy target: sampled pairs
need the model to get the prompt right at least once, reference pairs don't. Exclusions as above, compared with
the reference's score (the reference must score at least `min_gap` above the worst sample), plus `no_reference`
(the template rendered nothing for the row) and `unscored` when the reference itself was not scored.

`preferred="auto"`: per prompt, best against worst sample where they differ by `min_gap` (both sides on-policy),
else the reference answer against the worst sample; without a known reference it is "best". The counts say how
many pairs prefer the reference (`pairs_preferring_reference`). `rft strategies` builds its DPO row this way.

Each row: {"input": {"messages": <the prompt>, "tools"?}, "preferred_output": [{"role": "assistant",
"content": best}], "non_preferred_output": [...]} plus the training row's other top-level fields (its
reference fields), so a DPO job on the file can be evaluated with the same grader (`method.dpo.grader`).
The returned counts: prompts, samples, unscored samples, pairs, excluded by reason, preferred, seconds, path.

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


def _render_reference(graders, tmpl: str, row: dict) -> str | None:
    try:
        return graders.render(tmpl, {}, row) or None
    except graders.TemplateError:
        return None


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


def pick_reference_pair(scores: list[float | None], texts: list[str], min_gap: float) -> tuple[int, int] | str:
    """(reference index, worst sample index) where the LAST entry is the reference answer and the others are
    the prompt's samples, or why it gives no pair."""
    ref_score, ref_text = scores[-1], texts[-1]
    scored = [(s, i) for i, s in enumerate(scores[:-1]) if s is not None]
    if ref_score is None or not scored:
        return "unscored"
    worst = min(s for s, _ in scored)
    if ref_score == worst:
        return "tie"
    if ref_score - worst < min_gap:  # also a reference scoring below a sample
        return "below_gap"
    w = next(i for s, i in scored if s == worst)
    if texts[w] == ref_text:
        return "same_text"
    return len(scores) - 1, w


def pick_auto_pair(scores: list[float | None], texts: list[str], min_gap: float) -> tuple[int, int] | str:
    """Both sides on-policy where the prompt's samples differ enough (best against worst); else the reference
    answer (the LAST entry) against the worst sample, or why it gives no pair."""
    got = pick_pair(scores[:-1], texts[:-1], min_gap)
    return got if not isinstance(got, str) else pick_reference_pair(scores, texts, min_gap)


# --preferred NAME -> how one prompt's scored group (with the reference appended for "reference" and "auto")
# becomes a pair
PICKERS: dict[str, Callable[[list[float | None], list[str], float], "tuple[int, int] | str"]] = {
    "best": pick_pair, "reference": pick_reference_pair, "auto": pick_auto_pair}


def pair_row(row: dict, best: str, worst: str) -> dict:
    """An OpenAI DPO row for a reinforcement training row (its reference fields kept)."""
    out = {"input": {"messages": row["messages"]} | ({"tools": row["tools"]} if row.get("tools") else {}),
           "preferred_output": [{"role": "assistant", "content": best}],
           "non_preferred_output": [{"role": "assistant", "content": worst}]}
    out |= {k: v for k, v in row.items() if k not in ("messages", "tools") and k not in out}
    return out


def build_pairs(job: JobSpec, *, out_path: str | Path, samples_per_prompt: int = 8, min_gap: float = 0.1,
                seed: int = 0, preferred: str = "best", log: Callable[[str], None] | None = None,
                engine=None) -> dict:
    """Sample, grade and pair (see the module docstring); writes `out_path` atomically and returns the counts.
    `preferred`: "best" (the best sample), "reference" (the job's reference answer) or "auto" (the best sample
    where the samples differ, else the reference).
    `engine`: an InferenceEngine to sample from (default: the job's base model on the local engine)."""
    from rft import graders
    from rft.engine.local import render_prompt
    from rft.errors import did_you_mean
    from rft.train.learnability import reference_template
    from rft.train.step import grade_groups, sampling_params
    from rft.types import Completion

    if job.method.type != "reinforcement":
        raise RftError(f"rft pairs needs a reinforcement job (its training prompts and grader); this one is "
                       f"{job.method.type}", hint="point it at the RFT job whose grader should rank the samples")
    if not 2 <= samples_per_prompt <= 256:
        raise RftError(f"samples_per_prompt must be in [2, 256], got {samples_per_prompt}")
    if not min_gap >= 0:
        raise RftError(f"min_gap must be >= 0, got {min_gap}")
    if preferred not in PICKERS:
        raise RftError(f"unknown preferred-output source '{preferred}'{did_you_mean(preferred, list(PICKERS))}; "
                       f"valid: {', '.join(PICKERS)}")
    tmpl = None
    if preferred in ("reference", "auto"):
        tmpl = job.rft.train.reference_output or reference_template(job)
        if not tmpl and preferred == "auto":  # no reference known: best against worst, both sampled
            preferred = "best"
        elif not tmpl:
            raise RftError("--preferred reference needs the job's reference answer: this job makes none known",
                           hint="set rft.train.reference_output to a template over the row, e.g. "
                                "'{{item.answer}}' (every row's reference must then pass the grader)")
    pick_fn = PICKERS[preferred]
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
        if tmpl is not None:
            excluded["no_reference"] = 0
        n_unscored = n_from_reference = 0
        for start in range(0, len(rows), PROMPTS_PER_BATCH):
            batch = rows[start:start + PROMPTS_PER_BATCH]
            prompt_ids = [render_prompt(tok, r["messages"], r.get("tools")) for r in batch]
            groups = engine.generate_ids(prompt_ids, sampling_params(job, samples_per_prompt, seed * 100_003 + start))
            G = samples_per_prompt
            refs: list[str | None] = [None] * len(batch)
            if tmpl is not None:  # the reference answer joins each group as its last member, graded like a sample
                refs = [_render_reference(graders, tmpl, r) for r in batch]
                groups = [[*g, Completion(text=ref or "", token_ids=(), logprobs=(), finish_reason="stop")]
                          for g, ref in zip(groups, refs)]
                G += 1
            flat, grades = grade_groups(job, inputs.grader, batch, groups)  # [n*G], [n*G]
            for j, row in enumerate(batch):
                sl = slice(j * G, (j + 1) * G)
                scores = [g.score for g in grades[sl]]
                texts = [c.text for c in flat[sl]]
                n_unscored += sum(s is None for s in scores[:samples_per_prompt])
                if tmpl is not None and not refs[j]:  # the template rendered nothing for this row
                    pick = pick_pair(scores[:-1], texts[:-1], min_gap) if preferred == "auto" else "no_reference"
                else:
                    pick = pick_fn(scores, texts, min_gap)
                if isinstance(pick, str):
                    excluded[pick] += 1
                else:
                    n_from_reference += int(tmpl is not None and pick[0] == G - 1)
                    out_rows.append(pair_row(row, texts[pick[0]], texts[pick[1]]))
            say(f"pairs: {min(start + len(batch), len(rows))}/{len(rows)} prompts, {len(out_rows)} pairs")
        write_atomic(Path(out_path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out_rows).encode())
    finally:
        inputs.close()
    res = {"object": "rft.pairs", "path": str(out_path), "model": job.model, "training_file": job.training_file,
           "grader": inputs.grader.name, "preferred": preferred, "prompts": len(rows), "samples_per_prompt": samples_per_prompt,
           "samples": len(rows) * samples_per_prompt, "unscored_samples": n_unscored, "pairs": len(out_rows),
           "pairs_preferring_reference": n_from_reference,
           "excluded": excluded, "min_gap": min_gap, "seed": seed, "seconds": time.perf_counter() - t0}
    say(f"pairs: {res['pairs']} pairs from {res['prompts']} prompts written to {out_path} "
        f"(excluded: {', '.join(f'{k} {v}' for k, v in excluded.items())})")
    return res
