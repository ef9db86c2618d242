"""`rft eval` and `rft compare`: thin wrappers over `rft.api.evaluate` and `rft.api.compare`.

`register(app)` adds both commands to the Typer app (rft.cli.main calls it). They parse, call the library (which
also records the report in the registry), print a table (or the JSON with --json) and say where the report files
are. An `--output` folder that is a file or already holds files is refused before anything runs (exit 2, nothing
there changed).

How to run:
    rft eval MODEL --data val.jsonl --grader grader.json --n 4 --by topic
    rft compare BASE CANDIDATE --data val.jsonl --grader grader.json
    rft compare --a-report evals/A/report.json --b-report evals/B/report.json --by topic
    rft eval --replay EVAL_ID --grader fixed.json      # re-grade a stored report's items (rft.review.replay)
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rft.cli.output import print_json, print_view
from rft.errors import RftError


def register(app: typer.Typer) -> None:
    """Add the `eval` and `compare` commands to `app`."""

    @app.command("eval")
    def eval_cmd(
        model: Optional[str] = typer.Argument(None, help="Model reference: smollm2-135m-instruct, a model directory, or a checkpoint (not with --replay)."),
        data: Optional[str] = typer.Option(None, "--data", help="JSONL or Parquet file, hf:<name>[:<config>][@<split>] (local cache) or builtin:<name> (required unless --replay)."),
        grader: Path = typer.Option(..., "--grader", help="Grader JSON (OpenAI grader object)."),
        n: int = typer.Option(0, "--n", help="Sampled completions per item for pass@k, k = 1, 2, 4, ... n (0: greedy only)."),
        by: Optional[List[str]] = typer.Option(None, "--by", help="Report per-slice results by this dataset field (repeatable)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Report folder (default $RFT_HOME/evals/<eval id>)."),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
        limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate only the first N items."),
        extract: Optional[str] = typer.Option(None, "--extract", help="Regex whose last match is {{sample.extracted}}."),
        split: str = typer.Option("validation", "--split", help="Split for builtin datasets."),
        temperature: float = typer.Option(1.0, "--temperature", help="Temperature of the pass@k samples."),
        seed: int = typer.Option(0, "--seed", help="Seed of the pass@k samples."),
        as_json: bool = typer.Option(False, "--json", help="Print the report (without per-item records) as JSON."),
        allow_private_host: Optional[List[str]] = typer.Option(
            None, "--allow-private-host", help="A host, IP or CIDR block endpoint graders may reach although it is "
            "loopback, link-local or private (repeatable)."),
        strategy: Optional[str] = typer.Option(
            None, "--strategy", help="Inference strategy for the headline answers instead of greedy: "
            "best_of_n:n=4,selector=majority (selector=grader reads the reference: an upper bound) or "
            "reasoning:budget=64 (think, then answer)."),
        replay: Optional[str] = typer.Option(
            None, "--replay", help="Re-grade a stored evaluation (its eval id, registry id or report.json) with "
            "--grader instead of evaluating a model: pass/fail flips and paired accuracy; nothing is generated."),
    ):
        """Evaluate a model: accuracy with 95% CI, pass@k, per-slice results, grader error rates; writes report.json/.md."""
        from rft import api

        if replay is not None:  # issue 18: re-grade a stored report with this grader (rft.review.replay)
            from rft.cli.replay_cmd import print_replay

            if model is not None or data is not None:
                raise RftError("--replay re-grades a stored evaluation: give no MODEL or --data with it")
            res = api.replay_eval(replay, str(grader))
            return print_json({k: v for k, v in res.items() if k != "items"}) if as_json else print_replay(res)
        if model is None or data is None:
            raise RftError("rft eval needs a MODEL and --data (or --replay EVAL_ID)", hint="see `rft eval -h`")

        rep = api.evaluate(model, data, str(grader), n=n, by=by or [], output_dir=output, max_new_tokens=max_new_tokens,
                           limit=limit, extract=extract, split=split, temperature=temperature, seed=seed,
                           record=True, allow_private_hosts=allow_private_host or (), strategy=strategy)
        if as_json:
            print_json({k: v for k, v in rep.items() if k != "items"})
            return
        from rft import views

        title = f"eval {model} on {data}"
        if rep.get("strategy"):  # the table's accuracy row is the strategy's, not greedy's
            title += f" with strategy {rep['strategy']}" + (
                " (UPPER BOUND: the selector read the reference answers)" if rep.get("upper_bound") else "")
        print_view(views.eval_table(rep, title), fold=("value",))

    @app.command("compare")
    def compare_cmd(
        a: Optional[str] = typer.Argument(None, help="Model A (the baseline): any model reference."),
        b: Optional[str] = typer.Argument(None, help="Model B (the candidate): any model reference."),
        data: Optional[str] = typer.Option(None, "--data", help="JSONL or Parquet file, hf:... or builtin:<name> (to evaluate models)."),
        grader: Optional[Path] = typer.Option(None, "--grader", help="Grader JSON (to evaluate models)."),
        a_report: Optional[Path] = typer.Option(None, "--a-report", help="A's saved eval report.json instead of model A."),
        b_report: Optional[Path] = typer.Option(None, "--b-report", help="B's saved eval report.json instead of model B."),
        by: Optional[List[str]] = typer.Option(None, "--by", help="Per-slice differences by this dataset field (repeatable)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling."),
        resamples: int = typer.Option(10_000, "--resamples", help="Bootstrap resamples."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder (default $RFT_HOME/compares/<id>)."),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
        limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate only the first N items."),
        extract: Optional[str] = typer.Option(None, "--extract", help="Regex whose last match is {{sample.extracted}}."),
        split: str = typer.Option("validation", "--split", help="Split for builtin datasets."),
        as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
        allow_private_host: Optional[List[str]] = typer.Option(
            None, "--allow-private-host", help="A host, IP or CIDR block endpoint graders may reach although it is "
            "loopback, link-local or private (repeatable)."),
    ):
        """Paired comparison B - A: mean difference with bootstrap CI, McNemar's test, regressed/improved items."""
        from rft import api

        res = api.compare(a, b, data, str(grader) if grader else None, a_report=a_report, b_report=b_report, by=by or [],
                          seed=seed, resamples=resamples, output_dir=output, max_new_tokens=max_new_tokens,
                          limit=limit, extract=extract, split=split, allow_private_hosts=allow_private_host or (),
                          record=True)
        if as_json:
            print_json(res)
            return
        from rft import views

        print_view(views.compare_table(res), fold=("value",))
