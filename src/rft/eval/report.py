"""Reports for people: a training run's report.md and curves.png, an eval's report.md, a comparison's and a
gate verdict's markdown. The numbers live in the JSON next to each; these functions only format them.

Every formatter and the plot accept edge values (accuracy 0 or 1 with a bound a rounding error past the mean,
NaN or missing metrics, a single step, no evaluations, a torn metrics line) and draw or print what there is;
the training loop still treats any failure here as a warning, never as the job's failure.
How to run: `python -c "from rft.eval.report import plot_curves; plot_curves(Path('run/metrics.jsonl'), [], None,
Path('curves.png'))"`."""

from __future__ import annotations

import json
import math
from pathlib import Path


def format_ci(ev: dict | None, *, with_n: bool = True, missing: str = "n/a") -> str:
    """'0.930 [0.886, 0.958] (n=200)' for an eval summary."""
    if not ev:
        return missing
    ci = ev.get("accuracy_ci95")
    lo, hi = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    return f"{_f(ev.get('accuracy'))} [{_f(lo)}, {_f(hi)}]" + (f" (n={ev.get('n', '?')})" if with_n else "")


def _f(x, fmt: str = ".3f", missing: str = "n/a") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return missing
    try:
        return format(x, fmt)
    except (TypeError, ValueError):  # a string or other value where a number was expected: show it as it is
        return str(x)


def _ci_pair(ci, fmt: str = ".3f") -> str:
    return f"[{_f(ci[0], fmt)}, {_f(ci[1], fmt)}]" if ci else "n/a"


def _cell(s, width: int = 80) -> str:
    s = "" if s is None else str(s)
    s = s.replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= width else s[: width - 3] + "..."


def eval_markdown(r: dict) -> str:
    """report.md of `rft eval`: headline numbers, error rates, slices and the first unscored items."""
    lines = [
        f"# rft eval {r.get('id', '')}",
        "",
        f"- model: `{r.get('model')}`",
        f"- dataset: `{r.get('dataset')}` (sha256 `{(r.get('dataset_sha256') or '')[:16]}`)",
    ]
    g = r.get("grader") or {}
    if g:
        lines.append(f"- grader: `{g.get('type')}` '{g.get('name')}' (sha256 `{(g.get('sha256') or '')[:16]}`)")
    lines += [
        f"- items: {r.get('n_items', len(r.get('items', [])))}, scored: {r.get('n')}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy (mean score, {r.get('strategy') or 'greedy'}{', UPPER BOUND' if r.get('upper_bound') else ''})"
        f" [95% CI] | {_f(r.get('accuracy'))} {_ci_pair(r.get('accuracy_ci95'))} |",
        f"| pass rate (score >= {r.get('pass_threshold', 1.0)}) [95% CI] | {_f(r.get('pass_rate'))} {_ci_pair(r.get('pass_rate_ci95'))} |",
        f"| unscored (grader errors) | {_f(r.get('unscored_frac'))} |",
    ]
    for k, v in (r.get("pass_at_k") or {}).items():
        lines.append(f"| pass@{k} ({(r.get('settings') or {}).get('n', '')} samples) | {_f(v)} |")
    lines += [f"| mean completion tokens | {_f(r.get('mean_completion_tokens'), '.1f')} |", ""]
    errs = {k: v for k, v in (r.get("error_rates") or {}).items() if v}
    serrs = {k: v for k, v in (r.get("sample_error_rates") or {}).items() if v}
    if errs or serrs:
        lines += ["## Grader errors", "", "| kind | greedy | sampled |", "|---|---|---|"]
        for k in sorted(set(errs) | set(serrs)):
            lines.append(f"| {k} | {_f(errs.get(k, 0.0))} | {_f(serrs.get(k)) if serrs else '-'} |")
        lines.append("")
    for field, groups in (r.get("slices") or {}).items():
        ks = sorted({k for s in groups.values() for k in (s.get("pass_at_k") or {})}, key=int)
        lines += [f"## By `{field}`", "",
                  "| value | items | accuracy [95% CI] | unscored |" + "".join(f" pass@{k} |" for k in ks),
                  "|---|---|---|---|" + "---|" * len(ks)]
        for v, s in groups.items():
            lines.append(f"| {_cell(v, 40)} | {s['n']} | {_f(s['accuracy'])} {_ci_pair(s['accuracy_ci95'])} | "
                         f"{_f(s['unscored_frac'])} |" + "".join(f" {_f(s.get('pass_at_k', {}).get(k))} |" for k in ks))
        lines.append("")
    bad = [it for it in r.get("items", []) if it.get("error")]
    if bad:
        lines += ["## Unscored items (first 20)", "", "| item | error | completion |", "|---|---|---|"]
        for it in bad[:20]:
            lines.append(f"| {it.get('id') if it.get('id') is not None else it.get('index')} | {it['error']} | "
                         f"{_cell(it.get('completion'))} |")
        lines.append("")
    if r.get("paths"):
        lines += ["## Files", ""] + [f"- {k}: `{v}`" for k, v in r["paths"].items()] + [""]
    return "\n".join(lines)


def _side(s: dict) -> str:
    name = s.get("model") or s.get("id") or "?"
    return f"`{name}`" + (f" (step {s['step']})" if s.get("step") is not None else "")


def comparison_markdown(c: dict, *, max_items: int = 20) -> str:
    """Markdown of a `compare_reports` result (B - A)."""
    m = c["mcnemar"]
    p = m["p_value"]
    lines = [
        "# rft compare",
        "",
        f"- A: {_side(c['a'])}",
        f"- B: {_side(c['b'])}",
        f"- items paired by {c['paired_by']}: {c['n_paired']} ({c['n_scored_pairs']} scored by both)",
        "",
        "| | A | B | B - A [95% CI] |",
        "|---|---|---|---|",
        f"| mean score (paired items) | {_f(c['mean_a'])} | {_f(c['mean_b'])} | "
        f"{_f(c['mean_difference'], '+.3f')} {_ci_pair(c['difference_ci95'], '+.3f')} |",
        f"| unscored | {_f(c['a'].get('unscored_frac'))} | {_f(c['b'].get('unscored_frac'))} | |",
        f"| mean completion tokens | {_f(c['a'].get('mean_completion_tokens'), '.1f')} | "
        f"{_f(c['b'].get('mean_completion_tokens'), '.1f')} | |",
        "",
        f"- CI: {c['ci_method']}",
        f"- McNemar ({m['method']}): {m['improved']} improved vs {m['regressed']} regressed pass/fail, "
        f"p = {_f(p, '.4g')}" + (f", statistic {_f(m['statistic'], '.3f')}" if m.get("statistic") is not None else ""),
        f"- by score: {c['n_improved']} improved, {c['n_regressed']} regressed, {c['n_unchanged']} unchanged; "
        f"became unscored in B: {len(c.get('became_unscored', []))}",
    ]
    lines += [f"- warning: {w}" for w in c.get("warnings", [])]
    lines.append("")
    for field, groups in (c.get("slices") or {}).items():
        lines += [f"## By `{field}`", "", "| value | pairs | A | B | B - A [95% CI] | improved | regressed | McNemar p |",
                  "|---|---|---|---|---|---|---|---|"]
        for v, s in groups.items():
            lines.append(f"| {_cell(v, 40)} | {s['n_scored_pairs']} | {_f(s['mean_a'])} | {_f(s['mean_b'])} | "
                         f"{_f(s['mean_difference'], '+.3f')} {_ci_pair(s['difference_ci95'], '+.3f')} | "
                         f"{s['n_improved']} | {s['n_regressed']} | {_f(s['mcnemar']['p_value'], '.3g')} |")
        lines.append("")
    for title, key in (("Regressed items", "regressed"), ("Improved items", "improved")):
        its = c.get(key) or []
        if not its:
            continue
        lines += [f"## {title} ({len(its)}{', first ' + str(max_items) if len(its) > max_items else ''})", "",
                  "| item | A | B | answer | A completion | B completion |", "|---|---|---|---|---|---|"]
        for it in its[:max_items]:
            lines.append(f"| {it['key']} | {_f(it['a'], '.2f')} | {_f(it['b'], '.2f')} | {_cell(it.get('answer'), 30)} | "
                         f"{_cell(it.get('a_completion'), 60)} | {_cell(it.get('b_completion'), 60)} |")
        lines.append("")
    if c.get("paths"):
        lines += ["## Files", ""] + [f"- {k}: `{v}`" for k, v in c["paths"].items()] + [""]
    return "\n".join(lines)


def gates_markdown(v: dict) -> str:
    """Markdown of an `evaluate_gates` verdict."""
    lines = [f"## Quality gates: **{'passed' if v['passed'] else 'FAILED'}**", "",
             "| check | result | value | threshold | detail |", "|---|---|---|---|---|"]
    for ch in v["checks"]:
        lines.append(f"| {ch['name']} | {'pass' if ch['passed'] else 'FAIL'} | {_f(ch.get('value'), '.4g')} | "
                     f"{_f(ch.get('threshold'), '.4g', '-')} | {_cell(ch.get('detail'), 120)} |")
    return "\n".join(lines) + "\n"


def run_markdown(report: dict) -> str:
    """report.md of a training run (a job object as `run_job` returns it); tolerant of missing and NaN values."""
    b, f = report.get("baseline_eval"), report.get("final_eval")
    lines = [
        f"# rft run {report.get('id')}",
        "",
        f"- model: `{report.get('model')}` -> `{report.get('fine_tuned_model')}`",
        f"- status: **{report.get('status')}**",
        f"- training file: `{report.get('training_file')}` (sha256 `{(report.get('training_file_sha256') or '')[:16]}`)",
        f"- validation file: `{report.get('validation_file')}` (sha256 `{(report.get('validation_file_sha256') or '')[:16]}`)",
        f"- grader: `{report.get('grader_type')}` (sha256 `{(report.get('grader_sha256') or '')[:16]}`)",
        f"- resolved config sha256: `{(report.get('config_sha256') or '')[:16]}`",
        f"- code version: `{report.get('code_version')}`",
        f"- steps: {report.get('trained_steps')} in {_f(report.get('train_seconds'), '.1f')} s of training"
        + (f" ({report['skipped_steps']} skipped: non-finite loss or gradient)" if report.get("skipped_steps") else ""),
        "",
        "| | greedy accuracy [95% CI] |",
        "|---|---|",
        f"| baseline | {format_ci(b)} |",
        f"| final | {format_ci(f)} |",
        "",
    ]
    if report.get("evals"):
        lines += ["## Evaluations during training", "", "| step | accuracy [95% CI] | unscored |", "|---|---|---|"]
        for ev in report["evals"]:
            lines.append(f"| {ev.get('step')} | {format_ci(ev)} | {_f(ev.get('unscored_frac'))} |")
        lines.append("")
    c = report.get("final_comparison")
    if c:
        m = c.get("mcnemar") or {}
        lines += [
            "## Final against baseline (paired, validation set)",
            "",
            f"- final - baseline: {_f(c.get('mean_difference'), '+.3f')} {_ci_pair(c.get('difference_ci95'), '+.3f')} "
            f"on {c.get('n_scored_pairs')} items ({c.get('ci_method')})",
            f"- McNemar ({m.get('method')}): {m.get('improved')} improved vs {m.get('regressed')} regressed pass/fail, "
            f"p = {_f(m.get('p_value'), '.4g')}",
            "",
        ]
    if report.get("regressed_items") is not None:
        lines += [
            "## Per-item change against the baseline (validation set)",
            "",
            f"- improved: {len(report.get('improved_items') or [])} items; regressed: {len(report['regressed_items'])} items",
        ]
        for it in report["regressed_items"][:20]:
            # records of compare_reports (a = baseline, b = final)
            lines.append(f"  - regressed item {it.get('key', it.get('index'))}: baseline {it.get('a_completion')!r} "
                         f"({_f(it.get('a'), '.2f')}) -> final {it.get('b_completion')!r} ({_f(it.get('b'), '.2f')})")
        lines.append("")
    if report.get("final_verdict"):
        lines += [gates_markdown(report["final_verdict"])]
    lines += ["## Files", ""] + [f"- {k}: `{v}`" for k, v in (report.get("paths") or {}).items()]
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: Path) -> None:
    """Write `run_markdown(report)` to `path` (temp file, then rename: a failed write leaves the old one)."""
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(run_markdown(report), encoding="utf-8")
    os.replace(tmp, path)


def read_metric_rows(metrics_path: Path) -> list[dict]:
    """metrics.jsonl rows that parse as objects; a torn last line (a kill mid-write) or a stray value is skipped."""
    rows = []
    if not metrics_path.exists():
        return rows
    for line in metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _num(x) -> float:
    """x as a float, NaN when it is missing, not a number, or infinite (a point that cannot be drawn)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def curve_points(rows: list[dict], evals: list[dict], baseline: dict | None):
    """What `plot_curves` draws, as plain numbers: (train steps, train rewards) without NaN, and for validation
    (steps, accuracies, lower error bars, upper error bars) with the bars clamped to >= 0. A confidence bound can
    land a rounding error on the wrong side of its mean (a Wilson interval for 0 of n has a lower bound of about
    1e-17), and matplotlib refuses negative error bars; points without a finite accuracy are left out, and a
    missing or NaN bound draws no bar on that side."""
    train = [(_num(r.get("step")), _num(r.get("reward"))) for r in rows]
    train = [(s, r) for s, r in train if not (math.isnan(s) or math.isnan(r))]
    es, ea, lo, hi = [], [], [], []
    for e in ([baseline] if baseline else []) + list(evals or []):  # the baseline is the step-0 point
        if not isinstance(e, dict):
            continue
        acc = _num(e.get("accuracy"))
        step = _num(e.get("step") or 0)
        if math.isnan(acc) or math.isnan(step):
            continue
        ci = e.get("accuracy_ci95")
        low, high = (_num(ci[0]), _num(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (acc, acc)
        es.append(step)
        ea.append(acc)
        lo.append(0.0 if math.isnan(low) else max(0.0, acc - low))
        hi.append(0.0 if math.isnan(high) else max(0.0, high - acc))
    return [s for s, _ in train], [r for _, r in train], (es, ea, lo, hi)


def plot_curves(metrics_path: Path, evals: list[dict], baseline: dict | None, out: Path) -> Path | None:
    """curves.png: training reward per step (with a moving mean) and validation accuracy with its 95% CI.
    Draws whatever there is (no steps, one step, NaN rewards, no evaluations); the caller decides what a failure
    here means (the training loop logs it as a warning: a plot never fails a job)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, rewards, (es, ea, lo, hi) = curve_points(read_metric_rows(Path(metrics_path)), evals, baseline)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    try:
        ax[0].plot(steps, rewards, ".-", color="tab:blue", label="train reward (mean)")
        if len(rewards) >= 5:
            w = 5
            smooth = [sum(rewards[max(0, i - w + 1): i + 1]) / len(rewards[max(0, i - w + 1): i + 1])
                      for i in range(len(rewards))]
            ax[0].plot(steps, smooth, "-", color="tab:orange", label="moving mean (5)")
        if not steps:
            ax[0].text(0.5, 0.5, "no training steps with a reward", ha="center", va="center",
                       transform=ax[0].transAxes, color="gray")
        ax[0].set_xlabel("step")
        ax[0].set_ylabel("reward")
        ax[0].set_title("training reward")
        if steps:
            ax[0].legend()
        ax[0].grid(alpha=0.3)
        if es:
            ax[1].errorbar(es, ea, yerr=[lo, hi], fmt="o-", capsize=3, label="validation accuracy (95% CI)")
        bacc = _num(baseline.get("accuracy")) if isinstance(baseline, dict) else float("nan")
        if not math.isnan(bacc):
            ax[1].axhline(bacc, color="gray", linestyle="--", label=f"baseline {bacc:.3f}")
        if not es:
            ax[1].text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax[1].transAxes, color="gray")
        ax[1].set_xlabel("step")
        ax[1].set_ylabel("greedy accuracy")
        ax[1].set_title("validation")
        ax[1].set_ylim(0, 1.02)
        if es or not math.isnan(bacc):
            ax[1].legend(loc="lower right")
        ax[1].grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
