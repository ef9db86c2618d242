"""The strategy table's outputs: the Pareto plot (PNG) and the markdown report (the JSON is the table itself).

`pareto_plot(table, path)`: accuracy (with its 95% CI as an error bar) against inference cost in USD per 1,000
requests, one labelled point per row; trained rows are squares, inference-only rows circles, upper-bound rows
hollow with "(upper bound)" in the label; the Pareto front (`stats.pareto_front`, over the deployable rows) is a
dashed line, the recommendation is circled. When every cost is 0 (a price table of zeros), tokens per 1,000
requests go on the x axis instead, and the axis says so.
`table_markdown(table)`: the table, the recommendation, the skipped rows with their reasons, every run and eval
the table started, and the files.
"""

from __future__ import annotations

import math
from pathlib import Path


def _f(x, fmt=".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def ms(seconds):
    """Seconds as milliseconds; None (not measured) stays None."""
    return None if seconds is None else seconds * 1000


def _ci(ci, fmt=".3f") -> str:
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return ""
    return f"[{format(ci[0], fmt)}, {format(ci[1], fmt)}]"


def cost_axis(rows: list[dict]) -> tuple[str, str]:
    """(row key, axis label) of the x axis: USD per 1k requests, or tokens per 1k when every USD cost is 0."""
    usd = [r.get("usd_per_1k") for r in rows if r.get("status") == "ok"]
    if usd and all(u == 0 for u in usd):
        return "tokens_per_1k", "tokens generated per 1,000 requests (every price is 0)"
    return "usd_per_1k", "inference cost, USD per 1,000 requests (this machine)"


def pareto_plot(table: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rft.strategies.stats import pareto_front

    rows = [r for r in table["rows"] if r.get("status") == "ok"]
    key, xlabel = cost_axis(rows)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    rec = (table.get("recommendation") or {}).get("label")
    for r in rows:
        x, y = r[key], r["accuracy"]
        lo, hi = r["accuracy_ci95"]
        yerr = [[max(0.0, y - lo)], [max(0.0, hi - y)]] if not (math.isnan(lo) or math.isnan(hi)) else None
        marker = "s" if r["kind"] == "trained" else "o"
        face = "none" if r.get("upper_bound") else None
        color = "tab:orange" if r["kind"] == "trained" else "tab:blue"
        ax.errorbar([x], [y], yerr=yerr, fmt=marker, color=color, mfc=face if face else color, capsize=3, ms=7)
        name = r["label"] + (" (upper bound)" if r.get("upper_bound") else "")
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if r["label"] == rec:
            ax.scatter([x], [y], s=380, facecolors="none", edgecolors="green", linewidths=2, zorder=5)
    dep = [r for r in rows if not r.get("upper_bound")]
    front = sorted((dep[i] for i in pareto_front([(r[key], r["accuracy"]) for r in dep])), key=lambda r: r[key])
    if len(front) > 1:
        ax.plot([r[key] for r in front], [r["accuracy"] for r in front], "--", color="gray", lw=1,
                label="Pareto front (deployable)")
    ax.scatter([], [], marker="o", color="tab:blue", label="inference strategy (base model)")
    ax.scatter([], [], marker="s", color="tab:orange", label="fine-tuned model, greedy")
    if rec:
        ax.scatter([], [], s=120, facecolors="none", edgecolors="green", linewidths=2, label=f"recommended: {rec}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{table.get('job', '')}: accuracy vs inference cost ({table.get('n_items')} validation items)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


HEADER = ("| strategy | accuracy [95% CI] | vs base [95% CI] | train s | train tokens | tokens/req | "
          "s / 1k req | $ / 1k req | p50 ms | p95 ms |\n|---|---|---|---|---|---|---|---|---|---|\n")


def table_rows_markdown(table: dict) -> str:
    out = HEADER
    for r in table["rows"]:
        if r.get("status") != "ok":
            continue
        d = r.get("vs_base") or {}
        name = r["label"] + (" (upper bound)" if r.get("upper_bound") else "")
        tr = r.get("training") or {}
        out += (f"| {name} | {_f(r['accuracy'])} {_ci(r['accuracy_ci95'])} | "
                f"{_f(d.get('mean'), '+.3f')} {_ci(d.get('ci95'), '+.3f')} | {_f(tr.get('seconds'), '.0f')} | "
                f"{tr.get('tokens', '—') if tr else '—'} | {_f(r['tokens_per_request'], '.1f')} | "
                f"{_f(r['seconds_per_1k'], '.1f')} | {_f(r['usd_per_1k'], '.4f')} | "
                f"{_f(ms(r['latency']['p50_s']), '.0f')} | {_f(ms(r['latency']['p95_s']), '.0f')} |\n")
    return out


def table_markdown(table: dict) -> str:
    p = table["prices"]
    lines = [f"# Strategies for {table['job']}", "",
             f"Table `{table['id']}`: {table['n_items']} validation items of `{table['validation_file']}`, model "
             f"`{table['model']}`, grader `{table['grader']}`; wall time {table['wall_seconds']:.0f} s. Prices: "
             f"${p['per_million_generated_tokens']} per 1M generated tokens, ${p['per_machine_hour']} per machine hour.",
             "", table_rows_markdown(table)]
    rec = table.get("recommendation")
    lines.append(f"**Recommendation:** {rec['reason']}.\n\nRule: {rec['rule']}.\n" if rec
                 else "**Recommendation:** none (no deployable row finished).\n")
    if any(r.get("upper_bound") for r in table["rows"]):
        lines.append("Rows marked *(upper bound)* pick among samples with the grader, which reads the reference "
                     "answers: no deployment can do that; they show how much better selection could get.\n")
    skipped = [r for r in table["rows"] if r.get("status") != "ok"]
    if skipped:
        lines.append("## Not run\n")
        lines += [f"- {r['label']}: {r['status']}: {r.get('reason')}" for r in skipped]
        lines.append("")
    lines.append("## Runs and evaluations\n")
    for r in table["rows"]:
        bits = [f"eval `{r['eval_id']}` ({r.get('eval_report')})"] if r.get("eval_id") else []
        if r.get("job_id"):
            bits.insert(0, f"job `{r['job_id']}` ({r.get('run_dir')})")
        if r.get("model") and r["kind"] == "trained":
            bits.append(f"model `{r['model']}`")
        if bits:
            lines.append(f"- {r['label']}: " + ", ".join(bits))
    lines += ["", "## Files", ""] + [f"- {k}: {v}" for k, v in (table.get("paths") or {}).items()]
    lines += ["", "How each column is measured: accuracy is the grader's mean score with a 95% CI (Wilson for 0/1 "
              "scores); *vs base* is the paired difference to the base row over the same items with a paired "
              "bootstrap CI; tokens per request count every sample and phase; seconds per 1,000 requests are the "
              "batched engine's wall time; latency is measured one request at a time on "
              f"{(table.get('settings') or {}).get('latency_items')} items; $ = tokens x token price + seconds x machine price."]
    return "\n".join(lines) + "\n"
