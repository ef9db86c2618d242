"""Reports for people: a training run's report.md and curves.png, an eval's report.md, a comparison's and a
gate verdict's markdown. The numbers live in the JSON next to each; these functions only format them."""

from __future__ import annotations

import json
import math
from pathlib import Path


def format_ci(ev: dict | None, *, with_n: bool = True, missing: str = "n/a") -> str:
    """'0.930 [0.886, 0.958] (n=200)' for an eval summary."""
    if not ev:
        return missing
    lo, hi = ev["accuracy_ci95"]
    return f"{ev['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]" + (f" (n={ev['n']})" if with_n else "")


def _f(x, fmt: str = ".3f", missing: str = "n/a") -> str:
    return missing if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


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
        f"| accuracy (mean score, greedy) [95% CI] | {_f(r.get('accuracy'))} {_ci_pair(r.get('accuracy_ci95'))} |",
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


def write_markdown(report: dict, path: Path) -> None:
    b, f = report.get("baseline_eval"), report.get("final_eval")
    lines = [
        f"# rft run {report['id']}",
        "",
        f"- model: `{report['model']}` -> `{report.get('fine_tuned_model')}`",
        f"- status: **{report['status']}**",
        f"- training file: `{report['training_file']}` (sha256 `{report.get('training_file_sha256', '')[:16]}`)",
        f"- validation file: `{report.get('validation_file')}` (sha256 `{(report.get('validation_file_sha256') or '')[:16]}`)",
        f"- grader: `{report.get('grader_type')}` (sha256 `{report.get('grader_sha256', '')[:16]}`)",
        f"- resolved config sha256: `{report.get('config_sha256', '')[:16]}`",
        f"- code version: `{report.get('code_version')}`",
        f"- steps: {report.get('trained_steps')} in {report.get('train_seconds', 0):.1f} s of training",
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
            lines.append(f"| {ev['step']} | {format_ci(ev)} | {ev['unscored_frac']:.3f} |")
        lines.append("")
    c = report.get("final_comparison")
    if c:
        m = c["mcnemar"]
        lines += [
            "## Final against baseline (paired, validation set)",
            "",
            f"- final - baseline: {_f(c['mean_difference'], '+.3f')} {_ci_pair(c['difference_ci95'], '+.3f')} "
            f"on {c['n_scored_pairs']} items ({c['ci_method']})",
            f"- McNemar ({m['method']}): {m['improved']} improved vs {m['regressed']} regressed pass/fail, p = {_f(m['p_value'], '.4g')}",
            "",
        ]
    if report.get("regressed_items") is not None:
        lines += [
            "## Per-item change against the baseline (validation set)",
            "",
            f"- improved: {len(report.get('improved_items', []))} items; regressed: {len(report['regressed_items'])} items",
        ]
        for it in report["regressed_items"][:20]:
            # records of compare_reports (a = baseline, b = final)
            lines.append(f"  - regressed item {it.get('key', it.get('index'))}: baseline {it.get('a_completion')!r} "
                         f"({_f(it.get('a'), '.2f')}) -> final {it.get('b_completion')!r} ({_f(it.get('b'), '.2f')})")
        lines.append("")
    if report.get("final_verdict"):
        lines += [gates_markdown(report["final_verdict"])]
    lines += ["## Files", ""] + [f"- {k}: `{v}`" for k, v in report.get("paths", {}).items()]
    path.write_text("\n".join(lines) + "\n")


def plot_curves(metrics_path: Path, evals: list[dict], baseline: dict | None, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, rewards = [], []
    if metrics_path.exists():
        for line in metrics_path.read_text().splitlines():
            row = json.loads(line)
            steps.append(row["step"])
            rewards.append(row["reward"])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(steps, rewards, ".-", color="tab:blue", label="train reward (mean)")
    if len(rewards) >= 5:
        w = 5
        smooth = [sum(rewards[max(0, i - w + 1) : i + 1]) / len(rewards[max(0, i - w + 1) : i + 1]) for i in range(len(rewards))]
        ax[0].plot(steps, smooth, "-", color="tab:orange", label="moving mean (5)")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("reward")
    ax[0].set_title("training reward")
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    points = ([baseline] if baseline else []) + list(evals)  # the baseline is the step-0 point
    es = [e.get("step") or 0 for e in points]
    ea = [e["accuracy"] for e in points]
    lo = [e["accuracy"] - e["accuracy_ci95"][0] for e in points]
    hi = [e["accuracy_ci95"][1] - e["accuracy"] for e in points]
    if es:
        ax[1].errorbar(es, ea, yerr=[lo, hi], fmt="o-", capsize=3, label="validation accuracy (95% CI)")
    if baseline:
        ax[1].axhline(baseline["accuracy"], color="gray", linestyle="--", label=f"baseline {baseline['accuracy']:.3f}")
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("greedy accuracy")
    ax[1].set_title("validation")
    ax[1].set_ylim(0, 1.02)
    if es or baseline:
        ax[1].legend(loc="lower right")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
