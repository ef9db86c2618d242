"""Property-based tests of the batch-input validator (`rft.batch.validate.validate_file`).

Hypothesis writes input files from generated lines: valid requests, requests with a field of the wrong kind,
NaN / Infinity / 1e999 and integers of thousands of digits, nesting from a few levels to far past the
recursion limit, odd Unicode (lone surrogates, NUL-free control characters, astral planes, a byte-order
mark), invalid UTF-8, duplicate custom_ids, blank lines and raw garbage. The properties: the only exception
that escapes is `RftError`, every problem it carries names the file and a line inside it, and a file of valid
requests with unique custom_ids passes, giving back every request in order.
How to run: `.venv/bin/python -m pytest -q tests/batch/test_fuzz_batch_validate.py` (about 10 s).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rft.batch.validate import validate_file
from rft.errors import RftError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
odd_text = st.text(max_size=20) | st.sampled_from(["\ud800", "a\udfffb", "\U0001f600", "\u202e", "\ufeff", "\x1b[31m"])
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | odd_text | st.sampled_from([10**400, -(10**300), 1e308, 2**63]))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(odd_text, kids, max_size=3),
                           max_leaves=12)


@st.composite
def valid_body(draw) -> dict:
    roles = draw(st.lists(st.sampled_from(["system", "user", "assistant"]), min_size=0, max_size=2))
    msgs = [{"role": r, "content": draw(text)} for r in roles] + [{"role": "user", "content": draw(text)}]
    body: dict = {"messages": msgs}
    if draw(st.booleans()):
        body["max_tokens"] = draw(st.integers(1, 4096))
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0.0, 2.0))
    if draw(st.booleans()):
        body["top_p"] = draw(st.floats(0.0, 1.0))
    return body


def _line(cid, body) -> str:
    return json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body},
                      ensure_ascii=False)


@st.composite
def hostile_line(draw) -> bytes:
    """One line of a batch file, most of them broken in one way."""
    kind = draw(st.sampled_from(["valid", "wrong_kind", "json_value", "nan", "deep", "very_deep", "huge_int",
                                 "surrogate", "bad_utf8", "garbage", "blank", "dup"]))
    cid = draw(st.sampled_from(["a", "b", "dup"]) | text)
    good = {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": draw(valid_body())}
    if kind == "valid" or kind == "dup":
        return _line("dup" if kind == "dup" else cid, good["body"]).encode()
    if kind == "wrong_kind":  # one field (or a message, or the body's field) replaced by any JSON value
        where = draw(st.sampled_from(["custom_id", "method", "url", "body", "messages", "message", "max_tokens",
                                      "temperature", "stop", "stream", "model", "n", "seed"]))
        value = draw(json_values)
        if where in ("custom_id", "method", "url", "body"):
            good[where] = value
        elif where == "message":
            good["body"]["messages"][0] = value
        else:
            good["body"][where] = value
        return json.dumps(good, ensure_ascii=draw(st.booleans()), allow_nan=True).encode("utf-8", "surrogatepass")
    if kind == "json_value":  # a line that is any JSON value at all (a list, a number, a string, ...)
        return json.dumps(draw(json_values), allow_nan=True).encode()
    if kind == "nan":
        const = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]))
        return _line(cid, good["body"]).replace('"messages"', f'"temperature": {const}, "messages"', 1).encode()
    if kind in ("deep", "very_deep"):
        n = draw(st.integers(50, 120)) if kind == "deep" else draw(st.integers(2_000, 60_000))
        inner = draw(st.sampled_from(["[", '{"k":']))
        close = "]" if inner == "[" else "}"
        return _line(cid, good["body"]).replace('"messages"', f'"x": {inner * n}1{close * n}, "messages"', 1).encode()
    if kind == "huge_int":
        digits = draw(st.sampled_from([20, 400, 4301, 5000]))
        return _line(cid, good["body"] | {"max_tokens": int("9" * digits) if digits <= 4300 else 1}).replace(
            '"max_tokens": 1', '"max_tokens": ' + "9" * digits).encode()
    if kind == "surrogate":
        return _line(draw(st.sampled_from(["\ud800", cid])), good["body"] | {
            "messages": [{"role": "user", "content": draw(st.sampled_from(["\udc00x", "ok"]))}],
            draw(st.sampled_from(["model", "\ud83d"])): "m"}).encode("utf-8", "surrogatepass")
    if kind == "bad_utf8":
        raw = _line(cid, good["body"]).encode()
        cut = draw(st.integers(0, len(raw)))
        return raw[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe9t\xe9"])) + raw[cut:]
    if kind == "garbage":
        return draw(st.binary(max_size=40)).replace(b"\n", b" ").replace(b"\x00", b"")
    return b"   "


def _check(lines: list[bytes], local: bool, bom: bool = False) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")
        try:
            validate_file(path, local=local)
        except RftError as e:
            n = len(lines)
            assert e.problems or str(path) in e.message
            for p in e.problems:
                assert p.file == str(path)
                assert p.line is None or 1 <= p.line <= n
            str(e).encode("utf-8")  # printable: no lone surrogate echoed back into the message


@settings(max_examples=150, **SETTINGS)
@given(st.lists(hostile_line(), min_size=1, max_size=6), st.booleans(), st.booleans())
def test_only_rft_error_escapes(lines, local, bom):
    _check(lines, local, bom)


@settings(max_examples=60, **SETTINGS)
@given(st.lists(valid_body(), min_size=1, max_size=8), st.booleans(), st.booleans())
def test_valid_requests_pass_in_order(bodies, local, blank_lines):
    ids = [f"req-{i}" for i in range(len(bodies))]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        sep = "\n\n  \n" if blank_lines else "\n"
        path.write_text(sep.join(_line(c, b) for c, b in zip(ids, bodies)) + "\n", encoding="utf-8")
        reqs, model = validate_file(path, local=local)
    assert [r.custom_id for r in reqs] == ids
    assert [r.body for r in reqs] == bodies
    assert model is None


@settings(max_examples=40, **SETTINGS)
@given(st.lists(valid_body(), min_size=2, max_size=5), st.data())
def test_a_duplicate_custom_id_is_always_caught(bodies, data):
    ids = [f"r{i}" for i in range(len(bodies))]
    j = data.draw(st.integers(1, len(ids) - 1))
    ids[j] = ids[data.draw(st.integers(0, j - 1))]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        path.write_text("\n".join(_line(c, b) for c, b in zip(ids, bodies)) + "\n", encoding="utf-8")
        try:
            validate_file(path, local=False)
        except RftError as e:
            assert [(p.line, p.field) for p in e.problems] == [(j + 1, "custom_id")]
        else:
            raise AssertionError("a duplicate custom_id passed")
