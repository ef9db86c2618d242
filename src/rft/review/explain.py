"""Failure attribution: where a checkpoint that regressed (or failed a gate) went wrong.

What
----
`explain(ref)` (`rft explain CKPT`, with `ckpt:<id>`, `alias:<name>` or an `ft:` name) pairs the checkpoint's
evaluations with the job's baseline ones (validation: baseline vs the checkpoint's report; guard set:
guard_baseline vs guard) and, for each pair, says:

- `slices`: for every dataset field of the items (`rft.eval.runner` slices; `rft.eval.compare` paired stats per
  value), the values whose items moved down, ranked by net regressions (regressed - improved), each with its
  share of the regressions and of the items (a slice holding 80% of the regressions and 20% of the items is
  where it broke); `top_slice` is the first;
- `moved`: the items that regressed and that improved (index, key "eval:<report>:<index>", fields, scores,
  completions cut short), and what kind of move each was: now truncated (`finish_reason == "length"`), now a
  grader error, much longer (>= 1.5x the tokens), or a plain wrong answer;
- `grader_errors`: grader error kinds and counts before and after;
- `length`: mean completion tokens and the truncated (clipped) share before and after, overall and among the
  regressed items;
- the gate verdict's failed checks, and `onset`: the monitor's alarms (events.jsonl, type "alarm"), the first
  evaluation step whose accuracy fell below the baseline's, and the first step where metrics.jsonl's
  completion length, clipped ratio, entropy or KL moved away from their early values;
- `files`: the paths holding all of this (reports, events, metrics, samples).

Simplified: the "moved away" onset is a fixed rule (a 3-step rolling mean 1.5x the mean of the first 3 steps, or
+0.25 absolute for ratios), not a change-point test; slices are the items' scalar fields as the evaluation
stored them; items are paired by `rft.eval.compare` (id, else index).

How to run: `rft explain ckpt:ckpt-... --json`, or `python -c "from rft.review.explain import explain;
print(explain('alias:production')['summary'])"`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rft.errors import RftError

_SNIP = 200
ONSET_METRICS = ("completions/mean_length", "completions/clipped_ratio", "entropy", "kl", "reward")
RATIO_METRICS = ("completions/clipped_ratio",)


def _snip(s: Any) -> Any:
    return s[:_SNIP] + "..." if isinstance(s, str) and len(s) > _SNIP else s


def _read_jsonl(p: Path) -> list[dict]:
    if not p.exists():
        return []
    out = []
    for line in p.read_text(errors="replace").splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill -9: the rest still counts
        if isinstance(d, dict):
            out.append(d)
    return out


def resolve_checkpoint(reg, ref: str) -> dict:
    """The checkpoint row for ckpt:<id> (or a bare id), alias:<name> or ft:<base>[:<suffix>]:<job id>."""
    from rft import models

    ref = str(ref).strip()
    if ref.startswith(models.FT_PREFIX):
        ref = models.fine_tuned_checkpoint(ref)
    if ref.startswith("alias:"):
        return reg.get_checkpoint(reg.alias(ref)["checkpoint_id"])
    if ref.startswith("ckpt:") or ref.startswith("ckpt-"):
        return reg.get_checkpoint(ref.removeprefix("ckpt:"))
    raise RftError(f"explain needs a checkpoint (ckpt:<id>), an alias (alias:<name>) or a fine-tuned model (ft:...), "
                   f"not '{ref}'", hint="see `rft checkpoints list JOB`")


# ------------------------------------------------------------------------------------------- one comparison
def _tokens(it: dict) -> int | None:
    return it.get("completion_tokens")


def _clipped(it: dict) -> bool:
    return it.get("finish_reason") == "length"


def move_kind(a: dict, b: dict) -> str:
    """What kind of move an item made from A (before) to B (after)."""
    if b.get("error") and not a.get("error"):
        return "grader_error"
    if _clipped(b) and not _clipped(a):
        return "now_truncated"
    ta, tb = _tokens(a), _tokens(b)
    if ta and tb and tb >= 1.5 * ta:
        return "much_longer"
    return "answer_changed"


def _length_block(items: list[dict]) -> dict:
    toks = [_tokens(it) for it in items if _tokens(it) is not None]
    return {"n": len(items), "mean_completion_tokens": sum(toks) / len(toks) if toks else None,
            "clipped_frac": sum(1 for it in items if _clipped(it)) / len(items) if items else None}


def _errors(items: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        if it.get("error"):
            out[it["error"]] = out.get(it["error"], 0) + 1
    return dict(sorted(out.items()))


def attribute(base: dict, cand: dict, *, name: str, by: list[str] | None = None, max_items: int = 50,
              seed: int = 0, min_slice: int = 3) -> dict:
    """Where `cand` moved against `base` (two eval report dicts of the same items): slices, moved items, grader
    errors, lengths. `name` is the candidate report's name in item keys ("eval:<name>:<index>")."""
    from rft.eval.compare import _key, compare_reports
    from rft.eval.runner import field_names

    fields = by if by else field_names(list(base.get("items") or []) + list(cand.get("items") or []))
    comp = compare_reports(base, cand, by=fields, seed=seed, resamples=2000)
    mode = comp["paired_by"]
    a_by = {_key(it, mode): it for it in base["items"]}
    b_by = {_key(it, mode): it for it in cand["items"]}
    common = [k for k in b_by if k in a_by]
    n_reg_total = max(1, comp["n_regressed"])
    n_items = max(1, len(common))
    slices = []
    for f, vals in comp["slices"].items():
        for v, st in vals.items():
            net = st["n_regressed"] - st["n_improved"]
            slices.append({"field": f, "value": v, "n": st["n_paired"], "n_regressed": st["n_regressed"],
                           "n_improved": st["n_improved"], "net_regressed": net,
                           "mean_a": st["mean_a"], "mean_b": st["mean_b"], "mean_difference": st["mean_difference"],
                           "difference_ci95": st["difference_ci95"],
                           "share_of_regressions": st["n_regressed"] / n_reg_total,
                           "share_of_items": st["n_paired"] / n_items})
    # Rank: most net regressions, then the largest drop; single-valued fields (every item alike) say nothing.
    # and identifier-like fields (more distinct values than half the items) are not slices either.
    informative = {f for f, vals in comp["slices"].items() if 1 < len(vals) <= max(2, len(common) // 2)}
    # A slice of one or two items says nothing about where a model broke: at least `min_slice` items.
    moved_down = [s for s in slices if s["net_regressed"] > 0 and s["field"] in informative and s["n"] >= min_slice]
    moved_down.sort(key=lambda s: (-s["net_regressed"], s["mean_difference"] if s["mean_difference"] == s["mean_difference"] else 0,
                                   s["field"], s["value"]))

    def rec(k: str) -> dict:
        a, b = a_by[k], b_by[k]
        return {"key": f"eval:{name}:{b.get('index')}", "index": b.get("index"), "id": b.get("id"),
                "fields": b.get("fields") or {}, "before": a.get("score"), "after": b.get("score"),
                "before_error": a.get("error"), "after_error": b.get("error"), "kind": move_kind(a, b),
                "before_tokens": _tokens(a), "after_tokens": _tokens(b), "before_finish": a.get("finish_reason"),
                "after_finish": b.get("finish_reason"), "answer": _snip(b.get("answer")),
                "before_completion": _snip(a.get("completion")), "after_completion": _snip(b.get("completion"))}

    scored = [k for k in common if a_by[k].get("score") is not None and b_by[k].get("score") is not None]
    regressed = [rec(k) for k in scored if b_by[k]["score"] < a_by[k]["score"]]
    improved = [rec(k) for k in scored if b_by[k]["score"] > a_by[k]["score"]]
    became_unscored = [rec(k) for k in common if a_by[k].get("score") is not None and b_by[k].get("score") is None]
    kinds: dict[str, dict[str, int]] = {}
    for label, recs in (("regressed", regressed), ("improved", improved), ("became_unscored", became_unscored)):
        for r in recs:
            kinds.setdefault(label, {})
            kinds[label][r["kind"]] = kinds[label].get(r["kind"], 0) + 1
    reg_keys = {r["key"] for r in regressed}
    return {
        "name": name,
        "paired_by": mode,
        "n": len(common),
        "accuracy_before": comp["a"].get("accuracy"), "accuracy_after": comp["b"].get("accuracy"),
        "mean_difference": comp["mean_difference"], "difference_ci95": comp["difference_ci95"],
        "mcnemar": comp["mcnemar"],
        "n_regressed": comp["n_regressed"], "n_improved": comp["n_improved"],
        "regressed_overall": bool(comp["n_regressed"] > comp["n_improved"]),
        "by": fields,
        "slices": moved_down,
        "top_slice": moved_down[0] if moved_down else None,
        "move_kinds": kinds,
        "regressed": regressed[:max_items], "improved": improved[:max_items],
        "became_unscored": became_unscored[:max_items],
        "regressed_keys": [r["key"] for r in regressed], "improved_keys": [r["key"] for r in improved],
        "grader_errors": {"before": _errors([a_by[k] for k in common]), "after": _errors([b_by[k] for k in common])},
        "length": {"before": _length_block([a_by[k] for k in common]), "after": _length_block([b_by[k] for k in common]),
                   "regressed_before": _length_block([a_by[k] for k in common if f"eval:{name}:{b_by[k].get('index')}" in reg_keys]),
                   "regressed_after": _length_block([b_by[k] for k in common if f"eval:{name}:{b_by[k].get('index')}" in reg_keys])},
        "warnings": comp.get("warnings", []),
    }


def _report_path(row: dict, run_dir: Path) -> str | None:
    """The file holding an evaluation report's items: its recorded path, else the run folder's eval_<kind>.json."""
    for p in (row.get("path"), str(run_dir / f"eval_{row['kind']}.json")):
        if p and Path(p).exists():
            return str(p)
    return None


# ------------------------------------------------------------------------------------------- onset
def metric_onsets(rows: list[dict], *, early: int = 3, window: int = 3) -> list[dict]:
    """The first step at which each watched metric's rolling mean moved away from its early mean: 1.5x for
    amounts, +0.25 for ratios (rewards: a move of 0.25 either way)."""
    out = []
    for m in ONSET_METRICS:
        pts = [(r.get("step"), r.get(m)) for r in rows if isinstance(r.get(m), (int, float)) and r.get("step") is not None]
        if len(pts) < early + 1:
            continue
        base = sum(v for _, v in pts[:early]) / early
        for j in range(early, len(pts)):
            win = [v for _, v in pts[max(early, j - window + 1):j + 1]]
            cur = sum(win) / len(win)
            if m in RATIO_METRICS or m == "reward":
                moved = abs(cur - base) >= 0.25
            else:
                moved = (base > 0 and cur >= 1.5 * base) or (base > 0 and m == "entropy" and cur <= base / 1.5)
            if moved:
                out.append({"metric": m, "step": pts[j][0], "early_mean": base, "value": cur})
                break
    return sorted(out, key=lambda d: d["step"])


def eval_onset(reports: list[dict], baseline: dict | None) -> dict | None:
    """The first evaluation step whose accuracy is below the baseline's lower CI bound (else below its mean)."""
    if not baseline or baseline.get("accuracy") is None:
        return None
    lo = (baseline.get("accuracy_ci95") or [None])[0]
    bar = lo if isinstance(lo, (int, float)) else baseline["accuracy"]
    for r in sorted(reports, key=lambda r: (r.get("step") or 0)):
        acc = r.get("accuracy")
        if isinstance(acc, (int, float)) and acc < bar:
            return {"step": r.get("step"), "accuracy": acc, "baseline_accuracy": baseline["accuracy"],
                    "below": "the baseline's 95% CI" if bar != baseline["accuracy"] else "the baseline"}
    return None


# ------------------------------------------------------------------------------------------- explain
def explain(ref: str, *, by: list[str] | None = None, max_items: int = 50, reg=None, seed: int = 0) -> dict:
    """Where checkpoint `ref` moved against the job's baseline; see the module docstring."""
    from rft.registry import Registry

    reg = reg or Registry()
    ck = resolve_checkpoint(reg, ref)
    job = reg.get_job(ck["job_id"])
    run_dir = Path(job["run_dir"])
    reports = reg.eval_reports(job_id=job["id"])

    def has_items(r):
        return isinstance((r.get("summary") or {}).get("items"), list)

    def pick(kinds, ckpt_id=None):
        rows = [r for r in reports if r["kind"] in kinds and has_items(r)
                and (ckpt_id is None or r["checkpoint_id"] == ckpt_id)]
        return rows[-1] if rows else None

    pairs = []
    base = pick(("baseline",))
    cand = pick(("checkpoint", "final"), ck["id"])
    if base is not None and cand is not None:
        pairs.append(("validation", base, cand))
    gbase = pick(("guard_baseline",))
    gcand = pick(("guard",), ck["id"])
    if gbase is not None and gcand is not None:
        pairs.append(("guard", gbase, gcand))
    if not pairs:
        raise RftError(f"checkpoint {ck['id']} has no evaluation to compare with the job's baseline "
                       "(the registry holds no baseline and checkpoint reports with items)",
                       hint="checkpoints are evaluated when the job has a validation_file")
    comparisons = []
    for label, b, c in pairs:
        name = c["id"]
        att = attribute(b["summary"], c["summary"], name=name, by=by, max_items=max_items, seed=seed)
        att |= {"set": label, "baseline_report": b["id"], "report": c["id"],
                "baseline_path": _report_path(b, run_dir), "report_path": _report_path(c, run_dir)}
        comparisons.append(att)

    verdict = reg.verdict(ck.get("verdict_id"))
    failed_checks = [c for c in ((verdict or {}).get("verdict") or {}).get("checks") or [] if not c.get("passed")]
    events = _read_jsonl(run_dir / "events.jsonl")
    alarms = [{"step": (e.get("data") or {}).get("step"), "kind": (e.get("data") or {}).get("kind"),
               "message": e.get("message")} for e in events if e.get("type") == "alarm"]
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    step_reports = [dict(r["summary"] or {}, step=(r["summary"] or {}).get("step")) for r in reports
                    if r["kind"] in ("checkpoint", "final")]
    onset = {"alarms": alarms, "first_alarm_step": min((a["step"] for a in alarms if a["step"] is not None), default=None),
             "first_eval_below_baseline": eval_onset(step_reports, (base or {}).get("summary")),
             "metrics": metric_onsets(metrics)}
    regressed = any(c["regressed_overall"] for c in comparisons) or bool(failed_checks)
    main = next((c for c in comparisons if c["regressed_overall"] and c["top_slice"]), None) or \
        next((c for c in comparisons if c["top_slice"]), None)
    samples_dir = run_dir / "samples"
    files = {"run_dir": str(run_dir), "events": str(run_dir / "events.jsonl"), "metrics": str(run_dir / "metrics.jsonl"),
             "samples": str(samples_dir) if samples_dir.exists() else None,
             # a report with no file of its own is in the registry only: `registry:<eval report id>`
             "reports": sorted({p or f"registry:{rid}" for c in comparisons
                                for p, rid in ((c["baseline_path"], c["baseline_report"]), (c["report_path"], c["report"]))}),
             "checkpoint": ck["path"]}
    summary = _summary_lines(ck, comparisons, main, failed_checks, onset, regressed)
    return {"object": "rft.explanation", "checkpoint_id": ck["id"], "ref": ref, "job_id": job["id"], "step": ck["step"],
            "regressed": regressed, "gate_passed": (verdict or {}).get("passed"), "failed_checks": failed_checks,
            "comparisons": comparisons, "top_slice": (main or {}).get("top_slice"),
            "top_slice_set": (main or {}).get("set"), "onset": onset, "files": files, "summary": summary}


def _fmt(x: Any, f: str = ".3f") -> str:
    return format(x, f) if isinstance(x, (int, float)) and x == x else "n/a"


def _summary_lines(ck, comparisons, main, failed_checks, onset, regressed) -> list[str]:
    lines = [f"checkpoint {ck['id']} (step {ck['step']}): "
             + ("regressed or failed a gate" if regressed else "no regression against the baseline and no failed gate")]
    for c in comparisons:
        lines.append(f"{c['set']}: accuracy {_fmt(c['accuracy_before'])} -> {_fmt(c['accuracy_after'])} "
                     f"(difference {_fmt(c['mean_difference'])} [{_fmt(c['difference_ci95'][0])}, "
                     f"{_fmt(c['difference_ci95'][1])}]); {c['n_regressed']} regressed, {c['n_improved']} improved")
    if main and main["top_slice"]:
        s = main["top_slice"]
        lines.append(f"{'where' if regressed else 'largest drop (no overall regression)'}: {s['field']}={s['value']} in the {main['set']} set: {s['n_regressed']} of its {s['n']} "
                     f"items regressed ({s['share_of_regressions']:.0%} of all regressions, {s['share_of_items']:.0%} "
                     f"of the items), mean {_fmt(s['mean_a'])} -> {_fmt(s['mean_b'])}")
    for c in comparisons:
        k = c["move_kinds"].get("regressed")
        if k:
            lines.append(f"{c['set']} regressions by kind: " + ", ".join(f"{n} {kind}" for kind, n in sorted(k.items())))
        la, lb = c["length"]["before"], c["length"]["after"]
        lines.append(f"{c['set']} completion length {_fmt(la['mean_completion_tokens'], '.1f')} -> "
                     f"{_fmt(lb['mean_completion_tokens'], '.1f')} tokens, truncated {_fmt(la['clipped_frac'], '.0%')} -> "
                     f"{_fmt(lb['clipped_frac'], '.0%')}; grader errors {c['grader_errors']['before'] or 'none'} -> "
                     f"{c['grader_errors']['after'] or 'none'}")
    for fc in failed_checks:
        lines.append(f"gate failed: {fc.get('name')}: {fc.get('value')} vs {fc.get('threshold')}")
    if onset["first_alarm_step"] is not None:
        kinds = sorted({a['kind'] for a in onset['alarms'] if a['kind']})
        lines.append(f"onset: first monitor alarm at step {onset['first_alarm_step']} ({', '.join(kinds)})")
    if onset["first_eval_below_baseline"]:
        e = onset["first_eval_below_baseline"]
        lines.append(f"onset: validation accuracy first below {e['below']} at step {e['step']} ({_fmt(e['accuracy'])})")
    for m in onset["metrics"]:
        lines.append(f"onset: {m['metric']} moved from {_fmt(m['early_mean'])} to {_fmt(m['value'])} by step {m['step']}")
    return lines
