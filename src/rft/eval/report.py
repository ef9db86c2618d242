"""Run reports: report.json (numbers), report.md (for people) and curves.png (reward and accuracy)."""

from __future__ import annotations

import json
from pathlib import Path


def format_ci(ev: dict | None, *, with_n: bool = True, missing: str = "n/a") -> str:
    """'0.930 [0.886, 0.958] (n=200)' for an eval summary."""
    if not ev:
        return missing
    lo, hi = ev["accuracy_ci95"]
    return f"{ev['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]" + (f" (n={ev['n']})" if with_n else "")


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
    if report.get("regressed_items") is not None:
        lines += [
            "## Per-item change against the baseline (validation set)",
            "",
            f"- improved: {len(report.get('improved_items', []))} items; regressed: {len(report['regressed_items'])} items",
        ]
        for it in report["regressed_items"][:20]:
            lines.append(f"  - regressed item {it['index']}: baseline {it['baseline']!r} -> final {it['final']!r}")
        lines.append("")
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
