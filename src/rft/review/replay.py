"""Replay: re-grade what a job (or an evaluation) already generated with another grader, generating nothing.

What
----
`replay_job(job_id, grader)` (`rft replay JOB --grader NEW.json`) reads the job's stored training samples
(`samples/step_N.jsonl` in its run folder) and its evaluation items (the run folder's `eval_*.json` and the
checkpoint evaluations recorded in the registry), grades every completion again with the new grader, and returns:

- per item: the old score (as stored) and the new one, pass/fail under each, the grader errors; written as
  `items.jsonl` in `<run dir>/replays/<replay id>/` (with `summary.json`);
- `flips`: the items whose pass/fail changed, both directions, counted and listed by item key
  ("train:<step>:<line>" and "eval:<report>:<index>", the keys `rft review` uses), plus items that became
  unscored or scored;
- `advantages`: each step's group advantages recomputed under the new rewards with the job's own advantage
  function (`rft.algo.compute_advantages`, the job's `rft.algorithm.advantage`) and compared sign by sign with
  those of the stored rewards: samples whose advantage changed sign (+ to - or - to +), samples that gained or
  lost a learning signal (0 to non-zero and back), and the groups with any such change;
- `training`: mean reward per step and overall under each grader, with the paired bootstrap 95% CI of the
  difference (`rft.eval.compare.paired_bootstrap_ci`) and each side's 95% CI (`rft.eval.stats.mean_ci`);
- `evaluations`: for every evaluation report, accuracy under each grader and the paired comparison
  (`rft.eval.compare.compare_reports`: mean difference with bootstrap CI, McNemar);
- `agreement`: each grader's agreement with people's verdicts on these items (`rft.review.agreement`), where
  `rft review` has stored some for the job (`rft.registry.reviews.list_verdicts`).
The replay is recorded in the registry (`replays`, both grader hashes: `rft lineage` shows it).

`replay_eval(eval_id, grader)` (`rft eval --replay EVAL_ID --grader NEW.json`) does the same for one stored
evaluation report (its id as `rft eval` printed it, its registry id, or a report.json path), writing to
`<report dir>/replays/<replay id>/`.

The new grader goes through the checks training applies: the reinforcement grader validation
(`rft.graders.run.validate_reinforcement_grader`, with the job's network allowlist and sandbox limits) and, when
the job names its reference output (`rft.train.reference_output`), every training and validation row's reference
must pass it. Problems name the file and field (or the data file and line).

Simplified: a training sample's dataset row is found by its prompt text (the samples files keep the prompt, not
the row); prompts that map to rows with different fields are graded against the first such row and counted in
`warnings`. Groups are the job's completions per prompt, consecutive in the samples file, as training wrote them.
Unscored samples (grader errors) are left out of means and pass/fail flips, as in training and evaluation.

How to run: `rft replay ftjob-... --grader examples/review/fixed_grader.json --json`,
`rft eval --replay eval-... --grader fixed.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from rft.errors import Problem, RftError
from rft.eval.references import grader_context, reference_problems

_SNIP = 300
TRAIN_REPORT_KINDS = ("baseline", "checkpoint", "final")  # validation evaluations a training run records
GUARD_REPORT_KINDS = ("guard_baseline", "guard")


# ------------------------------------------------------------------------------------------- small helpers
def _snip(s: Any) -> Any:
    return s[:_SNIP] + "..." if isinstance(s, str) and len(s) > _SNIP else s


def _passed(score: float | None, threshold: float) -> bool | None:
    return None if score is None else score >= threshold


def _sign(x: float) -> int:
    return 0 if x == 0 else (1 if x > 0 else -1)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _one_line_error(message: str, problems: list[Problem], hint: str | None = None) -> RftError:
    """An RftError whose first problem is folded into its message (the CLI prints one line)."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return RftError(f"{message}: {problems[0]}{more}", hint=hint)


def load_new_grader(grader: str | dict, *, job=None, where: str = "grader"):
    """(spec, source, built grader) for a replay: the grader file read and checked as training checks a job's
    grader (unknown fields, templates, network policy), built with the job's sandbox limits and allowlist."""
    from rft import graders
    from rft.graders.run import validate_reinforcement_grader

    if isinstance(grader, dict):
        spec, source = grader, None
    else:
        source = str(grader)
        spec = graders.load_grader_file(source)
    context = grader_context(job)
    problems = validate_reinforcement_grader(spec, where, context=context)
    if problems:
        problems = [Problem(p.message, file=source or p.file, line=p.line, field=p.field) for p in problems]
        raise _one_line_error(f"invalid grader{f' in {source}' if source else ''}", problems)
    return spec, source, graders.build(spec, where, source=source, context=context)


def _threshold(grader) -> float:
    t = getattr(grader, "pass_threshold", None)
    return float(t) if t is not None else 1.0


# ------------------------------------------------------------------------------------------- the job's parts
def job_spec(job_row: dict):
    """The JobSpec a job trained with: its resolved config (remedies applied), else its submitted spec."""
    from rft.config import parse_job

    resolved = job_row.get("resolved_config")
    if isinstance(resolved, dict):
        raw = {k: v for k, v in resolved.items() if k not in ("resolved", "learnability")}
        try:
            return parse_job(raw, f"job {job_row['id']} (resolved config)")
        except RftError:
            pass
    return parse_job(dict(job_row["spec"]), f"job {job_row['id']} (stored spec)")


def group_size(job_row: dict, job) -> int:
    resolved = job_row.get("resolved_config") or {}
    g = (resolved.get("resolved") or {}).get("completions_per_prompt")
    if g:
        return int(g)
    from rft.config import resolve

    return resolve(job, 1).completions_per_prompt


def read_samples(run_dir: Path) -> dict[int, list[dict]]:
    """{step: rows of samples/step_N.jsonl}, steps ascending. A line that is not JSON names file and line."""
    out: dict[int, list[dict]] = {}
    sdir = Path(run_dir) / "samples"
    if not sdir.is_dir():
        return out
    for p in sorted(sdir.glob("step_*.jsonl")):
        try:
            step = int(p.stem.split("_", 1)[1])
        except ValueError:
            continue
        rows = []
        for ln, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise RftError(f"{p}:{ln}: not valid JSON ({e})") from None
        out[step] = rows
    return dict(sorted(out.items()))


def _row_index(ds) -> tuple[dict[str, dict], int]:
    """{last user message: row} and how many prompts map to rows with different fields (ambiguous)."""
    idx: dict[str, dict] = {}
    ambiguous = 0
    for row in ds.rows:
        msgs = row.get("messages") or []
        key = msgs[-1].get("content") if msgs and isinstance(msgs[-1], dict) else None
        if not isinstance(key, str):
            continue
        if key in idx:
            if {k: v for k, v in idx[key].items() if k != "messages"} != {k: v for k, v in row.items() if k != "messages"}:
                ambiguous += 1
            continue
        idx[key] = row
    return idx, ambiguous


def job_reports(reg, job_row: dict) -> list[dict]:
    """The job's evaluation reports with items: [{"name", "kind", "dataset" ("validation"|"guard"), "report",
    "path", "checkpoint_id", "step"}]: the run folder's eval_*.json, then registry reports not already there."""
    run_dir = Path(job_row["run_dir"])
    out: list[dict] = []
    seen_kinds: set[str] = set()
    for p in sorted(run_dir.glob("eval_*.json")):
        try:
            rep = json.loads(p.read_text())
        except ValueError as e:
            raise RftError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(rep, dict) or not isinstance(rep.get("items"), list):
            continue
        kind = p.stem.removeprefix("eval_")
        seen_kinds.add(kind)
        out.append({"name": p.stem, "kind": kind, "dataset": "guard" if kind.startswith("guard") else "validation",
                    "report": rep, "path": str(p), "checkpoint_id": None, "step": rep.get("step"),
                    "grader_sha256": None if kind.startswith("guard") else job_row.get("grader_sha256")})
    for r in reg.eval_reports(job_id=job_row["id"]):
        summ = r.get("summary") or {}
        if r["kind"] not in TRAIN_REPORT_KINDS + GUARD_REPORT_KINDS or not isinstance(summ.get("items"), list):
            continue
        if r["kind"] in seen_kinds and r["kind"] in ("baseline", "final", "guard_baseline"):
            continue  # the same report as the run folder's eval_<kind>.json
        out.append({"name": r["id"], "kind": r["kind"], "dataset": "guard" if r["kind"].startswith("guard") else "validation",
                    "report": summ, "path": r.get("path"), "checkpoint_id": r.get("checkpoint_id"), "step": summ.get("step"),
                    "grader_sha256": r.get("grader_sha256")})
    return out


# ------------------------------------------------------------------------------------------- the maths
def advantage_flips(name: str, old: list[float | None], new: list[float | None], group: int) -> dict:
    """Group advantages of the old and the new rewards ([N*G] flat, None = unscored) with the registered
    advantage `name`, and how they changed sample by sample."""
    import torch

    from rft import algo

    n = len(old) // group
    to_t = lambda xs: torch.tensor([float("nan") if x is None else float(x) for x in xs],  # noqa: E731
                                   dtype=torch.float64).view(n, group)  # [N, G]
    a_old = algo.compute_advantages(name, to_t(old)).advantages.reshape(-1).tolist()  # [N*G]
    a_new = algo.compute_advantages(name, to_t(new)).advantages.reshape(-1).tolist()  # [N*G]
    flipped, gained, lost = [], [], []
    for i, (x, y) in enumerate(zip(a_old, a_new)):
        sx, sy = _sign(x), _sign(y)
        if sx and sy and sx != sy:
            flipped.append(i)
        elif not sx and sy:
            gained.append(i)
        elif sx and not sy:
            lost.append(i)
    groups = sorted({i // group for i in flipped})
    return {"old": a_old, "new": a_new, "sign_flipped": flipped, "gained_signal": gained, "lost_signal": lost,
            "groups_with_sign_flip": groups}


def reward_stats(pairs: list[tuple[float | None, float | None]], *, seed: int = 0) -> dict:
    """Mean reward under each grader (each with its 95% CI over its scored samples) and the paired difference
    new - old over samples both scored, with its paired bootstrap 95% CI."""
    from rft.eval.compare import paired_bootstrap_ci
    from rft.eval.stats import mean_ci

    old = [a for a, _ in pairs if a is not None]
    new = [b for _, b in pairs if b is not None]
    both = [(a, b) for a, b in pairs if a is not None and b is not None]
    diffs = [b - a for a, b in both]
    co, cn = mean_ci(old), mean_ci(new)
    lo, hi = paired_bootstrap_ci(diffs, seed=seed) if diffs else (float("nan"), float("nan"))
    return {"n": len(pairs), "old_mean": co.mean, "old_ci95": [co.low, co.high], "new_mean": cn.mean,
            "new_ci95": [cn.low, cn.high], "n_paired": len(both), "mean_difference": _mean(diffs),
            "difference_ci95": [lo, hi]}


def flips_of(items: list[dict]) -> dict:
    """Pass/fail flips among items both graders scored, both directions, plus items that became (un)scored."""
    p2f = [it["key"] for it in items if it["old_passed"] is True and it["new_passed"] is False]
    f2p = [it["key"] for it in items if it["old_passed"] is False and it["new_passed"] is True]
    became_unscored = [it["key"] for it in items if it["old_score"] is not None and it["new_score"] is None]
    became_scored = [it["key"] for it in items if it["old_score"] is None and it["new_score"] is not None]
    changed = sum(1 for it in items if it["old_score"] is not None and it["new_score"] is not None
                  and it["old_score"] != it["new_score"])
    return {"n": len(items), "pass_to_fail": len(p2f), "fail_to_pass": len(f2p), "score_changed": changed,
            "became_unscored": len(became_unscored), "became_scored": len(became_scored),
            "pass_to_fail_keys": p2f, "fail_to_pass_keys": f2p, "became_unscored_keys": became_unscored,
            "became_scored_keys": became_scored}


def regrade_report(report: dict, rows_for: Callable[[dict], dict | None], grader, extraction, response_format,
                   name: str) -> tuple[list[dict], dict, list[str]]:
    """Re-grade one evaluation report's greedy completions. Returns (item records, the report with the new
    scores in place of the old, warnings)."""
    from rft.extraction import sample_from_text
    from rft.graders import grade_many

    thr_old = float(report.get("pass_threshold", 1.0))
    thr_new = _threshold(grader)
    todo, warnings = [], []
    for it in report["items"]:
        row = rows_for(it)
        if row is None:
            warnings.append(f"{name}: item {it.get('index')} has no dataset row; left out")
            continue
        todo.append((it, row))
    samples = [sample_from_text(it.get("completion") or "", extraction, finish_reason=it.get("finish_reason"),
                                response_format=response_format, tools=row.get("tools")) for it, row in todo]
    grades = grade_many(grader, samples, [row for _, row in todo])
    records, new_items = [], []
    for (it, _), g in zip(todo, grades):
        old_passed = it.get("passed") if it.get("passed") is not None else _passed(it.get("score"), thr_old)
        records.append({"key": f"eval:{name}:{it.get('index')}", "source": "eval", "report": name,
                        "index": it.get("index"), "id": it.get("id"), "fields": it.get("fields") or {},
                        "completion": _snip(it.get("completion")), "finish_reason": it.get("finish_reason"),
                        "old_score": it.get("score"), "old_error": it.get("error"), "old_passed": old_passed,
                        "new_score": g.score, "new_error": g.error, "new_passed": _passed(g.score, thr_new)})
        new_items.append({**{k: v for k, v in it.items() if not k.startswith("sample_")},
                          "score": g.score, "error": g.error, "passed": _passed(g.score, thr_new)})
    old_items = [it for it, _ in todo]
    return records, ({**report, "items": old_items}, {**report, "items": new_items, "pass_threshold": thr_new}), warnings


def eval_summary(name: str, old_rep: dict, new_rep: dict, records: list[dict], *, seed: int = 0, **extra) -> dict:
    """Accuracy under each grader with its CI, and the paired comparison (new - old) of the same items."""
    from rft.eval.compare import compare_reports
    from rft.eval.runner import summarize_items

    so, sn = summarize_items(old_rep["items"]), summarize_items(new_rep["items"])
    out = {"name": name, **extra, "n": len(records),
           "old": {k: so[k] for k in ("accuracy", "accuracy_ci95", "pass_rate", "pass_rate_ci95", "unscored_frac")},
           "new": {k: sn[k] for k in ("accuracy", "accuracy_ci95", "pass_rate", "pass_rate_ci95", "unscored_frac")},
           "flips": flips_of(records)}
    if records:
        c = compare_reports(old_rep, new_rep, seed=seed, by=[])
        out["paired"] = {k: c[k] for k in ("n_scored_pairs", "mean_a", "mean_b", "mean_difference", "difference_ci95",
                                            "n_improved", "n_regressed", "mcnemar", "ci_method")}
    return out


def human_agreement(reg, job_id: str, records: list[dict], old_sha: str, new_sha: str) -> dict | None:
    """Each grader's agreement with the people's verdicts on these items (rft.review.agreement); None when
    nobody has reviewed any of them."""
    try:
        from rft.registry.reviews import list_verdicts
        from rft.review.agreement import agreement
    except ImportError:  # the review half is not installed in this tree
        return None
    verdicts = list_verdicts(reg, job_id)
    by_key = {r["key"]: r for r in records}
    hits = [(v, by_key[v["item_key"]]) for v in verdicts if v["item_key"] in by_key]
    if not hits:
        return {"n_verdicts": len(verdicts), "n_matched": 0, "old": None, "new": None}
    keys = [v["item_key"] for v, _ in hits]
    human = [float(v["human_score"]) for v, _ in hits]
    old = agreement(human, [r["old_score"] for _, r in hits], keys=keys)
    new = agreement(human, [r["new_score"] for _, r in hits], keys=keys)
    return {"n_verdicts": len(verdicts), "n_matched": len(hits),
            "old": old | {"grader_sha256": old_sha}, "new": new | {"grader_sha256": new_sha}}


# ------------------------------------------------------------------------------------------- replays
def _write(out_dir: Path, records: list[dict], summary: dict) -> dict:
    from rft.fsutil import write_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    items_p, summ_p = out_dir / "items.jsonl", out_dir / "summary.json"
    write_atomic(items_p, "".join(json.dumps(r, default=str) + "\n" for r in records).encode("utf-8"))
    paths = {"dir": str(out_dir), "items": str(items_p), "summary": str(summ_p)}
    summary["paths"] = paths
    write_atomic(summ_p, (json.dumps(summary, indent=2, default=_nan_safe) + "\n").encode("utf-8"))
    return paths


def _nan_safe(o):
    return str(o)


def _grader_info(spec: dict | None, sha: str | None, source: str | None = None) -> dict:
    spec = spec or {}
    return {"sha256": sha, "type": spec.get("type"), "name": spec.get("name"), "source": source}


def replay_job(job_id: str, grader: str | dict, *, reg=None, write: bool = True, record: bool = True,
               seed: int = 0, include_evals: bool = True, log: Callable[[str], Any] | None = None) -> dict:
    """Replay `grader` over job `job_id`'s stored samples and evaluation items; see the module docstring.
    Returns the summary (what `rft replay --json` prints) with the per-item records under "items"."""
    from rft import graders as G
    from rft.data import load_dataset
    from rft.extraction import sample_from_text
    from rft.registry import Registry
    from rft.registry.replays import add_replay, new_replay_id

    reg = reg or Registry()
    row = reg.get_job(job_id)
    job_id = row["id"]
    job = job_spec(row)
    run_dir = Path(row["run_dir"])
    samples = read_samples(run_dir)
    reports = job_reports(reg, row) if include_evals else []
    if not any(samples.values()) and not reports:
        raise RftError(f"job {job_id} has no stored samples to replay: {run_dir / 'samples'} holds no step_N.jsonl "
                       "and no evaluation report has items",
                       hint="a job stores its samples as it trains; replay a job that ran at least one step")
    spec, source, new = load_new_grader(grader, job=job)
    warnings: list[str] = []
    rf, ext = job.method.reinforcement.response_format, job.rft.extraction
    try:
        # The same check as training: the job's reference answers must pass the new grader.
        datasets = {}
        try:
            datasets["train"] = load_dataset(job.training_file, split="train")
            if job.validation_file:
                datasets["validation"] = load_dataset(job.validation_file, split="validation")
            if job.rft.eval.guard_file:
                datasets["guard"] = load_dataset(job.rft.eval.guard_file, split="validation")
        except RftError as e:
            raise RftError(f"job {job_id}: its data cannot be read again to replay it: {e.message}",
                           e.problems, hint=e.hint) from None
        for name, sha in (("train", row.get("training_file_sha256")), ("validation", row.get("validation_file_sha256"))):
            if name in datasets and sha and datasets[name].sha256 != sha:
                warnings.append(f"the {name} data changed since the job ran (sha256 {sha[:12]} -> "
                                f"{datasets[name].sha256[:12]}); rows are matched by prompt/index")
        probs = reference_problems(job, new, [d for k, d in datasets.items() if k in ("train", "validation")],
                                   what="the new grader")
        if probs:
            raise _one_line_error(f"{len(probs)} reference answer(s) fail the new grader"
                                  f"{f' ({source})' if source else ''}; fix the grader or the data", probs)
        if log:
            log(f"replaying {source or 'the grader'} over job {job_id}: {sum(len(v) for v in samples.values())} "
                f"training samples in {len(samples)} steps, {len(reports)} evaluation reports")

        # ---- training samples ---------------------------------------------------------------------------
        group = group_size(row, job)
        idx, ambiguous = _row_index(datasets["train"])
        if ambiguous:
            warnings.append(f"{ambiguous} training prompt(s) map to rows with different fields; the first is used")
        pt = (job.grader or {}).get("pass_threshold")
        thr_old = float(pt) if pt is not None else 1.0
        thr_new = _threshold(new)
        train_records: list[dict] = []
        steps_out: list[dict] = []
        adv_total = {"samples": 0, "sign_flipped": 0, "gained_signal": 0, "lost_signal": 0, "groups": 0,
                     "groups_with_sign_flip": 0}
        adv_keys: dict[str, list[str]] = {"sign_flipped": [], "gained_signal": [], "lost_signal": []}
        flipped_groups: list[str] = []
        missing = 0
        for step, srows in samples.items():
            found = [(i, s, idx.get(s.get("prompt"))) for i, s in enumerate(srows)]
            lacking = [i for i, _, r in found if r is None]
            if lacking:
                missing += len(lacking)
            todo = [(i, s, r) for i, s, r in found if r is not None]
            subs = [sample_from_text(s.get("completion") or "", ext, finish_reason=s.get("finish_reason"),
                                     response_format=rf, tools=r.get("tools")) for _, s, r in todo]
            grades = G.grade_many(new, subs, [r for _, _, r in todo])
            new_by_i = {i: g for (i, _, _), g in zip(todo, grades)}
            recs = []
            for i, s, r in found:
                g = new_by_i.get(i)
                old_score = s.get("reward")
                recs.append({"key": f"train:{step}:{i}", "source": "train", "step": step, "index": i,
                             "group": i // group, "prompt": _snip(s.get("prompt")), "completion": _snip(s.get("completion")),
                             "finish_reason": s.get("finish_reason"), "answer": (r or {}).get("answer"),
                             "old_score": old_score, "old_error": s.get("error"),
                             "old_passed": _passed(old_score, thr_old),
                             "new_score": g.score if g else None, "new_error": (g.error if g else "no_dataset_row"),
                             "new_passed": _passed(g.score, thr_new) if g else None,
                             "stored_advantage": s.get("advantage")})
            st = {"step": step, **reward_stats([(r["old_score"], r["new_score"]) for r in recs], seed=seed + step)}
            if len(recs) % group == 0 and recs and all(
                    len({recs[k]["prompt"] for k in range(j, j + group)}) == 1 for j in range(0, len(recs), group)):
                af = advantage_flips(job.rft.algorithm.advantage, [r["old_score"] for r in recs],
                                     [r["new_score"] for r in recs], group)
                for r, a, b in zip(recs, af["old"], af["new"]):
                    r["old_advantage"], r["new_advantage"] = a, b
                for k in adv_keys:
                    adv_keys[k] += [recs[i]["key"] for i in af[k]]
                flipped_groups += [f"train:{step}:group{gi}" for gi in af["groups_with_sign_flip"]]
                st["advantage"] = {"sign_flipped": len(af["sign_flipped"]), "gained_signal": len(af["gained_signal"]),
                                   "lost_signal": len(af["lost_signal"]),
                                   "groups_with_sign_flip": len(af["groups_with_sign_flip"]),
                                   "groups": len(recs) // group}
                adv_total["samples"] += len(recs)
                adv_total["groups"] += len(recs) // group
                for k in ("sign_flipped", "gained_signal", "lost_signal", "groups_with_sign_flip"):
                    adv_total[k] += st["advantage"][k]
            else:
                warnings.append(f"step {step}: its {len(recs)} samples are not groups of {group} completions of one "
                                "prompt; its advantages were not recomputed")
            fl = flips_of(recs)
            st["pass_to_fail"], st["fail_to_pass"] = fl["pass_to_fail"], fl["fail_to_pass"]
            steps_out.append(st)
            train_records += recs
        if missing:
            warnings.append(f"{missing} training sample(s) have a prompt found in no training row; left ungraded")

        # ---- evaluation items ----------------------------------------------------------------------------
        eval_out, eval_records = [], []
        for rep in reports:
            ds = datasets.get(rep["dataset"])
            if ds is None:
                warnings.append(f"{rep['name']}: its {rep['dataset']} data is not part of the job; left out")
                continue
            rows_for = (lambda it, ds=ds: ds.rows[it["index"]] if isinstance(it.get("index"), int)
                        and 0 <= it["index"] < len(ds.rows) else None)
            recs, (old_rep, new_rep), w = regrade_report(rep["report"], rows_for, new, ext, rf, rep["name"])
            warnings += w
            eval_out.append(eval_summary(rep["name"], old_rep, new_rep, recs, seed=seed, kind=rep["kind"],
                                         dataset=rep["dataset"], step=rep["step"], checkpoint_id=rep["checkpoint_id"],
                                         path=rep["path"], judged_by_grader_sha256=rep["grader_sha256"]))
            eval_records += recs
    finally:
        new.close()

    records = train_records + eval_records
    old_sha = row.get("grader_sha256") or G.spec_sha256(job.grader)
    new_sha = G.spec_sha256(spec)
    rid = new_replay_id()
    summary: dict[str, Any] = {
        "object": "rft.replay", "id": rid, "job_id": job_id, "eval_id": None,
        "graders": {"old": _grader_info(job.grader, old_sha), "new": _grader_info(spec, new_sha, source)},
        "same_grader": old_sha == new_sha,
        "reference_check": ("passed" if job.rft.train.reference_output else "skipped: the job names no "
                            "rft.train.reference_output"),
        "advantage_function": job.rft.algorithm.advantage, "group_size": group,
        "training": {"steps": steps_out, "overall": reward_stats([(r["old_score"], r["new_score"]) for r in train_records],
                                                                   seed=seed),
                     "flips": flips_of(train_records),
                     "advantages": adv_total | {"sign_flipped_keys": adv_keys["sign_flipped"],
                                                "gained_signal_keys": adv_keys["gained_signal"],
                                                "lost_signal_keys": adv_keys["lost_signal"],
                                                "groups_with_sign_flip_keys": flipped_groups}},
        "evaluations": eval_out,
        "flips": flips_of(records),
        "agreement": human_agreement(reg, job_id, records, old_sha, new_sha),
        "warnings": warnings,
    }
    if write:
        _write(run_dir / "replays" / rid, records, summary)
    if record:
        add_replay(reg, job_id=job_id, old_grader_sha256=old_sha, new_grader_sha256=new_sha, replay_id=rid,
                   summary=_registry_summary(summary), path=(summary.get("paths") or {}).get("dir"))
        reg.record_grader(new_sha, spec.get("type"), spec)
    summary["items"] = records
    return summary


def _registry_summary(summary: dict) -> dict:
    """What the registry keeps of a replay: the numbers, not the key lists (those are in the replay folder)."""
    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if not k.endswith("_keys") and k != "items"}
        if isinstance(d, list):
            return [strip(x) for x in d]
        return d
    return strip(summary)


def find_eval_report(eval_id: str, reg=None) -> tuple[dict, str, str | None]:
    """(report, its id, registry row id or None) for an evaluation id as `rft eval` printed it (report["id"]),
    a registry eval id, or a report.json path."""
    from rft.eval.runner import evals_dir, load_report
    from rft.registry import Registry

    p = Path(eval_id)
    if p.suffix == ".json" and p.exists():
        rep = load_report(p)
        return rep, str(rep.get("id") or p.parent.name), None
    d = evals_dir() / eval_id / "report.json"
    if d.exists():
        rep = load_report(d)
        return rep, str(rep.get("id") or eval_id), None
    reg = reg or Registry()
    rows = [r for r in reg.eval_reports() if r["id"] == eval_id or (r.get("summary") or {}).get("id") == eval_id]
    for r in rows:
        summ = r.get("summary") or {}
        if isinstance(summ.get("items"), list):
            return summ, str(summ.get("id") or r["id"]), r["id"]
        if r.get("path") and Path(r["path"]).exists():
            return load_report(r["path"]), str(summ.get("id") or r["id"]), r["id"]
    if rows:
        raise RftError(f"evaluation {eval_id} has no per-item records to replay (its report file is gone)")
    raise RftError(f"no evaluation '{eval_id}': not an id in {evals_dir()}, a registry eval id, or a report.json path",
                   hint="`rft eval` prints its report folder; its name is the eval id")


def replay_eval(eval_id: str, grader: str | dict, *, reg=None, write: bool = True, record: bool = True,
                seed: int = 0) -> dict:
    """Replay `grader` over a stored evaluation report's items (`rft eval --replay EVAL_ID`)."""
    from rft import graders as G
    from rft.config import ExtractionConfig
    from rft.data import load_dataset
    from rft.registry import Registry
    from rft.registry.replays import add_replay, new_replay_id

    reg = reg or Registry()
    rep, rep_id, _ = find_eval_report(eval_id, reg)
    settings = rep.get("settings") or {}
    data = rep.get("dataset")
    if not data:
        raise RftError(f"evaluation {rep_id}: the report does not name its dataset, so its items cannot be re-graded")
    spec, source, new = load_new_grader(grader)
    try:
        try:
            ds = load_dataset(str(data), split=settings.get("split") or "validation")
        except RftError as e:
            raise RftError(f"evaluation {rep_id}: its dataset {data} cannot be read again: {e.message}", e.problems,
                           hint=e.hint) from None
        warnings = []
        if rep.get("dataset_sha256") and ds.sha256 != rep["dataset_sha256"]:
            warnings.append(f"the dataset changed since the evaluation (sha256 {rep['dataset_sha256'][:12]} -> "
                            f"{ds.sha256[:12]}); items are matched by index")
        ext = ExtractionConfig(pattern=settings.get("extract"))
        rows_for = (lambda it: ds.rows[it["index"]] if isinstance(it.get("index"), int) and 0 <= it["index"] < len(ds.rows)
                    else None)
        recs, (old_rep, new_rep), w = regrade_report(rep, rows_for, new, ext, settings.get("response_format"), rep_id)
        warnings += w
    finally:
        new.close()
    old_sha = (rep.get("grader") or {}).get("sha256") or "unknown"
    new_sha = G.spec_sha256(spec)
    rid = new_replay_id()
    ev = eval_summary(rep_id, old_rep, new_rep, recs, seed=seed, model=rep.get("model"), dataset=data)
    summary = {"object": "rft.replay", "id": rid, "job_id": None, "eval_id": rep_id,
               "graders": {"old": {**_grader_info(None, old_sha), "type": (rep.get("grader") or {}).get("type"),
                                   "name": (rep.get("grader") or {}).get("name")},
                           "new": _grader_info(spec, new_sha, source)},
               "same_grader": old_sha == new_sha, "evaluations": [ev], "flips": ev["flips"], "warnings": warnings}
    if write:
        base = Path((rep.get("paths") or {}).get("dir") or (Path(eval_id).parent if eval_id.endswith(".json") else ""))
        if not str(base) or str(base) == ".":
            from rft.eval.runner import evals_dir

            base = evals_dir() / rep_id
        _write(base / "replays" / rid, recs, summary)
    if record:
        add_replay(reg, eval_id=rep_id, old_grader_sha256=old_sha, new_grader_sha256=new_sha, replay_id=rid,
                   summary=_registry_summary(summary), path=(summary.get("paths") or {}).get("dir"))
        reg.record_grader(new_sha, spec.get("type"), spec)
    summary["items"] = recs
    return summary
