"""The front door of the `rft` command: usage errors, --version/-V, -h, the order of `rft --help`, exit codes.

Every case a user types runs the *installed* console script in a subprocess (tests/clitools.py): Typer's
in-process runner hid the 40-line traceback that every typo printed. The exit-code mapping of `main()` for what a
user cannot type (a typer.Exit code from a paused job, Ctrl-C, a bug) is tested in-process with a throw-away command.
"""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
import typer

from tests.clitools import assert_user_error, run_rft


def _one_error(r) -> str:
    """A usage error: the usage line, then exactly one `error:` line, and nothing long."""
    assert_user_error(r, "Usage: rft", "error: ")
    lines = r.stderr.strip().splitlines()
    assert sum(ln.startswith("error:") for ln in lines) == 1, r.stderr
    assert len(lines) <= 4 and "╭" not in r.stderr, r.stderr  # no rich box
    return r.stderr


def test_version_long_and_short():
    for flag in ("--version", "-V"):
        r = run_rft(flag)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"rft {version('rft')}\n" and r.stderr == ""


def test_short_h_works_like_help_on_commands_and_groups():
    for args in ([], ["jobs"], ["jobs", "list"], ["checkpoints", "show"], ["grader", "run"], ["batch"], ["train"]):
        short, long = run_rft(*args, "-h"), run_rft(*args, "--help")
        assert short.returncode == 0 == long.returncode, (args, short.stderr)
        assert short.stdout == long.stdout and short.stdout.startswith("Usage: rft"), args
        assert "-h, --help" in short.stdout


def test_help_lists_commands_in_workflow_order():
    r = run_rft("--help")
    assert r.returncode == 0
    listed = re.findall(r"^  ([a-z]+)\s{2,}", r.stdout.split("Commands:")[1], flags=re.M)
    assert listed[:5] == ["train", "demo", "preflight", "eval", "compare"], listed
    assert listed.index("jobs") < listed.index("checkpoints") < listed.index("promote") < listed.index("rollback")
    assert listed[-2:] == ["batch", "serve"]
    assert len(listed) == len(set(listed)) == 24 and listed != sorted(listed)


@pytest.mark.parametrize("args", [[], ["jobs"], ["checkpoints"], ["batch"], ["grader"]], ids=" ".join)
def test_a_group_without_a_command_prints_its_help_and_exits_2(args):
    r = run_rft(*args)
    assert_user_error(r, f"Usage: rft {' '.join(args)}".rstrip(), "Commands:", "error: missing command")
    assert r.stdout == ""


@pytest.mark.parametrize("args, needle", [
    (["trian"], "No such command 'trian'"),
    (["--bogus"], "--bogus"),
    (["jobs", "list", "--jsn"], "--jsn"),
    (["jobs", "trian"], "No such command 'trian'"),
    (["jobs", "list", "--limit", "abc"], "'--limit'"),
    (["checkpoints", "show"], "Missing argument"),
    (["checkpoints", "approve", "ckpt-1"], "Missing option '--by'"),
    (["train"], "Missing argument"),
    (["data", "validate"], "Missing argument"),
    (["grader", "run"], "Missing argument"),
    (["eval", "some-model"], "Missing option '--grader'"),
    (["compare", "--resamples", "many"], "'--resamples'"),
    (["models", "pull", "a", "b"], "unexpected extra argument"),
    (["promote", "ckpt-1"], "Missing option '--alias'"),
    (["aliases", "list", "--bogus"], "--bogus"),
    (["batch", "trian"], "No such command"),
    (["serve", "--max-models", "two"], "'--max-models'"),
    (["serve", "--model", "m", "--port", "eighty"], "'--port'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_usage_errors_are_one_line_and_exit_2(args, needle):
    assert needle in _one_error(run_rft(*args))


def test_did_you_mean_for_a_misspelled_command():
    err = _one_error(run_rft("trian"))
    assert "Did you mean 'train'?" in err and "Try 'rft -h' for help." in err


@pytest.mark.parametrize("args, needle", [
    (["jobs", "show", "%"], '"%" is not a valid job id'),
    (["jobs", "cancel", "_"], '"_" is not a valid job id'),
    (["checkpoints", "show", ""], '"" is not a valid checkpoint id'),
    (["jobs", "show", "ftjob-nope"], "no job 'ftjob-nope'"),
    (["checkpoints", "show", "ckpt:ckpt-nope"], "no checkpoint 'ckpt-nope'"),
    (["rollback", "--alias", "a b"], "not a valid alias name"),
])
def test_unknown_or_malformed_references_are_one_line(args, needle):
    r = run_rft(*args)
    assert_user_error(r, needle)
    assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) <= 2, r.stderr


# ------------------------------------------------------------------ exit codes of main() (in-process)
@pytest.fixture()
def with_command(monkeypatch):
    """Register a throw-away `rft boom` command that runs `fn`; main() rebuilds the click command each call."""
    from rft.cli import main as cli

    def add(fn):
        monkeypatch.setattr(cli.app, "registered_commands", list(cli.app.registered_commands))
        cli.app.command("boom")(fn)
        return cli.main

    return add


def _exit_code(main, *args) -> int:
    with pytest.raises(SystemExit) as e:
        main(["boom", *args])
    return e.value.code


def test_typer_exit_codes_are_kept(with_command):
    def boom(code: int = typer.Option(0, "--code")):
        raise typer.Exit(code)

    main = with_command(boom)
    assert _exit_code(main, "--code", "75") == 75 and _exit_code(main, "--code", "3") == 3


def test_ctrl_c_exits_130(with_command, capsys):
    def boom():
        raise KeyboardInterrupt

    assert _exit_code(with_command(boom)) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_bug_is_a_short_internal_error_and_rft_debug_shows_the_traceback(with_command, capsys, monkeypatch):
    def boom():
        {}["missing"]

    main = with_command(boom)
    monkeypatch.delenv("RFT_DEBUG", raising=False)
    assert _exit_code(main) == 70
    err = capsys.readouterr().err
    assert err.startswith("internal error: KeyError: 'missing'") and "RFT_DEBUG=1" in err
    assert "Traceback" not in err and len(err.splitlines()) <= 4
    monkeypatch.setenv("RFT_DEBUG", "1")
    assert _exit_code(main) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "internal error: KeyError" in err


def test_rft_error_is_one_message_exit_2(with_command, capsys):
    from rft.errors import RftError

    def boom():
        raise RftError("x.jsonl: bad", hint="fix it")

    assert _exit_code(with_command(boom)) == 2
    assert capsys.readouterr().err == "error: x.jsonl: bad\nhint: fix it\n"
