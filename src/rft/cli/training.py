"""Running a training call from the command line: `rft train`, `rft demo` and `rft jobs resume` share it.

What: `train_command(job, overrides, output_dir, as_json, quiet)` is `rft train` and `rft demo`: it runs
`rft.api.train` (which loads and checks the job, its data references and the run folder before the job is
recorded) through `run_training`. `run_training(fn, as_json, quiet)` calls `fn(progress, log)` (`rft.api.train`
or `rft.api.resume` with their arguments bound) under a rich progress bar, then prints the job (`--json`) or its
summary table (`rft.views.training_summary`). A paused or cancelled job prints how it stopped and exits with its code: 75
(paused: state saved, resumable) or 3 (cancelled).
Simplified: the progress bar shows reward, validation accuracy and step time, nothing else; `--quiet` turns bar
and log lines off. Its own module so that `rft.cli.main` and `rft.cli.registry_cmds` both import it and not
each other.
How to run: `rft train examples/quickstart.yaml`, `rft train JOB.yaml --ray` (Ray, rft.train.distributed),
`rft jobs resume JOB`.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from rft.cli.output import err, out, print_json, view_table


def train_command(job_path, overrides: list[str], output_dir: str | None, as_json: bool, quiet: bool,
                  ray: bool = False) -> dict:
    """`rft train JOB [key=value ...] [--ray [ADDRESS]]`: the job through `rft.api.train`, shown as `run_training`
    shows it. `--ray` becomes the overrides rft.cluster.enabled (and .address), so the stored spec, and with it
    `rft jobs resume`, runs on Ray too."""
    from rft import api

    overrides = ray_overrides(ray, list(overrides))
    return run_training(lambda progress, log: api.train(job_path, overrides, output_dir=output_dir, progress=progress,
                                                        log=log), as_json, quiet)


def ray_overrides(ray: bool, overrides: list[str]) -> list[str]:
    """`--ray` is a flag; its ADDRESS lands among the positional overrides (it is the one without "="). Returns
    the overrides with rft.cluster.enabled=true (and rft.cluster.address=ADDRESS) in place of the address."""
    from rft.errors import RftError

    if not ray:
        return overrides
    bare = [o for o in overrides if "=" not in o]
    if len(bare) > 1:
        raise RftError(f"--ray takes one ADDRESS, got {', '.join(repr(b[:60]) for b in bare)}",
                       hint="rft train JOB.yaml --ray [HOST:PORT]; overrides are key=value")
    rest = [o for o in overrides if "=" in o] + ["rft.cluster.enabled=true"]
    if bare:
        if any(c.isspace() for c in bare[0]):
            raise RftError(f"--ray: {bare[0][:100]!r} is not a Ray address (HOST:PORT, ray://HOST:PORT or auto)")
        rest.append(f"rft.cluster.address={bare[0]}")
    return rest


def run_training(fn, as_json: bool, quiet: bool) -> dict:
    """Run a training call with a progress bar; a paused or cancelled job prints how to continue and exits with
    code 75 (paused: state saved, resumable) or 3 (cancelled)."""
    from rft import views
    from rft.api import JobStopped

    console = err if as_json else out
    log = (lambda s: None) if quiet else (lambda s: console.print(f"[dim]{rich_escape(s)}[/dim]"))
    progress_cb, stop = _progress(console, disabled=quiet)
    try:
        result = fn(progress_cb, log)
    except JobStopped as e:
        stop()
        err.print(f"job {e.status}: {rich_escape(e.message)}")
        if as_json and e.job:
            print_json(e.job)
        raise typer.Exit(e.exit_code)
    finally:
        stop()
    if as_json:
        print_json(result)
    else:
        console.print(view_table(views.training_summary(result), fold=("value",), no_wrap=("",), show_header=True,
                                 header_style="bold"))
        next_steps = views.training_next_steps(result)
        if next_steps:
            console.print(next_steps, highlight=False)
    return result


def _progress(console: Console, disabled: bool = False):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if disabled:
        return None, lambda: None
    prog = Progress(
        TextColumn("[bold]training"), BarColumn(bar_width=20), MofNCompleteColumn(),
        TextColumn("reward {task.fields[reward]}"), TextColumn("val {task.fields[val]}"),
        TextColumn("{task.fields[step_time]}/step"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=False,
    )
    state = {"task": None, "started": False}

    def cb(step: int, total: int, m: dict) -> None:
        if not state["started"]:
            prog.start()
            state["started"] = True
            state["task"] = prog.add_task("train", total=total, reward="-", val="-", step_time="-")
        fields = {"reward": f"{m['reward']:.3f}", "step_time": f"{m['time/step']:.1f}s"}
        if "val_accuracy" in m:
            fields["val"] = f"{m['val_accuracy']:.3f}"
        prog.update(state["task"], completed=step, **fields)

    def stop():
        if state["started"]:
            prog.stop()
            state["started"] = False

    return cb, stop
