"""The `rft` command line. Every command calls a library function; this module only parses and prints.

What: the Typer app (commands listed in `COMMAND_ORDER`, `-h`/`--help` everywhere, `--version`/`-V`) and `main()`,
the one place that turns every way a run can end into an exit code and at most a few lines on stderr:
  - a user mistake (`RftError`, or a usage error: unknown command or flag, missing argument, bad value) prints
    `error: ...` (usage errors first print the usage line) and exits 2, never with a traceback;
  - `typer.Exit(code)` keeps its code (75 paused, 3 cancelled); Ctrl-C exits 130;
  - anything else is a bug in rft: a short "internal error" message saying how to report it, exit 70
    (EX_SOFTWARE); RFT_DEBUG=1 prints the traceback instead.
Simplified: typer 0.29 raises exceptions from its own vendored copy of click; `_usage_error_types` accepts both
that copy and the real click (older typers), so a typer upgrade inside the pinned range cannot bring tracebacks back.
How to run: `rft --help`, `rft train examples/quickstart.yaml`, `python -m rft.cli.main --version`.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape as rich_escape
from typer.core import TyperGroup

from rft.cli.serve_cmd import serve as serve_cmd
from rft.cli.batch_cmd import batch_app
from rft.cli.files_cmd import files_app
from rft.cli.users_cmd import users_app
from rft.cli import eval_cmds, registry_cmds
from rft.cli import replay_cmd
from rft.cli import review_cmd
from rft.cli import strategies_cmd
from rft.cli import pairs_cmd
from rft.cli.output import err, out, print_error, print_json, print_view, table
from rft.data.jsonl import MAX_FILE_BYTES, MAX_LINE_BYTES
from rft.errors import RftError
from rft.userinput import load_json_file, parse_json, read_user_text

# The order of `rft --help`: the workflow from training to serving. Typer itself lists plain commands before
# groups, which put `promote` first and `train` in the middle.
COMMAND_ORDER = ("train", "demo", "preflight", "eval", "compare", "strategies", "pairs", "data", "files", "grader",
                 "models", "jobs", "checkpoints", "review", "replay", "explain", "promote", "rollback", "aliases",
                 "lineage", "audit", "users", "batch", "serve")
INTERNAL_ERROR_EXIT = 70  # sysexits EX_SOFTWARE: a bug in rft, not a user mistake (those exit 2)


class OrderedGroup(TyperGroup):
    """A command group that lists its commands in `COMMAND_ORDER`; any command not named there follows, in the
    order it was registered (sorted() is stable)."""

    def list_commands(self, ctx) -> list[str]:
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda n: rank.get(n, len(rank)))

    def resolve_command(self, ctx, args):
        """Also note the full command path ("jobs pause") and its arguments for the role check in `_root`."""
        name, cmd, rest = super().resolve_command(ctx, args)
        path, sub = [cmd.name if cmd is not None else name], cmd
        rest_args = list(rest)
        while sub is not None and hasattr(sub, "get_command") and rest_args and not rest_args[0].startswith("-"):
            sub = sub.get_command(ctx, rest_args[0])
            if sub is None:
                break
            path.append(rest_args.pop(0))
        ctx.meta["rft.command"] = (" ".join(path), rest_args)
        return name, cmd, rest


app = typer.Typer(cls=OrderedGroup, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]},
                  help="rft: reinforcement fine-tuning for open models (OpenAI RFT job specs and graders).")
models_app = typer.Typer(no_args_is_help=True, help="List and prepare model references.")
data_app = typer.Typer(no_args_is_help=True, help="Validate datasets; list the built-in ones.")
grader_app = typer.Typer(no_args_is_help=True, help="Validate and run graders.")


def version_string() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rft")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"rft {version_string()}")
        raise typer.Exit(0)


@app.callback()
def _root(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")) -> None:
    """rft: reinforcement fine-tuning for open models (OpenAI RFT job specs and graders)."""
    from rft.cli import permissions

    path, args = ctx.meta.get("rft.command", (ctx.invoked_subcommand or "", []))
    permissions.authorize(path, args)  # the one role check of every command (rft.cli.permissions)


app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(files_app, name="files")
app.add_typer(grader_app, name="grader")
registry_cmds.register(app)
eval_cmds.register(app)  # eval, compare
replay_cmd.register(app)  # replay, explain (issue 18)
review_cmd.register(app)  # review (issue 18)
strategies_cmd.register(app)  # strategies (issue 14)
pairs_cmd.register(app)  # pairs (issue 14: DPO rows from a grader)
app.add_typer(batch_app, name="batch")
app.command("serve")(serve_cmd)
app.add_typer(users_app, name="users")

def find_example(name: str) -> Path:
    """examples/<name> from the working directory or the source checkout, else the packaged copy."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        p = base / "examples" / name
        if p.exists():
            return p
    from importlib.resources import files

    p = Path(str(files("rft") / "resources" / name))
    if p.exists():
        return p
    raise RftError(f"example {name} not found")


# --------------------------------------------------------------------------------------------- train
def _train(job_path: Path, overrides: list[str], output_dir: Optional[str], as_json: bool, quiet: bool,
           ray: bool = False) -> dict:
    from rft.cli.training import train_command  # rft.api.train: the job, data and run folder checked, then run

    return train_command(job_path, overrides, output_dir, as_json, quiet, ray=ray)


@app.command()
def train(
    job: Path = typer.Argument(..., help="Job spec (YAML or JSON, OpenAI fine-tuning job body + rft section)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. rft.sampling.temperature=0.7"),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Run folder (default $RFT_HOME/runs/<job id>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the final job object as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or log lines."),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray (rft.cluster): alone, a new local Ray; followed by "
                                                 "an ADDRESS (HOST:PORT, ray://HOST:PORT, auto), that cluster."),
):
    """Run a reinforcement fine-tuning job: baseline eval, GRPO training, final eval, report."""
    _train(job, overrides or [], output_dir, as_json, quiet, ray=ray)


@app.command()
def demo(
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Run folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the final job object as JSON."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides for examples/quickstart.yaml"),
):
    """Fine-tune the embedded model on arithmetic (examples/quickstart.yaml) and show the result."""
    path = find_example("quickstart.yaml")
    (err if as_json else out).print(f"[bold]rft demo[/bold]: running {path}")
    _train(path, overrides or [], output_dir, as_json, False)


@app.command()
def preflight(
    job: Path = typer.Argument(..., help="Job spec."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides"),
    prompts: int = typer.Option(16, "--prompts", help="Training prompts to sample."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Before training: learnability (pass-rate histogram, zero-variance groups), grader health, step-time forecast."""
    from rft.jobcheck import load_job
    from rft.preflight import run_preflight

    spec = load_job(job, overrides or [])
    rep = run_preflight(spec, prompts=prompts, log=lambda s: err.print(s))
    if as_json:
        print_json(rep)
        return
    from rft import views

    print_view(views.preflight_table(rep, f"preflight {job}"))


# -------------------------------------------------------------------------------------------- models
@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON.")):
    """List the models on this machine (embedded, the Hugging Face hub cache, fine-tuned checkpoints) and the
    engine each gets (fast decoder or transformers) with the reason."""
    from rft.engine.archs import with_engines
    from rft.models import list_local

    rows = with_engines(list_local())
    if as_json:
        print_json(rows)
        return
    t = table("id", "status", "kind", "engine", "reason", "path")
    for r in rows:
        t.add_row(r["id"], r["status"], r["kind"], r["engine"], r["reason"], r["path"])
    out.print(t)


@models_app.command("pull")
def models_pull(name: str = typer.Argument("smollm2-135m-instruct"), force: bool = typer.Option(False, "--force")):
    """Prepare an embedded model (convert it once to safetensors in the cache)."""
    from rft.models import EMBEDDED, prepare_embedded
    from rft.errors import did_you_mean

    if name not in EMBEDDED:
        raise RftError(f"'{name}' is not an embedded model{did_you_mean(name, list(EMBEDDED))}; available: {', '.join(EMBEDDED)}",
                       hint="local models need no pull: pass their directory as the model reference")
    path = prepare_embedded(name, force=force, log=lambda s: err.print(s))
    out.print(f"{name}: ready at {path}")


# ---------------------------------------------------------------------------------------------- data
@data_app.command("validate")
def data_validate(file: str = typer.Argument(..., help="JSONL or Parquet file (OpenAI RFT format), hf:<name>[:<config>][@<split>] or builtin:<name>."),
                  as_json: bool = typer.Option(False, "--json")):
    """Check a dataset; report every problem with its line and field."""
    from rft.data import load_dataset, validate_file

    if file.startswith("builtin:"):
        ds = load_dataset(file)
        res = {"path": file, "rows": len(ds), "sha256": ds.sha256, "problems": []}
    else:
        rep = validate_file(file)
        res = {"path": file, "rows": rep.n_rows, "sha256": rep.sha256, "problems": [str(p) for p in rep.problems]}
        if rep.problems:
            if as_json:
                print_json(res | {"status": "invalid"})
                raise typer.Exit(2)
            raise RftError(f"{file}: {len(rep.problems)} problem(s)", rep.problems)
    if as_json:
        print_json(res | {"status": "valid"})
    else:
        out.print(f"[green]ok[/green] {file}: {res['rows']} rows, sha256 {res['sha256']}")


@data_app.command("list")
def data_list(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")):
    """The built-in datasets (builtin:arithmetic and every reasoning-gym task), one line each."""
    from rft.cli.data_cmds import data_list as _data_list

    _data_list(as_json)


# -------------------------------------------------------------------------------------------- grader
_ALLOW_HOST_HELP = ("A host name, IP address or CIDR block that endpoint graders may reach although it is loopback, "
                    "link-local or private (repeatable; the job spec's rft.network.allow_private_hosts).")


def _grader_context(hosts: Optional[List[str]]):
    from rft import graders

    return graders.GraderContext(allow_private_hosts=tuple(hosts or ()))


@grader_app.command("validate")
def grader_validate(file: Path,
                    allow_private_host: Optional[List[str]] = typer.Option(None, "--allow-private-host", help=_ALLOW_HOST_HELP)):
    """Static checks of a grader JSON (schema, templates, formula, python source)."""
    from rft import graders

    spec = graders.load_grader_file(str(file))
    graders.build(spec, source=str(file), context=_grader_context(allow_private_host)).close()
    out.print(f"[green]ok[/green] {file}: {spec.get('type')} grader '{spec.get('name', spec.get('type'))}' is valid")


@grader_app.command("run")
def grader_run(
    file: Path,
    sample: Optional[str] = typer.Option(None, "--sample", help="The model output to grade."),
    sample_file: Optional[Path] = typer.Option(None, "--sample-file"),
    item: Optional[str] = typer.Option(None, "--item", help="The dataset row as JSON."),
    item_file: Optional[Path] = typer.Option(None, "--item-file"),
    data: Optional[Path] = typer.Option(None, "--data", help="JSONL rows (grades many with --samples)."),
    samples: Optional[Path] = typer.Option(None, "--samples", help="JSONL of samples, one per data row ({\"output_text\": ...} or a string)."),
    as_json: bool = typer.Option(False, "--json", help="With --data: print the summary (and per-row results) as JSON."),
    allow_private_host: Optional[List[str]] = typer.Option(None, "--allow-private-host", help=_ALLOW_HOST_HELP),
):
    """Run a grader on one sample (OpenAI graders/run response shape) or on many (--data + --samples)."""
    from rft import graders
    from rft.graders import run as grun

    ctx = _grader_context(allow_private_host)
    spec = graders.load_grader_file(str(file))
    graders.build(spec, source=str(file), context=ctx).close()
    if data or samples:
        if not (data and samples):
            raise RftError("--data and --samples go together")
        from rft.data import load_jsonl

        rows = list(load_jsonl(str(data)).rows)
        texts = _read_samples(samples)
        if len(texts) != len(rows):
            raise RftError(f"{samples} has {len(texts)} samples but {data} has {len(rows)} rows")
        summary = grun.grade_file(spec, rows, texts, context=ctx)
        if as_json:
            print_json(summary)
            return
        from rft import views

        print_view(views.grader_file_table(summary, len(rows)), fold=("value",))
        return
    if sample is not None and sample_file:
        raise RftError("give --sample TEXT or --sample-file FILE, not both")
    if item is not None and item_file:
        raise RftError("give --item JSON or --item-file FILE, not both")
    if sample_file:
        # one sample and one item are each the size of one dataset row at most
        sample = read_user_text(sample_file, "sample", max_bytes=MAX_LINE_BYTES)
    if sample is None:
        raise RftError("give --sample TEXT or --sample-file FILE")
    it = {}
    if item_file:
        it = load_json_file(item_file, "dataset item", expect=dict, max_bytes=MAX_LINE_BYTES)
    elif item is not None:
        it = parse_json(item, "--item", "dataset item", expect=dict)
    print_json(grun.run_grader(spec, sample, it, context=ctx))


def _read_samples(path: Path) -> list[str]:
    """The `--samples` JSONL: one sample per non-blank line, a JSON string or an object with a string
    `output_text`. Every way the file can be wrong is an RftError naming the file and line."""
    name = str(path)
    texts = []
    for i, line in enumerate(read_user_text(path, "samples JSONL", max_bytes=MAX_FILE_BYTES).splitlines(), 1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:  # characters, at most as many as bytes: a cheap first cut
            raise RftError(f"{name}:{i}: the line is longer than the limit of {MAX_LINE_BYTES:,} bytes")
        v = parse_json(line, name, "sample", line=i)
        if isinstance(v, dict) and isinstance(v.get("output_text"), str):
            texts.append(v["output_text"])
        elif isinstance(v, str):
            texts.append(v)
        else:
            raise RftError(f"{name}:{i}: a sample must be a JSON string or an object with a string 'output_text', "
                           f"got {json.dumps(v)[:80]}")
    return texts


def _usage_error_types() -> tuple[type, ...]:
    """The usage-error base classes in play: typer's vendored click (typer >= 0.29: `typer._click`, whose
    exceptions derive from `typer.exceptions.TyperException`) and, where installed, the real click (older typers
    raise its exceptions; a plugin might too). Looked up at the moment of the error, so startup imports nothing."""
    types: list[type] = []
    try:
        from typer.exceptions import TyperException

        types.append(TyperException)
    except ImportError:  # a typer before the vendored copy
        pass
    try:
        import click

        types.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(types)


def _exit_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(Exit classes, Abort classes) of typer and of the real click."""
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort]
    try:
        import click

        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(exits), tuple(aborts)


def _show_usage_error(e: Exception) -> None:
    """The usage line, where to get help, and one `error: ...` line (click's did-you-mean included)."""
    ctx = getattr(e, "ctx", None)
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    if type(e).__name__ == "NoArgsIsHelpError":
        # `rft` or `rft jobs` alone: the group's help text (it starts with the usage line and lists the commands),
        # then the one message a usage error has
        sys.stderr.write(message.rstrip("\n") + "\n")
        path = ctx.command_path if ctx is not None else "rft"
        print_error(f"missing command: give one of the commands above (`{path} COMMAND -h` for its help)")
        return
    if ctx is not None:
        sys.stderr.write(f"{ctx.get_usage()}\nTry '{ctx.command_path} -h' for help.\n")
    print_error(message)


def _internal_error(e: BaseException) -> None:
    """A bug: name it, say how to report it; the traceback only with RFT_DEBUG=1 (a user never needs it to act)."""
    if os.environ.get("RFT_DEBUG", "") not in ("", "0"):
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    text = str(e)
    text = text if len(text) <= 300 else text[:300] + "..."
    err.print(f"[bold red]internal error:[/bold red] {rich_escape(type(e).__name__)}: {rich_escape(text)}",
              markup=True, highlight=False, soft_wrap=True)
    err.print("This is a bug in rft, not a mistake in what you typed. Please report it to the rft maintainers "
              "with the command you ran and the output of the same command run with RFT_DEBUG=1 "
              "(which shows the traceback).", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """The console script `rft`: run the command, then exit with 0, the command's own code, 2 for a user
    mistake, 130 for Ctrl-C, or 70 for a bug (see the module docstring)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        # standalone_mode=False: errors come back to us instead of being printed by typer (as a rich box) and
        # a typer.Exit(code) comes back as the return value.
        rc = typer.main.get_command(app).main(args=argv, prog_name="rft", standalone_mode=False)
    except RftError as e:
        print_error(str(e))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:
        exits, aborts = _exit_types()
        if isinstance(e, _usage_error_types()):
            _show_usage_error(e)
            sys.exit(2)
        if isinstance(e, exits):
            sys.exit(e.exit_code)
        if isinstance(e, aborts):  # typer turns EOF on a prompt into Abort
            err.print("aborted")
            sys.exit(130 if isinstance(e.__context__, KeyboardInterrupt) else 1)
        _internal_error(e)
        sys.exit(INTERNAL_ERROR_EXIT)
    if rc == 130:  # typer turned Ctrl-C into Exit(130)
        err.print("interrupted")
    if isinstance(rc, int) and not isinstance(rc, bool) and rc:
        sys.exit(rc)


if __name__ == "__main__":
    main()
