"""Hostile files, paths and ids given to `rft batch`, through the installed console script.

Each case gets one `error:` message naming the file (and line and field), exit 2, no traceback; nothing is
written in the user's folders and nothing already there changes (compared byte for byte). Input files whose
content is bad are recorded as `failed` batches in $RFT_HOME (OpenAI's semantics); bad paths and bad ids
leave no trace at all. How to run: `.venv/bin/python -m pytest -q tests/batch/test_batch_hostile.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from batchfakes import write_requests

from tests.clitools import assert_user_error, run_rft

URL = "http://127.0.0.1:9/v1"  # nothing listens there: every case must stop before a request is sent


def _snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every path under root with its bytes (None for folders); the SQLite registry as its logical content (a
    command that only reads it, as the CLI's permission check does, may still fold its write-ahead log into the
    file and remove the -wal/-shm files: the bytes change, the data does not)."""
    import sqlite3

    out: dict[str, bytes | str | None] = {}
    for p in sorted(root.rglob("*")):
        name = str(p.relative_to(root))
        if name in ("rft.db-wal", "rft.db-shm"):
            continue
        if name == "rft.db":
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            try:
                out[name] = "\n".join(con.iterdump())
            finally:
                con.close()
            continue
        out[name] = None if p.is_dir() else p.read_bytes()
    return out


def _home() -> Path:
    return Path(os.environ["RFT_HOME"])


def _batches() -> list[str]:
    d = _home() / "batches"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture
def work(tmp_path) -> Path:
    """The user's folder, with a file that must survive every case."""
    w = tmp_path / "work"
    w.mkdir()
    (w / "keep.jsonl").write_text('{"custom_id": "theirs"}\n')
    return w


def _run(*args: str):
    return run_rft("batch", "run", *args, "--model", URL, "--quiet", timeout=120)


# ------------------------------------------------------------------------------------------ input file
def _good_line(cid: str, **body) -> str:
    b = {"model": "m", "messages": [{"role": "user", "content": "hi"}]} | body
    return json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": b})


def _deep(n: int) -> str:
    return "[" * n + "]" * n


INPUT_CASES = {
    # name: (file bytes, needles)
    "binary": (b"\x7fELF\x02\x01\x01\x00\x00" + bytes(range(256)), ["in.jsonl:1", "looks binary"]),
    "latin1": ((_good_line("a") + "\n" + _good_line("a2").replace("hi", "caf\u00e9") + "\n").encode("latin-1"),
               ["in.jsonl:2", "not valid UTF-8", "0xe9"]),
    "list_line": ((_good_line("a") + "\n[1, 2, 3]\n").encode(), ["in.jsonl:2", "must be an object", "got an array"]),
    "list_body": (json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": [1]}).encode(),
                  ["in.jsonl:1", "field 'body'", "must be a JSON object"]),
    "deep_recursion": (('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": '
                        f'{{"messages": [], "x": {_deep(200_000)}}}}}\n').encode(), ["in.jsonl:1", "nests too deeply"]),
    "deep_limit": (('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": '
                    f'{{"messages": [], "x": {_deep(100)}}}}}\n').encode(), ["in.jsonl:1", "nests more than 64 levels"]),
    "nan": ((_good_line("a") + "\n").replace('"hi"}]', '"hi"}], "temperature": NaN').encode(),
            ["in.jsonl:1", "NaN is not valid JSON"]),
    "overflow": ((_good_line("a") + "\n").replace('"hi"}]', '"hi"}], "temperature": 1e999').encode(),
                 ["in.jsonl:1", "field 'body.temperature'", "finite"]),
    "huge_line": ((_good_line("a") + "\n" + _good_line("b", pad="x" * (9 << 20)) + "\n").encode(),
                  ["in.jsonl:2", "longer than 8,388,608 bytes"]),
    "empty": (b"\n\n", ["in.jsonl", "no requests"]),
}


@pytest.mark.parametrize("case", sorted(INPUT_CASES))
def test_bad_input_content(work, case):
    data, needles = INPUT_CASES[case]
    (work / "in.jsonl").write_bytes(data)
    before = _snapshot(work)
    r = _run(str(work / "in.jsonl"), "--output", str(work / "out.jsonl"))
    assert_user_error(r, "error:", *needles)
    assert "nothing was run" in r.stderr
    assert _snapshot(work) == before  # no output file, the input and keep.jsonl untouched
    [bid] = _batches()  # recorded as a failed batch, as OpenAI records a batch that fails validation
    assert json.loads((_home() / "batches" / bid / "state.json").read_text())["status"] == "failed"


def test_bad_input_paths_leave_no_trace(work):
    (work / "folder").mkdir()
    before = _snapshot(work)
    cases = [
        (str(work / "missing.jsonl"), ["missing.jsonl", "not found"]),
        (str(work / "folder"), ["folder", "is a directory"]),
        (str(work / ("x" * 300 + ".jsonl")), ["longer than the file system allows"]),
        (str(work / "keep.jsonl" / "in.jsonl"), ["a part of the path is a file"]),
    ]
    for path, needles in cases:
        r = _run(path, "--output", str(work / "out.jsonl"))
        assert_user_error(r, "error:", *needles)
    assert _snapshot(work) == before and _batches() == []


# ------------------------------------------------------------------------------------------ --config
def test_bad_config_files(work):
    inp = write_requests(work / "in.jsonl", ["a"])
    (work / "folder").mkdir()
    (work / "bin.yaml").write_bytes(b"retry:\x00\x01")
    (work / "latin1.yaml").write_bytes("concurrency: 4\n# caf\u00e9\n".encode("latin-1"))
    (work / "list.yaml").write_text("- retry\n- prices\n")
    (work / "deep.json").write_text(_deep(100_000))
    (work / "deep.yaml").write_text("a: " + "[" * 100 + "]" * 100 + "\n")
    (work / "inf.yaml").write_text("retry: {max_backoff_s: .inf}\n")
    (work / "retry_scalar.yaml").write_text("retry: 5\n")
    (work / "bad.yaml").write_text("retry: {max_attempts: 3\n")
    before = _snapshot(work)
    cases = [
        ("missing.yaml", ["missing.yaml", "not found"]),
        ("folder", ["folder", "is a directory"]),
        ("x" * 300 + ".yaml", ["longer than the file system allows"]),
        ("bin.yaml", ["bin.yaml:1", "binary"]),
        ("latin1.yaml", ["latin1.yaml:2", "not valid UTF-8"]),
        ("list.yaml", ["list.yaml", "must be a mapping"]),
        ("deep.json", ["deep.json", "nests too deeply"]),
        ("deep.yaml", ["deep.yaml", "nests"]),
        ("inf.yaml", ["inf.yaml", "field 'retry.max_backoff_s'", "finite"]),
        ("bad.yaml", ["bad.yaml:", "not valid YAML"]),
    ]
    for name, needles in cases:
        r = _run(str(inp), "--config", str(work / name), "--output", str(work / "out.jsonl"))
        assert_user_error(r, "error:", *needles)
    # a config value of the wrong kind under an option the command line sets
    r = _run(str(inp), "--config", str(work / "retry_scalar.yaml"), "--max-attempts", "2")
    assert_user_error(r, "retry_scalar.yaml", "field 'retry' must be a mapping")
    assert _snapshot(work) == before and _batches() == []


# ------------------------------------------------------------------------------------------ --output
def test_bad_output_paths_leave_everything_as_it_was(work):
    inp = write_requests(work / "in.jsonl", ["a", "b"])
    (work / "outdir").mkdir()
    (work / "theirs.jsonl").write_text("their results\n")
    (work / "theirs2.errors.jsonl").write_text("their errors\n")
    before = _snapshot(work)
    cases = [
        (work / "outdir", ["outdir", "is a directory"]),
        (work / "keep.jsonl" / "out.jsonl", ["keep.jsonl", "is a file"]),
        (work / "keep.jsonl" / "sub" / "out.jsonl", ["keep.jsonl", "is a file"]),
        (work / ("o" * 300 + ".jsonl"), ["longer than the file system allows"]),
        (work / ("o" * 250 + ".jsonl"), ["longer than the file system allows"]),  # OUT.errors.jsonl is too long
        (work / ("d" * 300) / "out.jsonl", ["longer than the file system allows"]),
        (work / "theirs.jsonl", ["theirs.jsonl", "already exists and is not this batch's"]),
        (work / "theirs2.jsonl", ["theirs2.errors.jsonl", "already exists"]),  # its errors file is a stranger's
        (inp, ["in.jsonl", "already exists"]),  # the input itself
    ]
    for out, needles in cases:
        r = _run(str(inp), "--output", str(out))
        assert_user_error(r, "error:", *needles)
        assert len((r.stdout + r.stderr).strip().splitlines()) <= 3, r.stderr  # one message (and a hint)
    assert _snapshot(work) == before  # byte for byte: nothing truncated, appended or created
    assert _batches() == []


# ------------------------------------------------------------------------------------------ batch ids
@pytest.fixture
def two_batches(tmp_path):
    from rft.batch import create_batch

    ids = []
    for k in range(2):
        inp = write_requests(tmp_path / f"in{k}.jsonl", ["a"])
        ids.append(create_batch(inp, model=URL)["id"])
    # A folder outside batches/ that looks like a batch: `../x` must never reach it.
    x = _home() / "x"
    x.mkdir()
    (x / "state.json").write_bytes((_home() / "batches" / ids[0] / "state.json").read_bytes())
    return ids


BAD_IDS = {
    "unknown": ("batch_19990101000000_deadbeef", "no batch 'batch_19990101000000_deadbeef'"),
    "ambiguous": ("batch_", "matches 2 batches"),
    "percent": ("%", "'%' is not a batch id"),
    "underscore": ("_", "no batch '_'"),
    "traversal": ("../x", "'../x' is not a batch id"),
    "absolute": ("/tmp", "'/tmp' is not a batch id"),
    "glob": ("batch_*", "is not a batch id"),
    "too_long": ("batch_" + "a" * 5000, "is not a batch id"),
    "empty": ("", "'' is not a batch id"),
}


@pytest.mark.parametrize("command", ["show", "cancel", "resume", "redrive"])
def test_bad_batch_ids_touch_nothing(two_batches, command):
    before = _snapshot(_home())
    # show and cancel get every id; resume and redrive share their lookup, so the path-shaped ones suffice
    names = BAD_IDS if command in ("show", "cancel") else ["traversal", "absolute", "percent", "ambiguous"]
    for name in names:
        bid, needle = BAD_IDS[name]
        r = run_rft("batch", command, bid)
        assert_user_error(r, "error:", needle)
        assert len(r.stderr) < 600, (name, r.stderr)  # an over-long id is not echoed back whole
    after = _snapshot(_home())
    assert after == before  # no lock, no cancel marker, no state write: in batches/ or in x/


def test_a_unique_prefix_still_works(two_batches):
    r = run_rft("batch", "show", two_batches[1][:-3], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == two_batches[1]


# ------------------------------------------------------------------ an output file replaced before resume
@pytest.mark.parametrize("theirs", [
    b'{"id": "x", "custom_id": "a", "response": null}\n{"id": "y", "custom_id": "b"}\n',  # another tool's JSONL
    b"their notes, no newline at the end",  # would look like a torn last line
    b'{"custom_id": "a"}\n{"custom_id": "b"',  # a result-like line and a half one
])
def test_resume_refuses_an_output_file_that_is_not_the_batchs(work, theirs):
    """The output and error files are the batch's journal: if one is replaced by someone else's file, resume
    refuses (exit 2) and leaves it byte for byte, instead of cutting its 'torn' tail or rewriting it."""
    from rft.batch import create_batch

    inp = write_requests(work / "in.jsonl", ["a", "b"])
    st = create_batch(inp, model=URL, output=work / "out.jsonl")  # recorded, nothing run yet
    for victim in ("out.jsonl", "out.errors.jsonl"):
        (work / "out.jsonl").write_bytes(b"")
        (work / "out.errors.jsonl").write_bytes(b"")
        (work / victim).write_bytes(theirs)
        before = _snapshot(work)
        r = run_rft("batch", "resume", st["id"], "--quiet", timeout=120)
        assert_user_error(r, "error:", victim, f"not a result of batch {st['id']}")
        assert _snapshot(work) == before
