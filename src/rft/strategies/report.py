"""The strategy table's outputs: the Pareto plot (PNG) and the markdown report (the JSON is the table itself).

`pareto_plot(table, path)`: accuracy (with its 95% CI as an error bar) against inference cost in USD per 1,000
requests, one labelled point per row; trained rows are squares, inference-only rows circles, upper-bound rows
hollow with "(upper bound)" in the label; the Pareto front (`stats.pareto_front`, over the deployable rows) is a
dashed line, the recommendation is circled in green and its label is bold. Labels are placed by `place_labels`
(a greedy pass in display space: by the point's y, each label takes the smallest vertical shift at which its box
meets no earlier label and no marker); a moved label has a thin leader line to its point. `draw_pareto(table)`
returns the figure and its labels (tests measure their boxes with the figure's renderer). When every cost is 0 (a price table of zeros), tokens per 1,000
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
    from rft.strategies.stats import cost_key

    if cost_key([r for r in rows if r.get("status") == "ok"]) == "tokens_per_1k":
        return "tokens_per_1k", "tokens generated per 1,000 requests (every price is 0)"
    return "usd_per_1k", "inference cost, USD per 1,000 requests (this machine)"


def _overlaps(a, b) -> bool:
    """Two display-space boxes (x0, y0, x1, y1) share area (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: list[tuple[float, float, float, float]], ys: list[float], *,
                 obstacles: list[tuple[float, float, float, float]] = (), bounds=None, step: float = 2.0,
                 max_shift: float = 400.0, gap: float = 1.0) -> list[float]:
    """Vertical shifts (display units, e.g. pixels) that keep label boxes from overlapping: a greedy pass.

    `boxes[i]` is label i's box where it would sit unmoved, `ys[i]` the y of its point. Labels are placed in order
    of their point's y (lowest first; ties by index); each takes the smallest shift in 0, +step, -step, +2*step,
    ... (up to `max_shift`) at which its box, grown by `gap`, meets no label placed before it and no obstacle
    (the markers) and stays inside `bounds` (x0, y0, x1, y1; the axes) when that is possible at all, else the
    smallest shift that meets no other box. Simplified: labels move only vertically, and a label placed early
    never moves again (good enough for the tens of rows a strategy table has)."""
    shifts = [0.0] * len(boxes)
    placed: list[tuple[float, float, float, float]] = []
    k_max = int(max_shift / step)
    order = sorted(range(len(boxes)), key=lambda i: (ys[i], i))
    cands = [0.0] + [s * k * step for k in range(1, k_max + 1) for s in (1, -1)]
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        free = None
        for dy in cands:
            b = (x0 - gap, y0 + dy - gap, x1 + gap, y1 + dy + gap)
            if any(_overlaps(b, o) for o in placed) or any(_overlaps(b, o) for o in obstacles):
                continue
            if free is None:
                free = dy
            if bounds is None or (b[1] >= bounds[1] and b[3] <= bounds[3]):
                free = dy
                break
        shifts[i] = free if free is not None else 0.0
        placed.append((x0, y0 + shifts[i], x1, y1 + shifts[i]))
    return shifts


def draw_pareto(table: dict):
    """The Pareto figure (see the module docstring) and its label annotations, in row order: (fig, labels).
    Labels are placed by `place_labels` after the layout is final; a moved label gets a thin leader line to its
    point; the recommended point is circled in green and its label is bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

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
        if r["label"] == rec:
            ax.scatter([x], [y], s=380, facecolors="none", edgecolors="green", linewidths=2, zorder=5)
    dep = [r for r in rows if not r.get("upper_bound")]
    front = sorted((dep[i] for i in pareto_front([(r[key], r["accuracy"]) for r in dep])), key=lambda r: r[key])
    if len(front) > 1:
        ax.plot([r[key] for r in front], [r["accuracy"] for r in front], "--", color="gray", lw=1,
                label="Pareto front (deployable)")
    if any(r["kind"] != "trained" and not r.get("upper_bound") for r in rows):
        ax.scatter([], [], marker="o", color="tab:blue", label="inference strategy (base model)")
    if any(r.get("upper_bound") for r in rows):
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="tab:blue",
                   label="upper bound (grader selector; not deployable)")
    if any(r["kind"] == "trained" for r in rows):
        ax.scatter([], [], marker="s", color="tab:orange", label="fine-tuned model, greedy")
    if rec:
        ax.scatter([], [], s=120, facecolors="none", edgecolors="green", linewidths=2, label=f"recommended: {rec}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_ylim(-0.02, 1.02)
    xs = [r[key] for r in rows if not math.isnan(r[key])]
    if xs:  # room on the right for the labels of the costliest points
        lo_x, hi_x = min(xs), max(xs)
        span = (hi_x - lo_x) or max(abs(hi_x), 1e-9)
        ax.set_xlim(lo_x - 0.08 * span, hi_x + 0.35 * span)
    ax.set_title(f"{table.get('job', '')}: accuracy vs inference cost ({table.get('n_items')} validation items)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()

    # Labels go on last, once the layout (and so the display transform) is final.
    names = [r["label"] + (" (upper bound)" if r.get("upper_bound") else "") for r in rows]
    dx = {r["label"]: (12 if r["label"] == rec else 6) for r in rows}  # clear of the recommendation's ring
    anns = [ax.annotate(n, (r[key], r["accuracy"]), textcoords="offset points", xytext=(dx[r["label"]], 4),
                        fontsize=8, fontweight="bold" if r["label"] == rec else "normal", va="bottom")
            for n, r in zip(names, rows)]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axb = ax.get_window_extent(renderer)
    for a in anns:  # a label that would leave the axes on the right goes on the left of its point
        if Text.get_window_extent(a, renderer).x1 > axb.x1:
            a.set_position((-a.xyann[0], 4))
            a.set_horizontalalignment("right")
    boxes = [tuple(Text.get_window_extent(a, renderer).extents) for a in anns]
    pts = [ax.transData.transform((r[key], r["accuracy"])) for r in rows]
    px_per_pt = fig.dpi / 72.0
    obstacles = []
    for r, (px, py) in zip(rows, pts):  # the markers (ms=7 points) and the recommendation's ring (s=380 points^2)
        half = (10.5 if r["label"] == rec else 5.0) * px_per_pt
        obstacles.append((px - half, py - half, px + half, py + half))
    shifts = place_labels(boxes, [p[1] for p in pts], obstacles=obstacles, bounds=tuple(axb.extents))
    final = []
    for a, r, dy in zip(anns, rows, shifts):
        ox, oy = a.xyann
        oy += dy / px_per_pt  # display pixels -> offset points
        kw = dict(textcoords="offset points", xytext=(ox, oy), fontsize=8, fontweight=a.get_fontweight(),
                  va="bottom", ha=a.get_horizontalalignment())
        if abs(dy) > 1.0:  # moved: a thin leader line back to the point
            kw["arrowprops"] = dict(arrowstyle="-", color="0.45", lw=0.6, shrinkA=0, shrinkB=4)
        a.remove()
        final.append(ax.annotate(a.get_text(), (r[key], r["accuracy"]), **kw))
    ax.legend(fontsize=8, loc="best")
    return fig, final


def pareto_plot(table: dict, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig, _ = draw_pareto(table)
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
    for note in (rec or {}).get("excluded") or []:
        lines.append(f"**Collapsed:** {note}.\n")
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
