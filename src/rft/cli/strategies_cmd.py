"""`rft strategies JOB.yaml`: the cost/quality table over inference strategies and training methods.

A thin wrapper over `rft.api.strategies` (rft.strategies.runner): parse, run, print the table (or the JSON with
--json); progress goes to stderr. An `--output` folder that is a file or already holds files is refused before
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

from rft.cli.output import err, out, print_json, table


def _ints(text: str, what: str) -> list[int]:
    from rft.errors import RftError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RftError(f"{what} takes comma-separated integers, got '{text[:60]}'") from None


def _f(x, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


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
        from rft.strategies.report import ms

        res = api.strategies(str(job), overrides or [], only=only, max_items=max_items, train_steps=train_steps,
                             train_rows=train_rows, latency_items=latency_items,
                             budgets=_ints(budgets, "--budgets"), ns=_ints(ns, "--n"),
                             prices=str(prices) if prices else None, output_dir=output,
                             log=lambda s: err.print(s, markup=False, highlight=False))
        if as_json:
            print_json(res)
            return
        t = table("strategy", "accuracy [95% CI]", "vs base [95% CI]", "train s", "tokens/req", "s/1k req",
                  "$/1k req", "p50 ms", "p95 ms", title=f"strategies for {job} ({res['n_items']} items)", fold=(0,))
        for r in res["rows"]:
            if r.get("status") != "ok":
                continue
            d, lo_hi = r.get("vs_base") or {}, r["accuracy_ci95"]
            name = r["label"] + (" (UPPER BOUND)" if r.get("upper_bound") else "")
            t.add_row(name, f"{_f(r['accuracy'], '.3f')} [{_f(lo_hi[0], '.3f')}, {_f(lo_hi[1], '.3f')}]",
                      f"{_f(d.get('mean'), '+.3f')} [{_f(d['ci95'][0], '+.3f')}, {_f(d['ci95'][1], '+.3f')}]",
                      _f((r.get("training") or {}).get("seconds"), ".0f"), _f(r["tokens_per_request"], ".1f"),
                      _f(r["seconds_per_1k"], ".1f"), _f(r["usd_per_1k"], ".4f"),
                      _f(ms(r["latency"]["p50_s"]), ".0f"), _f(ms(r["latency"]["p95_s"]), ".0f"))
        out.print(t)
        for r in res["rows"]:
            if r.get("status") != "ok":
                out.print(f"{r['label']}: {r['status']}: {r.get('reason')}", markup=False, highlight=False)
        rec = res.get("recommendation")
        out.print(f"recommended: {rec['reason']}" if rec else "recommended: none (no deployable row finished)",
                  markup=False, highlight=False)
        for k in ("markdown", "json", "plot"):
            if res["paths"].get(k):
                out.print(f"{k}: {res['paths'][k]}", markup=False, highlight=False)
        out.print(f"table {res['id']} (registry), wall time {res['wall_seconds']:.0f} s", markup=False, highlight=False)
