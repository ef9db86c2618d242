"""`rft batch ...`: batch inference jobs in the OpenAI Batch API format. Thin: parse, call `rft.batch`, print.

Exit codes of `run`, `resume` and `redrive`:
  0  completed: every request succeeded;
  4  completed_with_errors: the batch finished, some requests are in the error file (`OUT.errors.jsonl`).
     Distinct from 0 so a script never takes a partial result for a whole one (`set -e` stops there), and
     from 1 so it can still go on with the partial results on purpose: `rft batch run ... || [ $? -eq 4 ]`;
  1  ended otherwise: failed (every request failed), cancelled, expired, or stopped early and resumable;
  2  a user mistake: a bad file, path, option or batch id (an invalid input file lists every problem with its
     line and field); nothing was run and nothing already there was changed.
`show`, `list` and `cancel` exit 0 whenever they could answer; the status is in what they print.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from rft.cli.output import err, out, print_json, table

batch_app = typer.Typer(no_args_is_help=True, help=(
    "Batch inference on OpenAI Batch API JSONL files, on a local model or a remote OpenAI-compatible endpoint."))

EXIT_COMPLETED_WITH_ERRORS = 4

def _progress_cb(disabled: bool):
    """A rich progress bar (on stderr): done / total, failed, tokens per second, elapsed, ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if disabled:
        return None, lambda: None
    prog = Progress(TextColumn("[bold]batch"), BarColumn(bar_width=24), MofNCompleteColumn(),
                    TextColumn("failed {task.fields[failed]}"), TextColumn("{task.fields[tps]} tok/s"),
                    TextColumn("${task.fields[cost]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=err, transient=False)
    st = {"task": None, "t0": time.monotonic(), "tok0": None}

    def cb(p: dict) -> None:
        if st["task"] is None:
            prog.start()
            st["task"] = prog.add_task("batch", total=p["total"], completed=p["completed"] + p["failed"],
                                       failed=p["failed"], tps="-", cost=f"{p['cost_usd']:.4f}")
            st["tok0"] = p["completion_tokens"]
            return
        dt = time.monotonic() - st["t0"]
        tps = (p["completion_tokens"] - st["tok0"]) / dt if dt > 0 else 0.0
        prog.update(st["task"], completed=p["completed"] + p["failed"], failed=p["failed"], tps=f"{tps:.1f}",
                    cost=f"{p['cost_usd']:.4f}")

    def stop() -> None:
        if st["task"] is not None:
            prog.stop()

    return cb, stop


def _summary(s: dict) -> None:
    t = table("", "value", title=escape(f"batch {s['id']}: {s['status']}" + (f" ({s['stop_reason']})" if s.get("stop_reason") else "")),
              fold=("value",))
    rc = s["request_counts"]
    t.add_row("requests", f"{rc['total']} total, {rc['completed']} completed, {rc['failed']} failed"
              + (f", {s['pending']} pending" if s.get("pending") else ""))
    t.add_row("model", s["model"] + (f" ({s['remote_model'] or s.get('body_model')})" if s["executor"] == "remote" else ""))
    if (s.get("config") or {}).get("strategy"):
        t.add_row("strategy", escape(f"{s['config']['strategy']} (lines without their own \"rft\" object; "
                                     "completion tokens count every sample and phase)"))
    u = s["usage"]
    t.add_row("tokens", f"{u['prompt_tokens']} prompt + {u['completion_tokens']} completion")
    t.add_row("wall time", f"{s['wall_seconds']:.1f} s, {s['throughput']['completion_tokens_per_second']:.1f} "
              "completion tokens/s")
    c = s["cost"]
    t.add_row("estimated cost", f"${c['estimate_usd']:.4f} ({c['basis'].replace('_', ' ')})"
              + (f", limit ${c['max_cost_usd']:.4f}" if c.get("max_cost_usd") else ""))
    t.add_row("output", s["output_file"])
    t.add_row("errors (dead letters)", s["error_file"])
    if s.get("stop_reason") and s["status"] == "in_progress":
        t.add_row("next", f"rft batch resume {s['id']}")
    elif rc["failed"] and s["status"] in ("completed", "completed_with_errors", "failed"):
        t.add_row("next", f"rft batch redrive {s['id']}  (re-runs the failed requests)")
    out.print(t)


def _finish(state: dict, as_json: bool) -> None:
    from rft.batch import show_batch

    view = show_batch(state["id"])
    if as_json:
        print_json(view)
    else:
        _summary(view)
    if view["status"] == "completed_with_errors":
        rc = view["request_counts"]
        err.print(f"batch {view['id']}: completed with errors: {rc['failed']} of {rc['total']} request(s) failed "
                  f"(see {view['error_file']}); exit code {EXIT_COMPLETED_WITH_ERRORS}", markup=False, highlight=False,
                  soft_wrap=True)
        raise typer.Exit(EXIT_COMPLETED_WITH_ERRORS)
    if view["status"] != "completed":
        raise typer.Exit(1)


def _run(fn, *args, as_json: bool, quiet: bool, **kw) -> None:
    cb, stop = _progress_cb(disabled=quiet or not err.is_terminal)
    log = (lambda s: None) if quiet else (lambda s: err.print(f"[dim]{s}[/dim]"))
    try:
        state = fn(*args, progress=cb, log=log, **kw)
    finally:
        stop()
    _finish(state, as_json)


def _check_strategy_option(text: str) -> None:
    """`--strategy` parsed as `rft eval --strategy` parses it (same messages, naming --strategy), plus the one
    thing a batch cannot do: a selector that reads reference answers."""
    from rft.errors import RftError
    from rft.eval.inference import parse_strategy

    spec = parse_strategy(text, param="--strategy")
    if spec.uses_reference:
        raise RftError(f"--strategy: selector '{spec.selector}' grades the samples against reference answers, "
                       "which batch requests do not have", hint="use selector=majority")


@batch_app.command("run")
def run_cmd(
    input: Path = typer.Argument(..., help="Input JSONL: {custom_id, method: POST, url: /v1/chat/completions, body}."),
    model: str = typer.Option(..., "--model", "-m", help=(
        "A model reference (smollm2-135m-instruct, a model directory, ckpt:<id>, alias:<name>) or the base URL "
        "of an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")),
    remote_model: Optional[str] = typer.Option(None, "--remote-model", help="Model name sent to a remote endpoint (default: body.model)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output JSONL (default in the batch folder); failures go to OUT.errors.jsonl."),
    config: Optional[Path] = typer.Option(None, "--config", help="Batch config YAML/JSON: retry policy, prices, concurrency."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Requests in flight (remote). Default 8."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Requests per engine call (local). Default 64."),
    max_attempts: Optional[int] = typer.Option(None, "--max-attempts", help="Attempts per request. Default 5."),
    request_deadline: Optional[float] = typer.Option(None, "--request-deadline", help="Seconds per request, all attempts. Default 600."),
    attempt_timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per HTTP attempt. Default 120."),
    breaker: Optional[int] = typer.Option(None, "--circuit-breaker", help="Stop after this many consecutive failures (0: never). Default 20."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Stop cleanly (resumable) once the estimated cost reaches this, in USD."),
    price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="USD per hour of machine time (local models). Default 0.10."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Env var with the remote API key. Default OPENAI_API_KEY."),
    completion_window: str = typer.Option("24h", "--completion-window", help="Unfinished requests expire after this."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help=(
        "Inference strategy for every request whose body has no \"rft\" object of its own (local models "
        "only; overrides the config's strategy): best_of_n:n=4,selector=majority (n samples, the most common "
        "answer, compared whitespace-stripped, wins; usage counts every sample) or reasoning:budget=64 (think "
        "within 64 tokens, then answer). selector=grader is refused: batch requests have no reference answers.")),
    as_json: bool = typer.Option(False, "--json", help="Print the final batch object as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or log lines."),
):
    """Validate INPUT, then run every request; results are appended durably as they finish.

    Exit code: 0 every request succeeded; 4 completed with errors (some requests are in OUT.errors.jsonl);
    1 failed, cancelled, expired or stopped (resumable); 2 a bad file, path or option (nothing was run).
    """
    from rft.batch import create_batch, load_config, run_batch

    if strategy is not None:
        _check_strategy_option(strategy)
    cfg = load_config(config, {
        "concurrency": concurrency, "batch_size": batch_size, "max_cost": max_cost, "api_key_env": api_key_env,
        "retry.max_attempts": max_attempts, "retry.request_deadline_s": request_deadline,
        "retry.attempt_timeout_s": attempt_timeout, "retry.circuit_breaker_threshold": breaker,
        "prices.local_per_hour": price_per_hour, "strategy": strategy,
    })
    state = create_batch(input, model=model, remote_model=remote_model, output=output, config=cfg,
                         completion_window=completion_window)
    if not quiet:
        err.print(f"batch [bold]{state['id']}[/bold]: {state['request_counts']['total']} requests validated")
    _run(run_batch, state["id"], as_json=as_json, quiet=quiet)


@batch_app.command("resume")
def resume_cmd(
    batch: str = typer.Argument(..., help="Batch id (a unique prefix is enough)."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="New cost limit in USD (0: no limit)."),
    as_json: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Continue a batch that stopped (killed, circuit breaker, cost limit): runs only what has no result yet."""
    from rft.batch import resume_batch

    kw = {} if max_cost is None else {"max_cost": max_cost}
    _run(resume_batch, batch, as_json=as_json, quiet=quiet, **kw)


@batch_app.command("redrive")
def redrive_cmd(
    batch: str = typer.Argument(..., help="Batch id."),
    as_json: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Re-run only the dead-lettered (failed) requests of a finished batch."""
    from rft.batch import redrive_batch

    _run(redrive_batch, batch, as_json=as_json, quiet=quiet)


@batch_app.command("cancel")
def cancel_cmd(batch: str = typer.Argument(..., help="Batch id."), as_json: bool = typer.Option(False, "--json")):
    """Cancel a batch; requests that did not run go to the error file as batch_cancelled."""
    from rft.batch import cancel_batch

    s = cancel_batch(batch)
    if as_json:
        print_json(s)
    else:
        out.print(f"batch {s['id']}: {s['status']}")


@batch_app.command("show")
def show_cmd(batch: str = typer.Argument(..., help="Batch id."), as_json: bool = typer.Option(False, "--json")):
    """Show one batch: status, counts, tokens, cost, files."""
    from rft.batch import show_batch

    s = show_batch(batch)
    if as_json:
        print_json(s)
        return
    _summary(s)
    if s.get("errors"):
        for e in s["errors"]["data"]:
            out.print(f"  - {e['message']}", markup=False)


@batch_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json")):
    """List batches, newest first."""
    from rft.batch import list_batches

    rows = list_batches()
    if as_json:
        print_json(rows)
        return
    t = table("id", "status", "model", "done/total", "failed", "cost $", "created",
              fold=("status", "model", "done/total", "failed", "cost $", "created"), no_wrap=("id",))
    for s in rows:
        rc = s["request_counts"]
        status = s["status"] + (f" ({s['stop_reason']})" if s.get("stop_reason") else "") + (" (running)" if s["running"] else "")
        t.add_row(s["id"], escape(status), escape(s["model"]), f"{rc['completed'] + rc['failed']}/{rc['total']}", str(rc["failed"]),
                  f"{s['cost']['estimate_usd']:.4f}", time.strftime("%Y-%m-%d %H:%M", time.localtime(s["created_at"])))
    out.print(t)
