"""Tests for rft.data: JSONL validation, fingerprints, built-in datasets. Fast, no model.

Run: .venv/bin/python -m pytest tests/test_data.py -q
"""

from __future__ import annotations

import json

import pytest

from rft.data import (
    Dataset,
    fingerprint,
    list_builtins,
    load_dataset,
    load_jsonl,
    reasoning_gym_score,
    validate_file,
)
from rft.data.builtin import arithmetic_partition
from rft.data import jsonl
from rft.data.jsonl import MAX_FILE_BYTES, MAX_ROWS, check_row
from rft.data.reasoning_gym_tasks import json_safe
from rft.errors import RftError

GOOD = {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "answer": "4"}


def write(tmp_path, lines, name="data.jsonl") -> str:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


def where(report_or_error):
    return {(p.line, p.field) for p in report_or_error.problems}


# --- JSONL validation --------------------------------------------------------------------------------------


def test_good_file_loads_with_line_numbers_and_blank_lines_skipped(tmp_path):
    path = write(tmp_path, [json.dumps(GOOD), "", "   ", json.dumps({**GOOD, "answer": "5"}), ""])
    ds = load_jsonl(path)
    assert isinstance(ds, Dataset)
    assert len(ds) == 2
    assert ds.line_numbers == (1, 4)
    assert ds.rows[1]["answer"] == "5"
    assert ds.sha256 == fingerprint(ds.rows)
    assert ds.source == str((tmp_path / "data.jsonl").resolve())
    report = validate_file(path)
    assert report.ok and report.n_rows == 2 and report.sha256 == ds.sha256


def test_every_bad_line_is_reported_with_line_and_field(tmp_path):
    lines = [
        json.dumps(GOOD),  # 1 ok
        '{"messages": [{"role": "user", "content": "hi"}], "answer": ',  # 2 invalid JSON
        "[1, 2]",  # 3 not an object
        json.dumps({"answer": "4"}),  # 4 no messages
        json.dumps({"messages": []}),  # 5 empty messages
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"},
                                 {"role": "user", "content": 3}]}),  # 6 bad role at [1], bad content at [2]
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),  # 7
        json.dumps({"messages": "hello"}),  # 8 messages not a list
        json.dumps({**GOOD, "tools": {"name": "x"}}),  # 9 tools not a list
        json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),  # 10 bad part
        json.dumps({"messages": [{"content": "no role"}]}),  # 11 missing role
        '{"answer": "1", "answer": "2", "messages": []}',  # 12 duplicate key
        "",  # 13 blank: fine
        json.dumps({**GOOD, "tools": []}),  # 14 ok
    ]
    path = write(tmp_path, lines)
    report = validate_file(path)
    assert report.n_rows == 13
    assert report.sha256 is None and not report.ok
    assert where(report) == {
        (2, None),
        (3, None),
        (4, "messages"),
        (5, "messages"),
        (6, "messages[1].role"),
        (6, "messages[2].content"),
        (7, "messages[1].role"),
        (8, "messages"),
        (9, "tools"),
        (10, "messages[0].content[0].text"),
        (11, "messages[0].role"),
        (12, None),
    }
    assert all(p.file == path for p in report.problems)
    by_line = {p.line: p for p in report.problems}
    assert "invalid JSON" in by_line[2].message and "column" in by_line[2].message
    role6 = [p for p in report.problems if p.line == 6 and p.field == "messages[1].role"]
    assert '"robot"' in role6[0].message and "expected one of" in role6[0].message
    assert "last message must have role 'user'" in by_line[7].message
    assert "duplicate key 'answer'" in by_line[12].message

    with pytest.raises(RftError) as exc:
        load_jsonl(path)
    assert exc.value.message == f"{path}: 12 problem(s) in the data file"
    assert where(exc.value) == where(report)
    assert f"{path}:7: field 'messages[1].role'" in str(exc.value)


def test_invalid_utf8_reports_its_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"messages": "\xff"}\n')
    report = validate_file(p)
    assert [(q.line, q.field) for q in report.problems] == [(2, None)]
    assert "UTF-8" in report.problems[0].message


def test_empty_file(tmp_path):
    for content in ["", "\n\n  \n"]:
        p = tmp_path / "empty.jsonl"
        p.write_text(content)
        report = validate_file(p)
        assert report.n_rows == 0
        assert len(report.problems) == 1 and "no rows" in report.problems[0].message
        with pytest.raises(RftError, match="1 problem"):
            load_jsonl(p)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.jsonl")
    report = validate_file(path)
    assert len(report.problems) == 1
    assert report.problems[0].file == path and "not found" in report.problems[0].message
    with pytest.raises(RftError) as exc:
        load_dataset(path)
    assert exc.value.hint and "current directory" in exc.value.hint


def test_binary_file_is_one_problem_at_its_first_nul(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_bytes(json.dumps(GOOD).encode() + b"\n\x1f\x8b\x08\x00" + bytes(range(256)) * 20)
    report = validate_file(p)
    assert [(q.line, q.field) for q in report.problems] == [(2, None)] and "binary" in report.problems[0].message


def test_too_deep_non_finite_and_huge_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 150_000)
    path = write(tmp_path, [json.dumps(GOOD), "[" * 100_000, json.dumps({**GOOD, "x": [[[[]]]]}),
                            "[" * 65 + "]" * 65, '{"messages": [], "x": 1e999}', json.dumps({**GOOD, "pad": "a" * 150_000})])
    report = validate_file(path)
    assert [q.line for q in report.problems] == [2, 4, 5, 6]
    msgs = [q.message for q in report.problems]
    assert "levels deep" in msgs[0] and "levels deep" in msgs[1] and "1e999 is out of range" in msgs[2]
    assert "the limit is 150,000 bytes" in msgs[3]


def test_file_over_the_size_limit_and_unreadable_paths(tmp_path):
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: refused from its size, nothing read
    for path, needle in [(big, "the limit is"), (tmp_path, "is a directory"),
                         (tmp_path / ("n" * 300), "longer than the file system allows")]:
        report = validate_file(path)
        assert len(report.problems) == 1 and needle in report.problems[0].message, report.problems
        assert report.problems[0].file == str(path) and str(path)[:50] not in report.problems[0].message
        with pytest.raises(RftError, match="1 problem"):
            load_jsonl(path)


def test_too_many_rows(tmp_path):
    line = json.dumps(GOOD)
    path = write(tmp_path, [line] * (MAX_ROWS + 2))
    report = validate_file(path)
    assert report.n_rows == MAX_ROWS + 2
    assert [(p.line, p.field) for p in report.problems] == [(MAX_ROWS + 1, None)]
    assert "too many rows" in report.problems[0].message


def test_load_dataset_file_n_keeps_first_rows(tmp_path):
    path = write(tmp_path, [json.dumps({**GOOD, "answer": str(i)}) for i in range(5)])
    ds = load_dataset(path, split="validation", n=2, seed=9)
    assert [r["answer"] for r in ds.rows] == ["0", "1"]
    assert ds.line_numbers == (1, 2)
    assert ds.sha256 == fingerprint(ds.rows) != load_dataset(path).sha256


# --- fingerprint -------------------------------------------------------------------------------------------


def test_fingerprint_ignores_formatting_but_not_content(tmp_path):
    row = {"messages": [{"role": "user", "content": "Qué es 2+2?"}], "answer": "4", "meta": {"x": 1, "y": [1, 2]}}
    a = load_jsonl(write(tmp_path, [json.dumps(row)], "a.jsonl"))
    reordered = '{ "meta" : {"y":[1,2],"x":1},\t"answer":"4", "messages":[{"content":"Qu\\u00e9 es 2+2?","role":"user"}] }'
    b = load_jsonl(write(tmp_path, ["", reordered, ""], "b.jsonl"))
    assert a.sha256 == b.sha256
    changed = {**row, "answer": "5"}
    c = load_jsonl(write(tmp_path, [json.dumps(changed)], "c.jsonl"))
    assert c.sha256 != a.sha256
    assert fingerprint([row, row]) != fingerprint([row])
    assert fingerprint([row, changed]) != fingerprint([changed, row])
    assert len(a.sha256) == 64


# --- builtin:arithmetic ------------------------------------------------------------------------------------


def _question_key(row):
    return (row["a"], row["op"], row["b"])


def test_arithmetic_partition_is_disjoint_and_complete():
    train, val = arithmetic_partition()
    assert len(train) == len(val) == 100
    assert not set(train) & set(val)
    assert len(set(train) | set(val)) == 200
    # a op b and b op a stay on the same side
    assert all((b, op, a) in set(train) for (a, op, b) in train)


def test_arithmetic_validation_never_contains_training_questions():
    train = load_dataset("builtin:arithmetic", split="train", n=5000, seed=123)
    val = load_dataset("builtin:arithmetic", split="validation")
    assert len(val) == 200
    val_prompts = {r["messages"][0]["content"] for r in val.rows}
    assert len(val_prompts) == 200  # all distinct
    train_prompts = {r["messages"][0]["content"] for r in train.rows}
    assert not train_prompts & val_prompts
    assert not {_question_key(r) for r in train.rows} & {_question_key(r) for r in val.rows}
    assert len(train_prompts) == 200  # 100 triples x 2 phrasings, all drawn at n=5000


def test_arithmetic_answers_and_format():
    for split in ("train", "validation"):
        ds = load_dataset("builtin:arithmetic", split=split)
        for i, r in enumerate(ds.rows):
            expected = r["a"] + r["b"] if r["op"] == "+" else r["a"] * r["b"]
            assert r["answer"] == str(expected)
            assert f"{r['a']} {r['op']} {r['b']}" in r["messages"][0]["content"]
            problems = []
            check_row(r, lambda m, f: problems.append((m, f)))
            assert problems == []
        assert ds.line_numbers == tuple(range(1, len(ds) + 1))
    assert len(load_dataset("builtin:arithmetic")) == 2000


def test_arithmetic_is_deterministic_and_options_work():
    a = load_dataset("builtin:arithmetic", n=50, seed=7)
    b = load_dataset("builtin:arithmetic?n=50&seed=7")
    assert a.rows == b.rows and a.sha256 == b.sha256
    assert load_dataset("builtin:arithmetic", n=50, seed=8).sha256 != a.sha256
    # query options override keyword arguments
    c = load_dataset("builtin:arithmetic?seed=7&n=50", n=10, seed=1)
    assert c.sha256 == a.sha256
    assert c.name == "builtin:arithmetic?seed=7&n=50"
    assert c.source == "builtin:arithmetic?split=train&n=50&seed=7"
    # train and validation have separate default seeds and fixed outputs
    v1 = load_dataset("builtin:arithmetic?split=val")
    v2 = load_dataset("builtin:arithmetic", split="test")
    assert v1.rows == v2.rows and v1.source == "builtin:arithmetic?split=validation&n=200&seed=1"
    first = load_dataset("builtin:arithmetic", split="validation", n=20)
    assert first.rows == v1.rows[:20]
    big = load_dataset("builtin:arithmetic", split="validation", n=300)
    assert len(big) == 300


# --- builtin:reasoning_gym ---------------------------------------------------------------------------------


def test_reasoning_gym_rows_and_scoring():
    ds = load_dataset("builtin:reasoning_gym/leg_counting?n=5&seed=3")
    assert len(ds) == 5 and ds.source == "builtin:reasoning_gym/leg_counting?split=train&n=5&seed=3"
    for row in ds.rows:
        assert row["rg_task"] == "leg_counting"
        assert row["messages"][0]["role"] == "user" and row["messages"][0]["content"] == row["rg_entry"]["question"]
        assert isinstance(row["answer"], str) and row["answer"] == row["rg_entry"]["answer"]
        assert json.loads(json.dumps(row)) == row  # JSON round-trippable
        assert reasoning_gym_score("leg_counting", row["answer"], json.loads(json.dumps(row["rg_entry"]))) == 1.0
        assert reasoning_gym_score("leg_counting", str(int(row["answer"]) + 1), row["rg_entry"]) < 1.0
    assert load_dataset("builtin:reasoning_gym/leg_counting", n=5, seed=3).rows == ds.rows


def test_reasoning_gym_splits_do_not_share_items():
    # reasoning-gym seeds item i with seed + i, so naive seeds 0 and 1 would share all but one item.
    train = load_dataset("builtin:reasoning_gym/basic_arithmetic", split="train", n=50, seed=0)
    val = load_dataset("builtin:reasoning_gym/basic_arithmetic", split="validation", n=50, seed=1)
    assert train.rows[0]["answer"] and len(val) == 50
    assert not {r["messages"][0]["content"] for r in train.rows} & {r["messages"][0]["content"] for r in val.rows}
    assert len(load_dataset("builtin:reasoning_gym/basic_arithmetic", split="validation")) == 200


def test_reasoning_gym_tuple_metadata_survives_json():
    # arc grids are tuples in metadata; the scorer compares against them, JSON turns them into lists.
    ds = load_dataset("builtin:reasoning_gym/rearc?n=2&seed=5")
    for row in ds.rows:
        entry = json.loads(json.dumps(row["rg_entry"]))
        assert reasoning_gym_score("rearc", row["answer"], entry) == 1.0


def test_json_safe():
    from fractions import Fraction

    x = {1: (1, 2), "s": {3}, "f": Fraction(1, 2), "nan": float("nan"), "ok": [True, None, 1.5]}
    safe = json_safe(x)
    assert safe == {"1": [1, 2], "s": [3], "f": "1/2", "nan": "nan", "ok": [True, None, 1.5]}
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe


# --- names -------------------------------------------------------------------------------------------------


def test_list_builtins():
    names = list_builtins()
    assert "builtin:arithmetic" in names
    assert "builtin:reasoning_gym/leg_counting" in names
    assert "builtin:reasoning_gym/composite" not in names


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("builtin:arithmetc", "did you mean 'arithmetic'"),
        ("builtin:reasoning_gym/leg_countin", "leg_counting"),
        ("builtin:reasoning_gym/arithmetic", "basic_arithmetic"),
        ("builtin:reasoning_gym", "builtin:reasoning_gym/<task>"),
        ("builtin:arithmetic?nn=3", "did you mean 'n'"),
        ("builtin:arithmetic?n=x", "must be an integer"),
        ("builtin:arithmetic?n=0", "at least 1"),
        ("builtin:arithmetic?split=tran", "did you mean 'train'"),
        ("builtin:arithmetic/foo", "takes no '/<task>'"),
    ],
)
def test_bad_builtin_references(ref, expected):
    with pytest.raises(RftError) as exc:
        load_dataset(ref)
    assert expected in str(exc.value)


def test_score_unknown_task():
    with pytest.raises(RftError, match="leg_counting"):
        reasoning_gym_score("leg_countng", "1", {})
