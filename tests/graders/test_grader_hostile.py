"""Hostile grader files and hostile scores, through the installed `rft` command as a user types it.

Every bad grader file (missing, a directory, binary, non-UTF-8, a list where an object is expected, nesting past
the recursion limit, one huge line, a name longer than the file system allows) gets one `error:` line naming
the file and exit 2 from both `rft grader validate FILE` and `rft grader run FILE --sample x --item '{}'`.
A python grader's score that overflows float32 is unscored, never a reward.
"""

from __future__ import annotations

import json

import pytest

from rft.errors import RftError
from rft.graders import load_grader_file
from tests.clitools import assert_user_error, run_rft

GOOD = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "x", "operation": "eq"}


def _write(tmp_path, name: str, content: bytes | str) -> str:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return name


def _missing(tmp_path):
    return "no_such_grader.json", "not found"


def _directory(tmp_path):
    (tmp_path / "grader_dir.json").mkdir()
    return "grader_dir.json", "is a directory"


def _binary(tmp_path):
    return _write(tmp_path, "binary.json", b'{"type": "\x00\x01\x02"}'), "looks binary"


def _not_utf8(tmp_path):
    return _write(tmp_path, "latin1.json", '{"type": "string_check", "name": "caf\xe9"}'.encode("latin-1")), "not valid UTF-8"


def _a_list(tmp_path):
    return _write(tmp_path, "list.json", json.dumps([GOOD])), "must hold an object"


def _wrapped_list(tmp_path):
    return _write(tmp_path, "wrapped.json", json.dumps({"grader": [GOOD]})), "field 'grader'"


def _a_string_in_yaml(tmp_path):
    return _write(tmp_path, "scalar.yaml", "just a sentence\n"), "must hold an object"


def _deep_json(tmp_path):
    return _write(tmp_path, "deep.json", "[" * 200_000 + "]" * 200_000), "nests too deeply"


def _deep_but_parsable_json(tmp_path):  # under Python's recursion limit but past rft's nesting limit
    return _write(tmp_path, "deep2.json", '{"type": "string_check", "x": ' + "[" * 500 + "]" * 500 + "}"), "nests more than"


def _deep_yaml(tmp_path):
    return _write(tmp_path, "deep.yaml", "type: " + "[" * 200_000 + "\n"), "nests too deeply"


def _invalid_yaml(tmp_path):
    return _write(tmp_path, "bad.yaml", "type: string_check\n  input: [unclosed\n"), "not valid YAML"


def _huge_line(tmp_path):  # 8 MB on one line: one short message, not the line echoed back
    return _write(tmp_path, "huge.json", '{"type": "string_check", "name": ' + "x" * 8_000_000 + "}"), "not valid JSON"


def _over_the_size_limit(tmp_path):  # sparse: 65 MB on disk costs nothing, refused by size before reading
    with open(tmp_path / "enormous.json", "wb") as f:
        f.truncate(65 * 1024 * 1024)
    return "enormous.json", "the limit is"


def _name_too_long(tmp_path):
    return "g" * 300 + ".json", "longer than the file system allows"


CASES = [_missing, _directory, _binary, _not_utf8, _a_list, _wrapped_list, _a_string_in_yaml, _deep_json,
         _deep_but_parsable_json, _deep_yaml, _invalid_yaml, _huge_line, _over_the_size_limit, _name_too_long]


def _check_one_line(r, name: str) -> None:
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and name[:60] in lines[0], lines[:3]
    assert len(lines) <= 2 and all(ln.startswith("hint:") for ln in lines[1:]), lines[:5]  # one line (and a hint)
    assert len(lines[0]) < 600, len(lines[0])


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_grader_files_through_the_cli(tmp_path, make):
    name, needle = make(tmp_path)
    for args in (["grader", "validate", name], ["grader", "run", name, "--sample", "x", "--item", "{}"]):
        r = run_rft(*args, cwd=tmp_path)
        assert_user_error(r, needle)
        _check_one_line(r, name)


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__.strip("_"))
def test_load_grader_file_raises_only_rft_errors(tmp_path, make, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, needle = make(tmp_path)
    with pytest.raises(RftError) as ei:
        load_grader_file(name)
    assert needle in str(ei.value) and name[:60] in str(ei.value)


@pytest.mark.parametrize("name, content", [
    ("bare.json", json.dumps(GOOD)),
    ("wrapped.json", json.dumps({"grader": GOOD})),  # the graders API request shape
    ("grader.yaml", "type: string_check\nname: exact\ninput: '{{sample.output_text}}'\nreference: x\noperation: eq\n"),
    ("bom.json", "\ufeff" + json.dumps(GOOD)),
])
def test_good_grader_files_still_work(tmp_path, name, content):
    _write(tmp_path, name, content)
    assert load_grader_file(str(tmp_path / name)) == GOOD
    r = run_rft("grader", "run", name, "--sample", "x", "--item", "{}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reward"] == 1.0


def test_endpoint_to_a_private_address_is_refused_by_the_cli(tmp_path):
    for host in ("169.254.169.254", "127.0.0.1:9", "[::1]", "localhost"):
        _write(tmp_path, "ep.json", json.dumps({"type": "endpoint", "url": f"http://{host}/grade"}))
        for args in (["grader", "validate", "ep.json"], ["grader", "run", "ep.json", "--sample", "x", "--item", "{}"]):
            r = run_rft(*args, cwd=tmp_path)
            assert_user_error(r, "ep.json", "may not reach", "rft.network.allow_private_hosts")


def test_float32_overflowing_python_score_is_unscored_through_the_cli(tmp_path):
    spec = {"type": "python", "name": "huge", "source": "def grade(sample, item):\n    return 1e39\n"}
    _write(tmp_path, "py.json", json.dumps(spec))
    r = run_rft("grader", "run", "py.json", "--sample", "x", "--item", "{}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["reward"] == 0.0 and out["metadata"]["scored"] is False  # OpenAI's shape: a number, flag set
    errors = out["metadata"]["errors"]
    assert errors["python_grader_runtime_error"] is True and "float32" in errors["python_grader_runtime_error_details"]
