"""The review queue: which of a job's stored samples and evaluation items a person should look at next.

How to call: `items = load_items(run_dir)` reads what a training run stored, then `draw(items, n, seed=0,
reviewed={keys already reviewed})` returns up to n items, each with `why` (the stratum that drew it and every
reason that applies). `rft.review.verdicts.job_queue(reg, job, n, seed)` does both for a registry job.

What is read (the formats the training loop writes, `rft.train.runlog` / `rft.train.step.sample_rows`):
  samples/step_<N>.jsonl   one row per completion: step, prompt, completion, reward (None: the grader failed),
                           error, advantage, finish_reason; key "train:<N>:<line index>"
  eval_<name>.json         an evaluation report: items[*] with index, id, score, error, completion, answer,
                           fields; key "eval:eval_<name>:<index>". eval_baseline.json is the reference for
                           "regressed" and is itself queued only when it is the only report.

The draw (seeded, deterministic for the same folder, n, seed and reviewed set). Strata, each item in every one
that applies:
  grader_error     the grader gave no score (an error or timeout)                       over-sampled (weight 2)
  regressed        an evaluation item scoring below its baseline score                  over-sampled (weight 2)
  high_advantage   a training sample whose |advantage| is in the top quarter (> 0)      over-sampled (weight 2)
  late_step        a training sample from the last quarter of the stored steps          over-sampled (weight 2)
  score_fail       grader score below `threshold`                                       weight 1
  score_pass       grader score at or above `threshold`                                 weight 1
Each stratum's members are shuffled by one `random.Random(seed)`; then rounds are drawn until n items are
drawn or nothing is left. A round takes one not-yet-drawn item from every stratum in the order above, then
`weight - 1` more from each over-sampled stratum. So with n >= 6 every non-empty stratum is represented, the
over-sampled ones get about twice the share of the score strata, and an item is drawn once (by the first
stratum that reaches it; `why.reasons` lists all of its strata).
Items already reviewed (their keys in `reviewed`) are never drawn.

Simplified: the score strata are pass/fail at one threshold (not quantile bins; graders here mostly give 0/1);
training samples carry only the prompt's last message, not the dataset row's reference fields (`reference` is
whatever the sample row or eval item stored: eval items keep the row's scalar fields and `answer`).
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

from rft.errors import RftError

STRATA = ("grader_error", "regressed", "high_advantage", "late_step", "score_fail", "score_pass")
WEIGHTS = {"grader_error": 2, "regressed": 2, "high_advantage": 2, "late_step": 2, "score_fail": 1, "score_pass": 1}
WHY = {"grader_error": "the grader gave no score (error: {error})",
       "regressed": "validation item that scored {score} against {baseline_score} at baseline",
       "high_advantage": "a high-|advantage| sample ({advantage:+.3f}): it moved the policy most",
       "late_step": "a sample from a late step ({step})",
       "score_fail": "a sample the grader failed (score {score})",
       "score_pass": "a sample the grader passed (score {score})"}
_STEP_RE = re.compile(r"step_(\d+)\.jsonl")
_MAX_TEXT = 20_000  # characters of a prompt or completion kept in a queue item


def clip(s) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= _MAX_TEXT else s[:_MAX_TEXT] + " ...[truncated]"


def _score(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _read_json(p: Path):
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RftError(f"{p}: cannot read this evaluation report ({e})") from None


def train_items(run_dir: Path) -> list[dict]:
    """Every stored training sample of the run folder, oldest step first."""
    out = []
    files = sorted((int(m.group(1)), p) for p in (Path(run_dir) / "samples").glob("step_*.jsonl")
                   if (m := _STEP_RE.fullmatch(p.name)))
    for step, p in files:
        with open(p, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    raise RftError(f"{p}:{i + 1}: not a JSON object (a damaged samples file?)") from None
                ref = r.get("reference") or r.get("item") or {}
                out.append({"key": f"train:{step}:{i}", "source": "train", "step": step, "index": i,
                            "prompt": clip(r.get("prompt")), "completion": clip(r.get("completion")),
                            "grader_score": _score(r.get("reward")), "error": r.get("error"),
                            "advantage": _score(r.get("advantage")), "finish_reason": r.get("finish_reason"),
                            "reference": ref if isinstance(ref, dict) else {"reference": ref},
                            "baseline_score": None})
    return out


def eval_items(run_dir: Path) -> list[dict]:
    """The items of the run folder's evaluation reports; `baseline_score` from eval_baseline.json (same index)."""
    run_dir = Path(run_dir)
    reports = sorted(run_dir.glob("eval_*.json"))
    base = run_dir / "eval_baseline.json"
    base_scores: dict[int, float | None] = {}
    if base.exists():
        for it in (_read_json(base).get("items") or []):
            if isinstance(it, dict) and isinstance(it.get("index"), int):
                base_scores[it["index"]] = _score(it.get("score"))
    if len(reports) > 1:
        reports = [p for p in reports if p != base]
    out = []
    for p in reports:
        rep = _read_json(p)
        step = rep.get("step") if isinstance(rep, dict) else None
        for it in (rep.get("items") or []) if isinstance(rep, dict) else []:
            if not isinstance(it, dict) or not isinstance(it.get("index"), int):
                continue
            idx = it["index"]
            ref = dict(it.get("fields") or {})
            if it.get("answer") is not None:
                ref.setdefault("answer", it["answer"])
            out.append({"key": f"eval:{p.stem}:{idx}", "source": "eval", "step": step if isinstance(step, int) else None,
                        "index": idx, "prompt": clip(it.get("prompt") or ""), "completion": clip(it.get("completion")),
                        "grader_score": _score(it.get("score")), "error": it.get("error"), "advantage": None,
                        "finish_reason": it.get("finish_reason"), "reference": ref,
                        "baseline_score": base_scores.get(idx) if p != base else None})
    return out


def load_items(run_dir: str | Path) -> list[dict]:
    """Every reviewable item of a run folder: training samples, then evaluation items."""
    return train_items(Path(run_dir)) + eval_items(Path(run_dir))


def strata_of(items: list[dict], *, threshold: float = 0.5) -> dict[str, list[str]]:
    """{key: [the strata the item belongs to, in STRATA order]} (see the module docstring)."""
    advs = sorted(abs(it["advantage"]) for it in items if it["source"] == "train" and it["advantage"] is not None)
    # the top quarter of |advantage|: at or above the 75th percentile (nearest rank), and never a zero advantage
    adv_cut = advs[min(len(advs) - 1, math.ceil(0.75 * len(advs)) - 1)] if advs else math.inf
    steps = sorted({it["step"] for it in items if it["source"] == "train"})
    late_from = steps[len(steps) - max(1, math.ceil(len(steps) / 4))] if steps else math.inf
    out = {}
    for it in items:
        s, tags = it["grader_score"], []
        if s is None:
            tags.append("grader_error")
        if it["source"] == "eval" and s is not None and it.get("baseline_score") is not None and s < it["baseline_score"]:
            tags.append("regressed")
        if it["source"] == "train" and it["advantage"] is not None and abs(it["advantage"]) >= adv_cut \
                and abs(it["advantage"]) > 0:
            tags.append("high_advantage")
        if it["source"] == "train" and len(steps) > 1 and it["step"] >= late_from:
            tags.append("late_step")
        if s is not None:
            tags.append("score_pass" if s >= threshold else "score_fail")
        out[it["key"]] = tags
    return out


def _why(item: dict, stratum: str, reasons: list[str]) -> dict:
    fmt = {k: item.get(k) for k in ("error", "score", "baseline_score", "advantage", "step")}
    fmt["score"] = item["grader_score"]
    fmt["advantage"] = item["advantage"] if item["advantage"] is not None else 0.0
    return {"stratum": stratum, "reasons": reasons, "text": WHY[stratum].format(**fmt)}


def draw(items: list[dict], n: int, *, seed: int = 0, reviewed=(), threshold: float = 0.5) -> list[dict]:
    """Up to n items for review, stratified and seeded (see the module docstring); each with `why`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise RftError(f"the number of items to review must be a whole number >= 0, got {n!r}")
    reviewed = set(reviewed)
    pool = [it for it in items if it["key"] not in reviewed]
    tags = strata_of(pool, threshold=threshold)
    rng = random.Random(seed)
    members: dict[str, list[dict]] = {s: [] for s in STRATA}
    for it in pool:
        for s in tags[it["key"]]:
            members[s].append(it)
    for s in STRATA:
        rng.shuffle(members[s])
    taken: set[str] = set()
    out: list[dict] = []
    pos = {s: 0 for s in STRATA}
    def take(s: str, k: int) -> int:
        got = 0
        while got < k and len(out) < n and pos[s] < len(members[s]):
            it = members[s][pos[s]]
            pos[s] += 1
            if it["key"] in taken:
                continue
            taken.add(it["key"])
            out.append(dict(it) | {"why": _why(it, s, tags[it["key"]])})
            got += 1
        return got

    while len(out) < n:
        # a round: one item from every stratum (so a short queue still covers them all), then the over-sampled
        # strata take the rest of their weight
        got = sum(take(s, 1) for s in STRATA)
        got += sum(take(s, WEIGHTS[s] - 1) for s in STRATA if WEIGHTS[s] > 1)
        if not got:
            break
    return out


def counts(queue: list[dict]) -> dict[str, int]:
    """How many queued items each stratum drew."""
    c = {s: 0 for s in STRATA}
    for it in queue:
        c[it["why"]["stratum"]] += 1
    return c
