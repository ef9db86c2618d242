"""Verdicts for a job: the queue with what was already reviewed left out, storing verdicts (from the terminal,
a file or HTTP: one function), agreement per job and per grader version, and the guard-set export.

How to call (the CLI `rft review`, the HTTP routes /v1/rft/jobs/{id}/review/... and the dashboard all do):
  job_items(job)                         every reviewable item of the job's run folder, with reference fields
  job_queue(reg, job, n=20, seed=0)      the next n items to review (rft.review.queue.draw, reviewed ones skipped)
  parse_verdict("p" | "fail" | 0.7 ...)  a verdict as a score in [0, 1]
  load_verdict_file(path)                [{item_key, human_score, note, line}], line-numbered errors
  submit(reg, job, entries, reviewer)    store verdicts; the grader score and grader sha256 the verdict is about
                                         are taken from the run folder and the job, not from the caller
  job_agreement(reg, job_id)             {"overall": agreement(...), "by_grader": {sha256: agreement(...)}, ...}
  export_guard(reg, job, path)           write the reviewed items as a guard-set JSONL (rft.eval.guard_file)

Reference fields: evaluation items keep their dataset row's scalar fields; a training sample keeps only its
prompt, so its reference fields come from the job's training file (matched on the prompt's last message; the
first matching row wins). When that file cannot be read any more, the item has no reference fields.
Agreement is on pass/fail at 0.5 for both sides (`rft.review.agreement`); a score_model grader whose range is
not [0, 1] would need its own threshold (not handled: simplified).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rft.errors import Problem, RftError
from rft.registry import reviews
from rft.review import queue as rq
from rft.review.agreement import agreement

THRESHOLD = 0.5
PASS_WORDS = {"p": 1.0, "pass": 1.0, "passed": 1.0, "y": 1.0, "yes": 1.0, "true": 1.0,
              "f": 0.0, "fail": 0.0, "failed": 0.0, "n": 0.0, "no": 0.0, "false": 0.0}


def parse_verdict(value) -> float:
    """pass / fail (or p / f, true / false) or a number in [0, 1] -> the human score."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        v = value.strip().lower()
        if v in PASS_WORDS:
            return PASS_WORDS[v]
        try:
            value = float(v)
        except ValueError:
            raise RftError(f"verdict {value!r}: give pass, fail or a score in [0, 1]") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise RftError(f"verdict {value!r}: a score must be a number in [0, 1] (1 pass, 0 fail)")
    return float(value)


def _dataset_rows(ref: str | None, split: str) -> list[dict]:
    if not ref:
        return []
    from rft.data import load_dataset

    try:
        return list(load_dataset(str(ref), split=split).rows)
    except (RftError, OSError, ValueError):
        return []  # the file moved or was deleted: the items keep what the run folder stored


def job_items(job: dict) -> list[dict]:
    """Every reviewable item of a registry job's run folder, training samples with reference fields added."""
    run_dir = Path(job.get("run_dir") or "")
    if not run_dir.is_dir():
        raise RftError(f"job {job['id']}: its run folder {run_dir} is gone; nothing to review")
    items = rq.load_items(run_dir)
    spec = job.get("spec") or {}
    if any(it["source"] == "train" and not it["reference"] for it in items):
        by_prompt: dict[str, dict] = {}
        for r in _dataset_rows(spec.get("training_file"), "train"):
            msgs = r.get("messages") or []
            if msgs and isinstance(msgs[-1], dict):
                by_prompt.setdefault(str(msgs[-1].get("content")), r)
        for it in items:
            row = by_prompt.get(it["prompt"]) if it["source"] == "train" and not it["reference"] else None
            if row is not None:
                it["reference"] = {k: v for k, v in row.items() if k != "messages"}
    if any(it["source"] == "eval" and not it["prompt"] for it in items):
        rows = _dataset_rows(spec.get("validation_file"), "validation")
        for it in items:
            if it["source"] == "eval" and not it["prompt"] and 0 <= it["index"] < len(rows):
                msgs = rows[it["index"]].get("messages") or []
                it["prompt"] = rq.clip(msgs[-1].get("content") if msgs and isinstance(msgs[-1], dict) else "")
                it["reference"] = {k: v for k, v in rows[it["index"]].items() if k != "messages"} | it["reference"]
    return items


def reviewed_keys(reg, job_id: str) -> set[str]:
    return {v["item_key"] for v in reviews.list_verdicts(reg, job_id)}


def job_queue(reg, job: dict, n: int = 20, *, seed: int = 0) -> dict:
    """The next n items to review for a job (items already reviewed are left out), with stratum counts."""
    items = job_items(job)
    done = reviewed_keys(reg, job["id"])
    q = rq.draw(items, n, seed=seed, reviewed=done, threshold=THRESHOLD)
    return {"object": "rft.review_queue", "job_id": job["id"], "grader_sha256": job.get("grader_sha256"),
            "seed": seed, "n": len(q), "items_total": len(items), "reviewed": len(done),
            "strata": rq.counts(q), "items": q}


def load_verdict_file(path: str | Path) -> list[dict]:
    """A JSONL of verdicts, one object a line: {"item_key": "train:3:5", "verdict": "pass" | "fail" | 0.7,
    "note": "..."} ("score" or "human_score" may stand for "verdict"); errors name the file and line."""
    from rft.userinput import parse_json, read_user_text

    name = str(path)
    text = read_user_text(path, "verdicts file")
    out, problems = [], []
    for ln, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = parse_json(line, name, "verdict line", line=ln, expect=dict)
        except RftError as e:
            problems.append(Problem(str(e)))
            continue
        unknown = sorted(set(obj) - {"item_key", "verdict", "score", "human_score", "note"})
        if unknown:
            problems.append(Problem(f"unknown field(s) {', '.join(unknown)}; a verdict line has item_key, verdict "
                                    "(pass, fail or a score in [0, 1]) and an optional note", name, ln, unknown[0]))
            continue
        key = obj.get("item_key")
        try:
            reviews.parse_key(key)
        except RftError as e:
            problems.append(Problem(str(e), name, ln, "item_key"))
            continue
        given = [f for f in ("verdict", "score", "human_score") if f in obj]
        if len(given) != 1:
            problems.append(Problem("give exactly one of verdict, score, human_score", name, ln, "verdict"))
            continue
        try:
            score = parse_verdict(obj[given[0]])
        except RftError as e:
            problems.append(Problem(str(e), name, ln, given[0]))
            continue
        note = obj.get("note")
        if note is not None and not isinstance(note, str):
            problems.append(Problem("note must be a string", name, ln, "note"))
            continue
        out.append({"item_key": key, "human_score": score, "note": note, "line": ln})
    if problems:
        raise RftError(f"{name}: {len(problems)} bad verdict line(s)", problems=problems)
    if not out:
        raise RftError(f"{name}: no verdicts in this file (one JSON object a line: item_key, verdict, note)")
    return out


def submit(reg, job: dict, entries: list[dict], reviewer: str, *, items: list[dict] | None = None,
           now: float | None = None, where: str | None = None) -> list[dict]:
    """Store verdicts [{item_key, human_score | verdict, note?, line?}] on the job's items, all or none: every
    key must name an item of the job's run folder. The stored row records what the reviewer was shown."""
    by_key = {it["key"]: it for it in (items if items is not None else job_items(job))}
    problems, ready = [], []
    for e in entries:
        key = e.get("item_key")
        try:
            reviews.parse_key(key)
        except RftError as err:
            problems.append(Problem(str(err), where, e.get("line"), "item_key"))
            continue
        try:
            score = reviews.check_score(e["human_score"] if "human_score" in e else parse_verdict(e.get("verdict")))
        except RftError as err:
            problems.append(Problem(str(err), where, e.get("line"), "verdict"))
            continue
        it = by_key.get(key)
        if it is None:
            problems.append(Problem(f"job {job['id']} has no item {key} (see `rft review {job['id']} --queue`)",
                                    where, e.get("line"), "item_key"))
            continue
        ready.append((it, score, e.get("note")))
    if problems:
        raise RftError(f"{len(problems)} verdict(s) refused; nothing was stored", problems=problems)
    rows = []
    for it, score, note in ready:
        data = {k: it.get(k) for k in ("prompt", "completion", "error", "advantage", "reference", "finish_reason")}
        rows.append(reviews.add_verdict(reg, job_id=job["id"], item_key=it["key"], source=it["source"],
                                        human_score=score, reviewer=reviewer, step=it.get("step"),
                                        grader_sha256=job.get("grader_sha256"), grader_score=it["grader_score"],
                                        note=note, data=data, team=job.get("team"), now=now))
    return rows


def summarize(verdicts: list[dict]) -> dict:
    """agreement() over stored verdict rows (human vs the grader score the reviewer saw)."""
    return agreement([v["human_score"] for v in verdicts], [v["grader_score"] for v in verdicts],
                     threshold=THRESHOLD, keys=[v["item_key"] for v in verdicts])


def job_agreement(reg, job_id: str, *, grader_sha256: str | None = None) -> dict:
    """Agreement of the job's reviewers with its grader: overall and per grader version, disagreements listed."""
    vs = reviews.list_verdicts(reg, job_id, grader_sha256=grader_sha256)
    by: dict[str, list[dict]] = {}
    for v in vs:
        by.setdefault(v["grader_sha256"] or "unknown", []).append(v)
    overall = summarize(vs)
    rows = {v["item_key"]: v for v in vs}
    listed = [{"item_key": k, "human_score": rows[k]["human_score"], "grader_score": rows[k]["grader_score"],
               "reviewer": rows[k]["reviewer"], "note": rows[k]["note"],
               "prompt": ((rows[k].get("data") or {}).get("prompt") or "")[:300],
               "completion": ((rows[k].get("data") or {}).get("completion") or "")[:300]}
              for k in overall["disagreements"]]
    return {"object": "rft.review_agreement", "job_id": job_id, "grader_sha256": grader_sha256,
            "verdicts": len(vs), "reviewers": sorted({v["reviewer"] for v in vs}), "overall": overall,
            "by_grader": {sha: summarize(v) for sha, v in by.items()}, "disagreements": listed}


def export_guard(reg, job: dict, path: str | Path) -> dict:
    """Write the job's reviewed items as a guard-set JSONL: each line {"messages": [{"role": "user", "content":
    prompt}], <reference fields>, "review": {item_key, human_score, note, reviewer, grader_score}}. Usable as
    `rft.eval.guard_file` (graded by rft.eval.guard_grader, default the job's grader, on the new model's answers).
    Items without a prompt are left out (counted in `skipped`)."""
    from rft.fsutil import write_atomic
    from rft.userinput import check_output_file

    p = check_output_file(path, "guard set file")
    vs = reviews.list_verdicts(reg, job["id"])
    if not vs:
        raise RftError(f"job {job['id']} has no review verdicts yet; nothing to export",
                       hint=f"review some items first: rft review {job['id']}")
    by_key = {it["key"]: it for it in job_items(job)}
    lines, skipped = [], 0
    for v in vs:
        it = by_key.get(v["item_key"]) or {}
        data = v.get("data") or {}
        prompt = it.get("prompt") or data.get("prompt")
        if not prompt:
            skipped += 1
            continue
        ref = dict(it.get("reference") or data.get("reference") or {})
        ref.pop("messages", None)
        ref.pop("review", None)
        row = {"messages": [{"role": "user", "content": prompt}], **ref,
               "review": {"item_key": v["item_key"], "human_score": v["human_score"], "note": v["note"],
                          "reviewer": v["reviewer"], "grader_score": v["grader_score"]}}
        lines.append(json.dumps(row, ensure_ascii=False))
    if not lines:
        raise RftError(f"job {job['id']}: none of the reviewed items has a stored prompt; nothing to export")
    write_atomic(p, ("\n".join(lines) + "\n").encode("utf-8"))
    return {"object": "rft.guard_export", "job_id": job["id"], "path": str(p), "rows": len(lines), "skipped": skipped}
