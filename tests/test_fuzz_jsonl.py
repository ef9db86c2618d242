"""Property-based tests of the JSONL reader (`rft.data.validate_file`, `rft.data.load_jsonl`).

What: hypothesis writes generated files (raw bytes; lines of JSON values of every kind; mixes of valid rows with
BOMs, NUL bytes, invalid UTF-8, deep nesting, huge numbers, duplicate keys and NaN) and checks the reader's
contract: `validate_file` never raises and names a file line for every line problem; `load_jsonl` raises nothing
but `RftError`, and loads exactly when `validate_file` finds no problem, with the same rows.
Simplified: files stay small (a few KB) so the suite stays fast; size limits are tested in test_cli_files.py.
How to run: `python -m pytest -q tests/test_fuzz_jsonl.py`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rft.data import load_jsonl, validate_file
from rft.errors import RftError

ROW = {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "robot", 1]),
                                           "content": st.text(max_size=10) | json_values}), max_size=3)
row_like = st.fixed_dictionaries({"messages": messages}, optional={"answer": json_values, "tools": json_values})
hostile_lines = st.sampled_from([
    b"", b"   ", b"\xef\xbb\xbf" + json.dumps(ROW).encode(), b"\x00", b"\xff\xfe", b"\xc3", b"[" * 5000, b"{" * 3000,
    b"[" * 70 + b"]" * 70, b'{"a": 1, "a": 2}', b'{"a": NaN}', b'{"a": 1e999}', b"-" + b"9" * 5000,
    b'"\\ud800"', b'{"messages": [{"role": "user", "content": "\\udfff"}]}', b"null", b"\r", b"{}",
])
line = (json_values.map(lambda v: json.dumps(v).encode()) | row_like.map(lambda v: json.dumps(v).encode())
        | st.just(json.dumps(ROW).encode()) | hostile_lines | st.binary(max_size=30))
files = st.lists(line, max_size=8).map(b"\n".join) | st.binary(max_size=200)


def _check(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "data.jsonl"
        p.write_bytes(data)
        report = validate_file(p)  # must not raise at all
        assert all(q.file == str(p) for q in report.problems)
        try:
            ds = load_jsonl(p)
        except RftError as e:
            assert report.problems, "load_jsonl refused a file validate_file accepted"
            assert str(p) in str(e)
        else:
            assert not report.problems and len(ds) == report.n_rows and ds.sha256 == report.sha256
            assert all(isinstance(r, dict) and r["messages"] for r in ds.rows)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files)
def test_only_rft_error_escapes(data):
    _check(data)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(65, 200_000), st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
def test_deep_nesting_at_any_line_is_a_problem_on_that_line(good_before, depth, brackets):
    """Well-formed but deeper than MAX_DEPTH (64): below Python's recursion limit check_depth refuses it, above
    it the parser's RecursionError is caught; either way one problem on that line."""
    opener, closer = brackets
    data = b"\n".join([json.dumps(ROW).encode()] * good_before + [opener * depth + b"1" + closer * depth])
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "deep.jsonl"
        p.write_bytes(data)
        report = validate_file(p)
    assert [q.line for q in report.problems] == [good_before + 1]
    assert "levels deep" in report.problems[0].message
