"""Views of jobs, checkpoints, aliases, the audit log and evaluation results: what `rft` prints and what an HTTP
API or a dashboard shows, shaped once.

What: two kinds of value, both plain data.
  - Rows (dicts of JSON values): `job_row`, `job_detail`, `event_row`, `checkpoint_row`, `checkpoint_detail` (with
    the gate verdict, every check and its numbers, and the approvals), `alias_row`, `audit_rows`. These are the
    `--json` output of the CLI, key for key, and what an HTTP route returns.
  - Tables (`TableView`: a title, column headers, rows of text cells): `jobs_table`, `job_detail_table`,
    `checkpoints_table`, `aliases_table`, `audit_table`, `training_summary`, `eval_table`, `compare_table`,
    `preflight_table`, `grader_file_table`. The numbers are formatted here (accuracy with its 95% CI, the gate
    verdict, the approval) so a terminal and a web page show the same text; drawing the table is the caller's.
  Also the shape checks of ids a user types (`job_ref`, `checkpoint_ref`, `alias_ref`): an RftError before the
  registry is asked.
Simplified: the functions take the `Registry` to read from (the CLI opens the default one; a server passes its
own) and never write to it. Text cells are plain strings: a renderer that interprets markup (rich does) shows
them as the CLI always has.
How to run: `python -c "from rft.registry import Registry; from rft import views; print(views.alias_rows(Registry()))"`;
the tests are tests/test_views.py.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass

from rft.errors import RftError
from rft.eval.report import format_ci


@dataclass(frozen=True)
class TableView:
    """A table as text: `rows` hold one string per column (an empty string where there is no value)."""

    title: str | None
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _table(title: str | None, columns: tuple[str, ...], rows) -> TableView:
    return TableView(title, columns, tuple(tuple("" if c is None else c for c in r) for r in rows))


def when(ts: float | None) -> str:
    """A registry timestamp as local time, '-' where there is none."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _num(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _ci(ci, fmt: str = ".3f") -> str:
    return f"[{_num(ci[0], fmt)}, {_num(ci[1], fmt)}]"


# ----------------------------------------------------------------------------------- ids a user types
# rft makes every id: ftjob-20250101-120000-1a2b3c, ckpt-1a2b3c4d; a prefix of one has the same letters.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z0-9._-]{1,64}")  # the registry's rule for alias names


def _checked(value: str, pattern: re.Pattern, what: str, rule: str, hint: str) -> str:
    v = value.strip()
    if not pattern.fullmatch(v):
        shown = json.dumps(value, ensure_ascii=False)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise RftError(f"{shown} is not a valid {what}: {rule}", hint=hint)
    return v


def job_ref(value: str) -> str:
    """A job id (or a prefix of one) as typed, checked for shape: RftError for anything else."""
    return _checked(value, _ID, "job id", "ids are letters, digits and '-', like ftjob-20250101-120000-1a2b3c",
                    "see `rft jobs list`")


def checkpoint_ref(value: str) -> str:
    """A checkpoint id (`ckpt-...`, a `ckpt:` prefix allowed) checked for shape; returned without the prefix."""
    return _checked(value.strip().removeprefix("ckpt:"), _ID, "checkpoint id",
                    "ids are letters, digits and '-', like ckpt-1a2b3c4d (a ckpt: prefix is allowed)",
                    "see `rft checkpoints list JOB`")


def alias_ref(value: str) -> str:
    """An alias name (an `alias:` prefix allowed) checked against the registry's rule; returned without it."""
    return _checked(value.strip().removeprefix("alias:"), _ALIAS, "alias name",
                    "use letters, digits, '.', '_' or '-' (at most 64)", "see `rft aliases list`")


# ------------------------------------------------------------------------------------------------ jobs
JOB_FIELDS = ("id", "status", "model", "step", "total_steps", "created_at", "updated_at", "finished_at", "run_dir",
              "pid", "config_sha256", "training_file", "training_file_sha256", "validation_file",
              "validation_file_sha256", "grader_sha256", "base_model_sha256", "code_version", "error", "result")


def job_row(job: dict) -> dict:
    """The public fields of a registry job row, in `JOB_FIELDS` order (missing ones are None)."""
    return {k: job.get(k) for k in JOB_FIELDS}


def job_detail(reg, ref: str) -> dict:
    """One job (`ref`: an id or a unique prefix) with its checkpoints as {id, step, status}."""
    j = job_row(reg.get_job(job_ref(ref)))
    j["checkpoints"] = [{"id": c["id"], "step": c["step"], "status": c["status"]}
                        for c in reg.list_checkpoints(j["id"])]
    return j


def jobs_table(rows: list[dict]) -> TableView:
    return _table("jobs", ("id", "status", "step", "model", "created", "run dir"),
                  ((j["id"], j["status"], f"{j['step']}/{j['total_steps'] or '?'}", j["model"], when(j["created_at"]),
                    j["run_dir"]) for j in rows))


def job_detail_table(j: dict) -> TableView:
    """Field / value, timestamps as local time, lists and dicts as JSON."""
    rows = []
    for k, v in j.items():
        if k in ("created_at", "updated_at", "finished_at"):
            v = when(v)
        rows.append((k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)))
    return _table(f"job {j['id']}", ("", ""), rows)


def event_row(e: dict) -> dict:
    """A registry event with the `id` (its sequence number) and `status` (its level) every listing has."""
    return {"id": e["seq"], "status": e["level"], **e}


def event_line(e: dict) -> str:
    return f"{when(e['created_at'])}  {e['level']:<5} {e['message']}"


# ----------------------------------------------------------------------------------------- checkpoints
def checkpoint_row(reg, c: dict) -> dict:
    """A checkpoint with its validation score and 95% CI, its gate result ('passed', 'failed' or None when no
    verdict was recorded) and its approval status."""
    v = reg.verdict(c["verdict_id"])
    gate = None if v is None else ("passed" if v["passed"] else "failed")
    return {"id": c["id"], "status": c["status"], "job_id": c["job_id"], "step": c["step"], "is_final": c["is_final"],
            "validation_score": c["val_score"], "validation_ci95": [c["val_low"], c["val_high"]], "gates": gate,
            "verdict_id": c["verdict_id"], "approval_status": c["approval_status"], "path": c["path"],
            "manifest_sha256": c["manifest_sha256"]}


def checkpoint_rows(reg, job: str, *, include_pruned: bool = False) -> tuple[str, list[dict]]:
    """(the job's full id, its checkpoints as `checkpoint_row`s); `job` is an id or a unique prefix."""
    jid = reg.get_job(job_ref(job))["id"]
    return jid, [checkpoint_row(reg, c) for c in reg.list_checkpoints(jid, include_pruned=include_pruned)]


def checkpoint_detail(reg, ref: str) -> dict:
    """`checkpoint_row` plus the gate verdict (every check with its value, threshold and detail; None when no
    verdict was recorded) and every approval."""
    c = reg.get_checkpoint(checkpoint_ref(ref))
    view = checkpoint_row(reg, c)
    v = reg.verdict(c["verdict_id"])
    view["verdict"] = v["verdict"] if v else None
    view["approvals"] = reg.approvals(c["id"])
    return view


def checkpoints_table(job_id: str, rows: list[dict]) -> TableView:
    cells = []
    for r in rows:
        lo, hi = r["validation_ci95"]
        val = "-" if r["validation_score"] is None else f"{r['validation_score']:.3f} [{lo:.3f}, {hi:.3f}]"
        cells.append((r["id"], f"{r['step']}{' (final)' if r['is_final'] else ''}", val, r["gates"] or "-",
                      r["approval_status"], r["status"]))
    return _table(f"checkpoints of {job_id}", ("id", "step", "validation (95% CI)", "gates", "approval", "status"),
                  cells)


# --------------------------------------------------------------------------------------- aliases, audit
def alias_row(a: dict) -> dict:
    """A registry alias (as promote and rollback return it) with `id` (its name) and `status` 'live'."""
    return {"id": a["name"], "status": "live", **a}


def alias_rows(reg) -> list[dict]:
    return [{"id": a["name"], "status": "live", "checkpoint_id": a["checkpoint_id"], "updated_at": a["updated_at"],
             "version": a["version"]} for a in reg.list_aliases()]


def aliases_table(rows: list[dict]) -> TableView:
    return _table("aliases", ("alias", "checkpoint", "updated", "moves"),
                  ((r["id"], r["checkpoint_id"], when(r["updated_at"]), str(r["version"])) for r in rows))


def audit_rows(reg, subject: str | None = None) -> list[dict]:
    """The audit log (of one subject, e.g. alias:production or a job id), with `id` (its sequence number) and
    `status` (the action)."""
    return [{"id": r["seq"], "status": r["action"], **r} for r in reg.audit_log(subject)]


def audit_table(rows: list[dict]) -> TableView:
    return _table("audit log", ("when", "actor", "action", "subject", "before", "after"),
                  ((when(r["at"]), r["actor"], r["action"], r["subject"], json.dumps(r["before"]),
                    json.dumps(r["after"])) for r in rows))


# ------------------------------------------------------------------------------------ training results
def training_summary(r: dict) -> TableView:
    """A finished training job (`rft.train.loop.run_job`'s result): accuracies before and after with their 95%
    CIs, the change, timing, the report and plot paths and the final checkpoint with its gate result."""

    def ci(ev):
        return format_ci(ev, with_n=False, missing="-")

    rows = [("baseline accuracy (greedy, 95% CI)", ci(r.get("baseline_eval"))),
            ("final accuracy (greedy, 95% CI)", ci(r.get("final_eval")))]
    b, f = r.get("baseline_eval") or {}, r.get("final_eval") or {}
    if b.get("accuracy") is not None and f.get("accuracy") is not None:
        d = f["accuracy"] - b["accuracy"]
        rows.append(("change", f"{d:+.3f}  ({len(r.get('improved_items', []))} items improved, "
                               f"{len(r.get('regressed_items', []))} regressed)"))
    elif b.get("valid_loss") is not None or f.get("valid_loss") is not None:  # a job without a grader
        rows.append(("validation loss", f"{b.get('valid_loss', '-')} -> {f.get('valid_loss', '-')}"))
    rows.append(("validation items", str((r.get("final_eval") or r.get("baseline_eval") or {}).get("n", "-"))))
    rows.append(("training time", f"{r['train_seconds']:.1f} s for {r['trained_steps']} steps "
                                  f"({r['train_seconds'] / max(1, r['trained_steps']):.1f} s/step)"))
    rows.append(("report", r["paths"]["report"]))
    rows.append(("plot", r["paths"]["plot"]))
    ck = r.get("final_checkpoint_id")
    verdict = r.get("final_verdict") or {}
    gates = "" if not verdict else ("  gates passed" if verdict.get("passed") else "  gates FAILED")
    rows.append(("final checkpoint", (f"ckpt:{ck}{gates}\n" if ck else "") + str(r["paths"]["checkpoint"])))
    return _table(f"rft job {r['id']}: {r['status']}", ("", "value"), rows)


def training_next_steps(r: dict) -> str | None:
    """What to do with a finished job's final checkpoint (None when it has none)."""
    ck = r.get("final_checkpoint_id")
    if not ck:
        return None
    return (f"next: rft checkpoints list {r['id']}  |  rft checkpoints approve {ck} --by NAME --note TEXT  |  "
            f"rft promote {ck} --alias production  |  rft serve --model alias:production")


def preflight_table(rep: dict, title: str) -> TableView:
    """`rft.preflight.run_preflight`'s report: learnability, grader health, step time and run forecast."""
    rows = [("prompts sampled x group size", f"{rep['prompts_sampled']} x {rep['group_size']}"),
            ("mean pass rate", f"{rep['pass_rate_mean']:.3f}"),
            ("pass-rate histogram (prompts)", "  ".join(f"{k}: {v}" for k, v in rep["pass_rate_histogram"].items())),
            ("groups with zero reward variance", f"{rep['zero_variance_group_frac']:.1%}"),
            ("unscored samples", f"{rep['unscored_frac']:.1%}"
             + (f"  {rep['grader_error_rates']}" if rep["grader_error_rates"] else "")),
            ("grader latency (mean)", f"{rep['grader_latency_ms_mean']:.2f} ms")]
    mem = rep.get("memory")
    if mem:
        lim = f" of {mem['limit_bytes'] / 2**30:.2f} GiB ({mem['limit_source']})" if mem["limit_bytes"] else ""
        rows.append(("memory forecast (peak)", f"{mem['peak_gib']:.2f} GiB{lim}, in {mem['peak_phase']}"))
        rows.append(("  persistent", ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in mem["components"].items() if v)))
        rows.append(("  transient (largest adds)", ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in mem["phases"].items())))
    st = rep["step"]
    rows.append(("step", f"{st['completions']} completions, ~{st['tokens']} tokens"))
    rows.append(("step time (measured)", ", ".join(f"{x:.1f}s" for x in st["measured_seconds"])
                 + f"  (sampling {st['sampling_seconds']:.1f}s, grading {st['grading_seconds']:.2f}s, "
                   f"training {st['training_seconds']:.1f}s)"))
    rows.append(("step time (forecast)", f"{st['forecast_seconds']:.1f} s"))
    f = rep["forecast"]
    rows.append(("run forecast", f"{f['total_steps']} steps: ~{f['train_seconds'] / 60:.1f} min training + "
                                 f"~{f['eval_seconds'] / 60:.1f} min evaluation"))
    rows.extend(("recommendation", r) for r in rep["recommendations"])
    rows.append(("preflight took", f"{rep['seconds']:.1f} s"))
    return _table(title, ("", "value"), rows)


# ------------------------------------------------------------------------------- evaluation results
def eval_table(rep: dict, title: str) -> TableView:
    """An eval report (`rft.eval.runner.run_eval`): accuracy with its 95% CI, items, unscored and grader error
    rates, pass@k, completion length, per-slice accuracy, time and the report files."""
    how = (rep.get("strategy") or "greedy") + (", UPPER BOUND" if rep.get("upper_bound") else "")
    rows = [(f"accuracy ({how}, 95% CI)", f"{_num(rep['accuracy'])}  {_ci(rep['accuracy_ci95'])}"),
            ("items (scored)", f"{len(rep['items'])} ({rep['n']})"),
            ("unscored", _num(rep["unscored_frac"]))]
    rows.extend((f"  {k}", f"{v:.1%}") for k, v in rep["error_rates"].items() if v)
    rows.extend((f"pass@{k}", _num(v)) for k, v in rep["pass_at_k"].items())
    rows.append(("mean completion tokens", _num(rep["mean_completion_tokens"], ".1f")))
    for field, groups in rep.get("slices", {}).items():
        for value, s in groups.items():
            rows.append((f"{field}={value}", f"{_num(s['accuracy'])}  {_ci(s['accuracy_ci95'])}  (n={s['n']})"))
    rows.append(("seconds", _num(rep["seconds"], ".1f")))
    rows.extend((f"report ({k})", rep["paths"][k]) for k in ("json", "markdown") if k in rep.get("paths", {}))
    return _table(title, ("metric", "value"), rows)


def compare_table(res: dict) -> TableView:
    """A paired comparison B - A (`rft.eval.compare.compare_models`): the difference with its CI, McNemar's test,
    items improved and regressed, per-slice differences, warnings and the files written."""
    m = res["mcnemar"]
    rows = [("paired items (scored by both)", f"{res['n_paired']} ({res['n_scored_pairs']}), by {res['paired_by']}"),
            ("mean score A / B", f"{_num(res['mean_a'])} / {_num(res['mean_b'])}"),
            ("B - A (95% CI)", f"{_num(res['mean_difference'], '+.3f')}  {_ci(res['difference_ci95'], '+.3f')}  "
                               f"({res['ci_method']})"),
            ("McNemar", f"{m['improved']} improved / {m['regressed']} regressed pass-fail, "
                        f"p = {_num(m['p_value'], '.4g')} ({m['method']})"),
            ("by score", f"{res['n_improved']} improved, {res['n_regressed']} regressed, "
                         f"{res['n_unchanged']} unchanged")]
    for field, groups in res["slices"].items():
        for value, s in groups.items():
            rows.append((f"{field}={value}", f"{_num(s['mean_difference'], '+.3f')}  "
                                             f"{_ci(s['difference_ci95'], '+.3f')}  (n={s['n_scored_pairs']})"))
    rows.extend(("warning", w) for w in res["warnings"])
    rows.extend(res.get("paths", {}).items())
    return _table(f"compare B - A: {res['b'].get('model')} vs {res['a'].get('model')}", ("", "value"), rows)


def grader_file_table(summary: dict, n_rows: int) -> TableView:
    """`rft.graders.run.grade_file`'s summary: mean score, pass rate, unscored and error rates, latency."""
    ms = summary["mean_score"]
    rows = [("mean score (scored samples)", "-" if ms is None else f"{ms:.4f}")]
    if summary.get("pass_rate") is not None:
        rows.append(("pass rate", f"{summary['pass_rate']:.3f}"))
    rows.append(("unscored", f"{summary['unscored']} ({summary['unscored_frac']:.1%})"))
    rows.extend((f"  {k}", f"{v:.1%}") for k, v in summary["error_rates"].items() if v)
    rows.append(("latency mean / p95", f"{summary['latency_mean_s'] * 1000:.2f} ms / "
                                       f"{summary['latency_p95_s'] * 1000:.2f} ms"))
    rows.append(("seconds", f"{summary['seconds']:.2f}"))
    return _table(f"{summary['grader']['type']} grader '{summary['grader']['name']}' on {n_rows} samples",
                  ("metric", "value"), rows)


# ----------------------------------------------------------------------------------- dashboard views
# What the dashboard (`rft.serve.dashboard`) shows beyond the rows above, shaped here so a page and a future
# CLI command agree. Plain data, no markup.
CURVES = (  # (chart title, ((metric key, label), ...)): the job page's live curves, from metrics.jsonl rows
    ("reward", (("reward", "mean reward"), ("reward_std", "reward std"))),
    ("KL", (("kl", "KL to reference"),)),
    ("entropy", (("entropy", "entropy"),)),
    ("completion length", (("completions/mean_length", "mean tokens"), ("completions/max_length", "max tokens"))),
    ("step time (s)", (("time/step", "whole step"), ("time/sampling", "sampling"), ("time/training", "training"))),
)


def _finite(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def validation_points(reports: list[dict]) -> list[dict]:
    """A job's evaluations (registry eval reports: baseline, checkpoint, final) as points on the validation
    curve, one per step (the latest report of a step wins): {step, kind, accuracy, low, high, n}."""
    by_step: dict[int, dict] = {}
    for r in reports:
        if r.get("kind") not in ("baseline", "checkpoint", "final"):
            continue
        s = r.get("summary") or {}
        step = s.get("step")
        if not isinstance(step, int):
            step = 0 if r["kind"] == "baseline" else None
        if step is None:
            continue
        lo, hi = (list(s.get("accuracy_ci95") or [None, None]) + [None, None])[:2]
        by_step[step] = {"step": step, "kind": r["kind"], "accuracy": _finite(s.get("accuracy")),
                         "low": _finite(lo), "high": _finite(hi), "n": s.get("n")}
    return [by_step[k] for k in sorted(by_step)]


def curves_data(metric_rows: list[dict], reports: list[dict]) -> dict:
    """The job page's chart data: `steps` and, per metric key, one value per step (None where missing or not
    finite: a chart shows a gap); the grader error chart holds the unscored fraction and every `errors/<kind>` rate that was ever above 0; `validation` the points of
    `validation_points`. JSON-ready (no NaN)."""
    rows = sorted((r for r in metric_rows if isinstance(r.get("step"), int)), key=lambda r: r["step"])
    keys = {k for _, series in CURVES for k, _ in series}
    # only the error kinds that happened (a grader has a dozen kinds; a legend of zeros hides the one that matters)
    err_keys = ["unscored_frac"] + sorted({k for r in rows for k, v in r.items()
                                           if k.startswith("errors/") and _finite(v)})
    return {"steps": [r["step"] for r in rows],
            "series": {k: [_finite(r.get(k)) for r in rows] for k in sorted(keys | set(err_keys))},
            "charts": [{"title": t, "series": [{"key": k, "label": lab} for k, lab in s]} for t, s in CURVES]
            + [{"title": "grader error rates", "series": [{"key": k, "label": "unscored (any error)" if k == "unscored_frac"
                                                           else k.removeprefix("errors/")}
                                                          for k in err_keys]}],
            "validation": validation_points(reports)}


def job_overview(job: dict, metric_rows: list[dict], reports: list[dict], now: float | None = None) -> dict:
    """`job_row` plus progress (0-1, None without a step count), an ETA in seconds (a running job: the mean step
    time of its logged steps times the steps left; None when unknown) and the baseline and latest validation
    scores with their 95% CIs (None where not measured)."""
    j = job_row(job)
    total, step = j.get("total_steps"), j.get("step") or 0
    j["progress"] = min(1.0, step / total) if total else None
    times = [t for t in (_finite(r.get("time/step")) for r in metric_rows) if t is not None]
    j["eta_s"] = (sum(times) / len(times)) * max(0, total - step) if (
        j["status"] == "running" and total and times) else None
    pts = validation_points(reports)
    base = next((p for p in pts if p["kind"] == "baseline"), None)
    later = [p for p in pts if p["kind"] != "baseline"]
    j["baseline_score"] = base
    j["latest_score"] = later[-1] if later else None
    return j


def duration(seconds: float | None) -> str:
    """Seconds as '1h 02m', '3m 05s' or '12s'; '-' for None."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def score_text(p: dict | None) -> str:
    """A validation point as '0.625 [0.306, 0.863]'; '-' for None."""
    if not p or p.get("accuracy") is None:
        return "-"
    return f"{_num(p['accuracy'])} {_ci((p.get('low'), p.get('high')))}"


def sample_view(rows: list[dict]) -> list[dict]:
    """samples/step_K.jsonl rows as the sample browser shows them: prompt, completion, reward (None: unscored),
    grader error (None: none), advantage, finish reason."""
    out = []
    for i, r in enumerate(rows):
        out.append({"index": i, "prompt": str(r.get("prompt", "")), "completion": str(r.get("completion", "")),
                    "reward": _finite(r.get("reward")), "error": r.get("error") or None,
                    "advantage": _finite(r.get("advantage")), "finish_reason": r.get("finish_reason")})
    return out
