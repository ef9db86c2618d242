"""Hostile files and output folders handed to the `rft` command, through the installed console script.

Every class of bad file (missing, a directory, binary, non-UTF-8, a JSON value of the wrong kind, nesting past
Python's recursion limit, a single huge line, a file over the size limit, a name longer than the file system
allows) for data files (`rft data validate`, `rft grader run --data`, a job's training file), samples files
(`--samples`, `--sample-file`), item files and `--item`; and output folders that are files or hold files
(`rft train/demo/eval/compare -o`). Each must exit 2 with a message naming the file, no traceback, and leave
whatever was already there untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rft.data.jsonl import MAX_FILE_BYTES, MAX_LINE_BYTES
from tests.clitools import assert_user_error, run_rft

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
          "operation": "eq"}
ROW = {"messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}


def _hostile(tmp_path: Path, kind: str) -> tuple[str, str]:
    """(path, what the message must say) for one class of bad file."""
    p = tmp_path / f"{kind}.jsonl"
    if kind == "missing":
        return str(p), "not found"
    if kind == "directory":
        p.mkdir()
        return str(p), "directory"
    if kind == "binary":
        p.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)))
        return str(p), "binary"
    if kind == "latin1":
        p.write_bytes('{"messages": [{"role": "user", "content": "caf\u00e9"}]}\n'.encode("latin-1"))
        return str(p), "UTF-8"
    if kind == "wrong_kind":
        p.write_text("[1, 2, 3]\n")
        return str(p), "got array"
    if kind == "deep":
        p.write_text("[" * 100_000 + "\n")
        return str(p), "levels deep"
    if kind == "huge_line":
        with open(p, "w") as f:
            f.write('{"messages": "' + "a" * (MAX_LINE_BYTES + 1) + '"}\n')
        return str(p), "the limit is"
    if kind == "too_large":
        with open(p, "wb") as f:  # sparse: the size is refused from stat() before a byte is read
            f.truncate(MAX_FILE_BYTES + 1)
        return str(p), "the limit is"
    if kind == "long_name":
        return str(tmp_path / ("n" * 300 + ".jsonl")), "longer than the file system allows"
    raise AssertionError(kind)


KINDS = ["missing", "directory", "binary", "latin1", "wrong_kind", "deep", "huge_line", "too_large", "long_name"]


def _first_line_names(r, path: str) -> None:
    first = r.stderr.splitlines()[0]
    assert first.startswith("error: ") and path[:60] in first, r.stderr[:500]


@pytest.mark.parametrize("kind", KINDS)
def test_data_validate(tmp_path, kind):
    path, needle = _hostile(tmp_path, kind)
    r = run_rft("data", "validate", path)
    assert_user_error(r, needle)
    _first_line_names(r, path)
    assert len(r.stderr) < 2000  # one problem, not one per "line" of a binary file


@pytest.mark.parametrize("kind", ["binary", "deep", "wrong_kind"])
def test_data_validate_json_output(tmp_path, kind):
    path, needle = _hostile(tmp_path, kind)
    r = run_rft("data", "validate", path, "--json")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "invalid" and needle in out["problems"][0] and path in out["problems"][0]


def _grader(tmp_path: Path) -> str:
    g = tmp_path / "grader.json"
    g.write_text(json.dumps(GRADER))
    return str(g)


def _good_data(tmp_path: Path) -> str:
    d = tmp_path / "good.jsonl"
    d.write_text(json.dumps(ROW) + "\n")
    return str(d)


@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "deep", "long_name"])
def test_grader_run_data_file(tmp_path, kind):
    path, needle = _hostile(tmp_path, kind)
    samples = tmp_path / "s.jsonl"
    samples.write_text('"2"\n')
    r = run_rft("grader", "run", _grader(tmp_path), "--data", path, "--samples", str(samples))
    assert_user_error(r, needle)
    _first_line_names(r, path)


@pytest.mark.parametrize("kind", KINDS)
def test_grader_run_samples_file(tmp_path, kind):
    path, needle = _hostile(tmp_path, kind)
    if kind == "wrong_kind":
        needle = "a sample must be a JSON string or an object"
    if kind == "deep":
        needle = "nests too deeply"
    if kind == "huge_line":
        needle = "limit"
    r = run_rft("grader", "run", _grader(tmp_path), "--data", _good_data(tmp_path), "--samples", path)
    assert_user_error(r, needle)
    _first_line_names(r, path)


def test_grader_run_samples_that_do_not_match_the_rows(tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text('"2"\n{"output_text": "3"}\n')
    r = run_rft("grader", "run", _grader(tmp_path), "--data", _good_data(tmp_path), "--samples", str(samples))
    assert_user_error(r, "has 2 samples but", "has 1 rows")
    samples.write_text('{"output_text": 2}\n')
    assert_user_error(run_rft("grader", "run", _grader(tmp_path), "--data", _good_data(tmp_path), "--samples",
                              str(samples)), f"{samples}:1: a sample must be")


@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "latin1", "huge_line", "too_large", "long_name"])
def test_grader_run_sample_file(tmp_path, kind):
    path, needle = _hostile(tmp_path, kind)
    r = run_rft("grader", "run", _grader(tmp_path), "--sample-file", path)
    assert_user_error(r, needle)
    _first_line_names(r, path)


@pytest.mark.parametrize("kind", KINDS)
def test_grader_run_item_file(tmp_path, kind):
    path, needle = _hostile(tmp_path, kind)
    if kind == "wrong_kind":
        needle = "must be an object ({...}), got an array"
    if kind == "deep":
        needle = "nests too deeply"
    r = run_rft("grader", "run", _grader(tmp_path), "--sample", "2", "--item-file", path)
    assert_user_error(r, needle)
    _first_line_names(r, path)


@pytest.mark.parametrize("item, needle", [
    ("[1]", "must be an object ({...}), got an array"),
    ('"2"', "must be an object ({...}), got a string"),
    ("{answer: 2}", "not valid JSON"),
    ('{"a": NaN}', "NaN is not valid JSON"),
    ("[" * 100_000, "nests too deeply"),
    ('{"a": ' * 100 + "1" + "}" * 100, "nests more than"),
])
def test_grader_run_item_json(tmp_path, item, needle):
    r = run_rft("grader", "run", _grader(tmp_path), "--sample", "2", "--item", item)
    assert_user_error(r, "--item", needle)
    assert r.stderr.startswith("error: --item")


def test_grader_run_good_item_and_sample_file_still_work(tmp_path):
    s = tmp_path / "sample.txt"
    s.write_text("2")
    item = tmp_path / "item.json"
    item.write_text('{"answer": "2"}')
    r = run_rft("grader", "run", _grader(tmp_path), "--sample-file", str(s), "--item-file", str(item))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reward"] == 1.0


# ------------------------------------------------------------------------------------- a job's data
def _job(tmp_path: Path, training_file: str) -> str:
    p = tmp_path / "job.json"
    p.write_text(json.dumps({"model": "smollm2-135m-instruct", "training_file": training_file,
                             "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER}}}))
    return str(p)


@pytest.mark.parametrize("kind", ["binary", "deep", "long_name"])
def test_train_with_a_hostile_training_file(tmp_path, kind):
    path, needle = _hostile(tmp_path, kind)
    r = run_rft("train", _job(tmp_path, path), "-q")
    assert_user_error(r, needle, path[:60])


# --------------------------------------------------------------------------------------- output folders
def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture()
def occupied(tmp_path) -> Path:
    d = tmp_path / "occupied"
    (d / "sub").mkdir(parents=True)
    (d / "keep.txt").write_text("precious")
    (d / "sub" / "report.json").write_text("{}")
    return d


def _jobs_recorded() -> list:
    r = run_rft("jobs", "list", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _output_cases(tmp_path: Path) -> list[tuple[str, list[str]]]:
    grader = _grader(tmp_path)
    return [
        ("train", ["train", _job(tmp_path, "builtin:arithmetic"), "-q", "-o"]),
        ("demo", ["demo", "-o"]),
        ("eval", ["eval", "smollm2-135m-instruct", "--data", "builtin:arithmetic", "--grader", grader, "-o"]),
        ("compare", ["compare", "a", "b", "--data", "builtin:arithmetic", "--grader", grader, "-o"]),
    ]


def test_output_folder_that_holds_files_is_refused_and_untouched(tmp_path, occupied):
    before = _snapshot(occupied)
    for name, args in _output_cases(tmp_path):
        r = run_rft(*args, str(occupied))
        assert_user_error(r, str(occupied), "not empty", "nothing there was changed")
        assert _snapshot(occupied) == before, name
    assert _jobs_recorded() == []


def test_output_folder_that_is_a_file_is_refused_and_untouched(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("precious")
    for name, args in _output_cases(tmp_path):
        r = run_rft(*args, str(f))
        assert_user_error(r, str(f), "is a file")
        assert f.read_text() == "precious", name
    assert _jobs_recorded() == []


def test_output_folder_under_a_file_and_with_a_long_name(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("precious")
    job = _job(tmp_path, "builtin:arithmetic")
    assert_user_error(run_rft("train", job, "-q", "-o", str(f / "run")), "is a file, not a folder")
    assert_user_error(run_rft("train", job, "-q", "-o", str(tmp_path / ("r" * 300))), "longer than the file system")
    assert f.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "job.json"]
