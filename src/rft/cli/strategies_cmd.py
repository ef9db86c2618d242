"""`rft strategies JOB.yaml`: the cost/quality table over inference strategies and training methods.

A thin wrapper over `rft.api.strategies` (rft.strategies.runner): parse, run, print the table (or the JSON with
--json); progress goes to stderr. The terminal table is compact and fits the console (`strategy_table`):
accuracy in percent with a precision set by the number of items, cost to two significant digits, columns merged
or dropped on narrow consoles (named under the table); table.md and --json keep every column at full precision. An `--output` folder that is a file or already holds files is refused before
anything runs.

How to run:
    rft strategies examples/quickstart.yaml --max-items 100 --train-steps 20
    rft strategies examples/quickstart.yaml --only base,best_of_n,reasoning --prices prices.yaml --json
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

from rft.cli.output import err, out, print_json


def _ints(text: str, what: str) -> list[int]:
    from rft.errors import RftError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RftError(f"{what} takes comma-separated integers, got '{text[:60]}'") from None


# ------------------------------------------------------------------------------------------- the terminal table
# The terminal shows the table compactly; table.md and --json keep every column at full precision.
# Accuracy and its difference to base are shown in percent (points): one item moves a mean by 100/n points and a
# 95% CI is about +-100/sqrt(n) points wide, so below 1,000 items a decimal is noise; above, one decimal is shown.
# Columns: key -> (header, right-justified). Which ones are shown depends on the console width (LAYOUTS).
COLUMNS = {
    "strategy": ("strategy", False), "acc": ("acc %\n[95% CI]", True), "vs_base": ("vs base\npts [CI]", True),
    "train_s": ("train\ns", True), "tok_req": ("tokens\n/req", True), "s_1k": ("s per\n1k req", True),
    "usd_1k": ("$ per\n1k req", True), "p50": ("p50\nms", True), "p95": ("p95\nms", True),
    "lat": ("p50/p95\nms", True),
}
# Widest first; the first layout whose natural width fits the console is used. Merged or dropped columns are
# named under the table (`left_out`).
LAYOUTS = [
    ("strategy", "acc", "vs_base", "train_s", "tok_req", "s_1k", "usd_1k", "p50", "p95"),
    ("strategy", "acc", "vs_base", "train_s", "tok_req", "usd_1k", "lat"),
    ("strategy", "acc", "vs_base", "train_s", "tok_req", "usd_1k", "p50"),
    ("strategy", "acc", "vs_base", "train_s", "usd_1k", "p50"),
    ("strategy", "acc", "vs_base", "usd_1k"),
]
UPPER_BOUND_MARK = "*"
UPPER_BOUND_NOTE = "* upper bound, not deployable: the grader selector reads the reference answers."


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _pct_decimals(n) -> int:
    return 1 if isinstance(n, int) and n >= 1000 else 0


def _pct(x, d: int, sign: bool = False) -> str:
    if not _num(x):
        return "-"
    v = round(100.0 * x, d)
    v = 0.0 if v == 0 else v  # no "-0"
    return format(v, f"{'+' if sign else ''}.{d}f")


def _sig(x, digits: int = 2) -> str:
    """`x` in fixed point with `digits` significant digits (never scientific notation): 0.000123 -> 0.00012."""
    if not _num(x):
        return "-"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return format(x, f".{decimals}f")


def _count(x) -> str:
    """A measured amount (tokens, seconds): whole numbers from 10 up, one decimal below."""
    if not _num(x):
        return "-"
    return format(x, ".0f" if abs(x) >= 10 else ".1f")


def _ms(seconds) -> str:
    return format(seconds * 1000, ".0f") if _num(seconds) else "-"


def strategy_cells(res: dict) -> list[dict[str, str]]:
    """Per finished row, the text of every column of COLUMNS (see the comment above COLUMNS for the precision)."""
    d = _pct_decimals(res.get("n_items"))
    cells = []
    for r in res["rows"]:
        if r.get("status") != "ok":
            continue
        ci = r.get("accuracy_ci95") or [None, None]
        vb = r.get("vs_base") or {}
        vci = vb.get("ci95") or [None, None]
        lat = r.get("latency") or {}
        train = r.get("training") or {}
        p50, p95 = _ms(lat.get("p50_s")), _ms(lat.get("p95_s"))
        cells.append({
            "strategy": r["label"] + (UPPER_BOUND_MARK if r.get("upper_bound") else ""),
            "acc": f"{_pct(r.get('accuracy'), d)} [{_pct(ci[0], d)}, {_pct(ci[1], d)}]",
            "vs_base": "(base)" if vb.get("method") == "the base itself" else
                       f"{_pct(vb.get('mean'), d, True)} [{_pct(vci[0], d)}, {_pct(vci[1], d)}]",
            "train_s": _count(train.get("seconds")) if train else "-",
            "tok_req": _count(r.get("tokens_per_request")), "s_1k": _count(r.get("seconds_per_1k")),
            "usd_1k": _sig(r.get("usd_per_1k")), "p50": p50, "p95": p95, "lat": f"{p50}/{p95}",
        })
    return cells


def _build(layout, cells, title, rec_label, labels):
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, show_edge=False)
    for key in layout:
        header, right = COLUMNS[key]
        if key == "strategy":  # the one text column: it may fold onto a second line as a last resort
            t.add_column(header, overflow="fold", min_width=8)
        else:  # a number is never wrapped or cut (the layout is chosen so that it fits)
            t.add_column(header, justify="right" if right else "left", no_wrap=True)
    for c, label in zip(cells, labels):
        t.add_row(*(c[k] for k in layout), style="bold" if label == rec_label else None)
    return t


def strategy_table(res: dict, width: int, *, title: str | None = None):
    """(rich Table, the columns left out) for a console `width` characters wide: the widest layout of LAYOUTS
    whose natural width fits, else the narrowest; columns empty in every row are left out of every layout (and
    not reported). The recommended row is bold; upper-bound rows end in `*`."""
    from io import StringIO

    from rich.console import Console

    cells = strategy_cells(res)
    labels = [r["label"] for r in res["rows"] if r.get("status") == "ok"]
    rec_label = (res.get("recommendation") or {}).get("label")
    # a column with nothing measured in any row (train s of a table without trained rows) takes no room
    empty = {k for k in COLUMNS if k != "strategy" and cells and all(c[k] in ("-", "-/-") for c in cells)}
    layouts = [tuple(k for k in layout if k not in empty) for layout in LAYOUTS]
    chosen = layouts[-1]
    for layout in layouts:
        probe = Console(width=10_000, file=StringIO(), color_system=None)
        probe.print(_build(layout, cells, None, rec_label, labels))
        natural = max((len(line) for line in probe.file.getvalue().splitlines()), default=0)
        if natural <= width:
            chosen = layout
            break
    left_out = [" ".join(COLUMNS[k][0].split()) for k in LAYOUTS[0]
                if k not in chosen and k not in empty and not (k in ("p50", "p95") and "lat" in chosen)]
    return _build(chosen, cells, title, rec_label, labels), left_out


def print_strategy_table(res: dict, *, title: str | None = None, console=None) -> None:
    """The table on `console` (default stdout) at its width, the upper-bound footnote, the columns left out."""
    console = console or out
    t, left_out = strategy_table(res, console.width, title=title)
    console.print(t)
    if any(r.get("upper_bound") and r.get("status") == "ok" for r in res["rows"]):
        console.print(UPPER_BOUND_NOTE, markup=False, highlight=False)
    if left_out:
        console.print(f"not shown at this width: {', '.join(left_out)} (see table.md or --json)", markup=False,
                      highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `strategies` command to `app`."""

    @app.command("strategies")
    def strategies_cmd(
        job: Path = typer.Argument(..., help="The reinforcement job (YAML/JSON); its validation_file is the test set."),
        overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides of the job, as in rft train."),
        only: Optional[str] = typer.Option(None, "--only", help="Rows to run, comma-separated: base, reasoning, "
                                           "best_of_n, sft, dpo, grpo (default: all; base always runs)."),
        max_items: Optional[int] = typer.Option(None, "--max-items", help="Budget: evaluate on the first N "
                                                "validation items (default: all)."),
        train_steps: Optional[int] = typer.Option(None, "--train-steps", help="Budget: at most N optimizer steps "
                                                  "per trained row (default: the job's own)."),
        train_rows: int = typer.Option(64, "--train-rows", help="Budget: training rows used to build the SFT file "
                                       "and the DPO pairs."),
        latency_items: int = typer.Option(16, "--latency-items", help="Requests sent one at a time per row for "
                                          "the p50/p95 latency."),
        budgets: str = typer.Option("32,128", "--budgets", help="Thinking budgets (tokens) of the reasoning rows."),
        ns: str = typer.Option("4,8", "--n", help="Samples per request of the best-of-N rows."),
        prices: Optional[Path] = typer.Option(None, "--prices", help="Price table YAML: per_million_generated_tokens, "
                                              "per_machine_hour (USD; defaults 0 and 0.10)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for table.json, table.md, "
                                              "pareto.png (default $RFT_HOME/strategies/<id>)."),
        as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
    ):
        """Measure accuracy (95% CI) against inference cost for the base model, reasoning budgets, best-of-N,
        SFT, DPO and GRPO on the job's validation set; draw the Pareto plot and recommend one."""
        from rft import api

        res = api.strategies(str(job), overrides or [], only=only, max_items=max_items, train_steps=train_steps,
                             train_rows=train_rows, latency_items=latency_items,
                             budgets=_ints(budgets, "--budgets"), ns=_ints(ns, "--n"),
                             prices=str(prices) if prices else None, output_dir=output,
                             log=lambda s: err.print(s, markup=False, highlight=False, soft_wrap=True))
        if as_json:
            print_json(res)
            return
        print_strategy_table(res, title=f"strategies for {job} ({res['n_items']} items)")
        for r in res["rows"]:
            if r.get("status") != "ok":
                out.print(f"{r['label']}: {r['status']}: {r.get('reason')}", markup=False, highlight=False)
        rec = res.get("recommendation")
        out.print(f"recommended: {rec['reason']}" if rec else "recommended: none (no deployable row finished)",
                  markup=False, highlight=False)
        for note in (rec or {}).get("excluded") or []:
            out.print(f"collapsed: {note}", markup=False, highlight=False)
        for k in ("markdown", "json", "plot"):
            if res["paths"].get(k):
                out.print(f"{k}: {res['paths'][k]}", markup=False, highlight=False)
        out.print(f"table {res['id']} (registry), wall time {res['wall_seconds']:.0f} s", markup=False, highlight=False)
