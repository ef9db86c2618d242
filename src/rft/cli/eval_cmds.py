"""`rft eval` and `rft compare`: thin wrappers over `rft.eval.runner.run_eval` and `rft.eval.compare`.

`register(app)` adds both commands to the Typer app (rft.cli.main calls it). They parse, call the library,
print a table (or the JSON with --json) and say where the report files are. An `--output` folder that is a file
or already holds files is refused before anything runs (exit 2, nothing there changed).

How to run:
    rft eval MODEL --data val.jsonl --grader grader.json --n 4 --by topic
    rft compare BASE CANDIDATE --data val.jsonl --grader grader.json
    rft compare --a-report evals/A/report.json --b-report evals/B/report.json --by topic
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rft.cli.output import print_json, print_view


def _store_eval(report: dict) -> None:
    """Record an `rft eval` report in the registry (kind "eval"), linked to the checkpoint when the model is one."""
    from rft.registry import Registry

    model = str(report.get("model"))
    ckpt = None
    if model.startswith(("ckpt:", "alias:")):
        reg = Registry()
        ckpt = reg.alias(model)["checkpoint_id"] if model.startswith("alias:") else model.removeprefix("ckpt:")
    grader_sha = (report.get("grader") or {}).get("sha256")
    rid = Registry().add_eval_report("eval", {k: v for k, v in report.items() if k != "items"}, checkpoint_id=ckpt,
                                     model_ref=model, data_sha256=report.get("dataset_sha256"), grader_sha256=grader_sha,
                                     path=(report.get("paths") or {}).get("json"))
    report["registry_id"] = rid


def _store_compare(res: dict, sides: dict) -> None:
    from rft.registry import Registry

    summary = {k: v for k, v in res.items() if k not in ("improved", "regressed", "items")}
    res["registry_id"] = Registry().add_eval_report("compare", summary, model_ref=f"{sides.get('a')} vs {sides.get('b')}",
                                                    data_sha256=(res.get("b") or {}).get("dataset_sha256"))


def register(app: typer.Typer) -> None:
    """Add the `eval` and `compare` commands to `app`."""

    @app.command("eval")
    def eval_cmd(
        model: str = typer.Argument(..., help="Model reference: smollm2-135m-instruct, a model directory, or a checkpoint."),
        data: str = typer.Option(..., "--data", help="JSONL file or builtin:<name>."),
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
    ):
        """Evaluate a model: accuracy with 95% CI, pass@k, per-slice results, grader error rates; writes report.json/.md."""
        from rft.eval.runner import run_eval
        from rft.userinput import check_output_dir

        if output is not None:  # before the model loads: a report folder never overwrites or mixes with files
            check_output_dir(output, "report folder")
        rep = run_eval(model, data, str(grader), n=n, by=by or [], output_dir=output, max_new_tokens=max_new_tokens,
                       limit=limit, extract=extract, split=split, temperature=temperature, seed=seed,
                       on_report=_store_eval, allow_private_hosts=allow_private_host or ())
        if as_json:
            print_json({k: v for k, v in rep.items() if k != "items"})
            return
        from rft import views

        print_view(views.eval_table(rep, f"eval {model} on {data}"), fold=("value",))

    @app.command("compare")
    def compare_cmd(
        a: Optional[str] = typer.Argument(None, help="Model A (the baseline): any model reference."),
        b: Optional[str] = typer.Argument(None, help="Model B (the candidate): any model reference."),
        data: Optional[str] = typer.Option(None, "--data", help="JSONL file or builtin:<name> (to evaluate models)."),
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
        import secrets
        import time

        from rft.errors import RftError
        from rft.eval.compare import compare_models
        from rft.eval.runner import load_report
        from rft.home import rft_home

        from rft.userinput import check_output_dir

        if resamples < 1:
            raise RftError(f"--resamples must be >= 1, got {resamples}")
        if output is not None:
            check_output_dir(output, "comparison folder")
        ra = load_report(a_report) if a_report else None
        rb = load_report(b_report) if b_report else None
        # the positional models fill, in order, the sides that have no saved report
        models = [x for x in (a, b) if x]
        need = [side for side, r in (("a", ra), ("b", rb)) if r is None]
        if len(models) != len(need):
            raise RftError(f"got {len(models)} model(s) for {len(need)} side(s) without a report",
                           hint="give two models (A B), or --a-report / --b-report for a side already evaluated")
        sides = dict(zip(need, models))
        cid = "compare-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        out_dir = output or rft_home() / "compares" / cid
        res = compare_models(sides.get("a"), sides.get("b"), data, str(grader) if grader else None, a_report=ra, b_report=rb, by=by or [],
                             seed=seed, resamples=resamples, output_dir=out_dir,
                             eval_kwargs={"max_new_tokens": max_new_tokens, "limit": limit, "extract": extract,
                                          "split": split, "allow_private_hosts": allow_private_host or ()})
        _store_compare(res, sides)
        if as_json:
            print_json(res)
            return
        from rft import views

        print_view(views.compare_table(res), fold=("value",))
