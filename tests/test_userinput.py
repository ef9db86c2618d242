"""rft.userinput: every way a user-supplied file or output path can be wrong is one RftError naming the file."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from rft.errors import RftError
from rft.userinput import (MAX_DEPTH, check_output_dir, check_output_file, load_json_file, load_mapping_file,
                           parse_json, parse_yaml, read_user_text)


def _err(fn, *a, **k) -> str:
    with pytest.raises(RftError) as ei:
        fn(*a, **k)
    return str(ei.value)


def test_missing_directory_and_long_name(tmp_path):
    assert "not found" in _err(read_user_text, tmp_path / "nope.json", "grader")
    assert "is a directory" in _err(read_user_text, tmp_path, "grader")
    assert "longer than the file system allows" in _err(read_user_text, tmp_path / ("x" * 300), "grader")
    f = tmp_path / "f"
    f.write_text("{}")
    assert "a part of the path is a file" in _err(read_user_text, f / "inside.json", "grader")


def test_binary_non_utf8_and_size(tmp_path):
    b = tmp_path / "b.json"
    b.write_bytes(b"{\n\x00\x01\x02")
    assert "b.json:2" in _err(read_user_text, b, "job spec") and "binary" in _err(read_user_text, b, "job spec")
    latin = tmp_path / "l.yaml"
    latin.write_bytes("a: 1\nname: caf\xe9\n".encode("latin-1"))
    msg = _err(read_user_text, latin, "job spec")
    assert "l.yaml:2" in msg and "UTF-8" in msg and "column 10" in msg
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2000)
    assert "limit" in _err(read_user_text, big, "grader", max_bytes=1000)
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf{\"a\": 1}")
    assert load_json_file(bom, "grader") == {"a": 1}


def test_json_kinds_depth_and_constants(tmp_path):
    assert "must be an object" in _err(parse_json, "[1, 2]", "g.json", "grader", expect=dict)
    assert "nests" in _err(parse_json, "[" * 100_000 + "]" * 100_000, "g.json", "grader")
    assert "nests more than" in _err(parse_json, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "g.json", "grader")
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, "g.json", "grader") is not None
    assert "NaN" in _err(parse_json, '{"a": NaN}', "g.json", "grader")
    assert "duplicate key" in _err(parse_json, '{"a": 1, "a": 2}', "g.json", "grader")
    msg = _err(parse_json, '{"a": 1,\n "b": }', "g.json", "grader")
    assert msg.startswith("g.json:2:"), msg
    assert "g.json:7:" in _err(parse_json, "{", "g.json", "data row", line=7)


def test_yaml_errors_alias_bomb_and_top_level(tmp_path):
    assert "j.yaml:2" in _err(parse_yaml, "a: 1\nb: c: d\n", "j.yaml", "job spec")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    assert "aliases" in _err(parse_yaml, bomb, "j.yaml", "job spec")
    assert "nests" in _err(parse_yaml, "[" * 5000 + "]" * 5000, "j.yaml", "job spec")
    assert "nests" in _err(parse_yaml, "a: &a [*a]\n", "j.yaml", "job spec")  # a cycle
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    assert "mapping" in _err(load_mapping_file, p, "job spec")
    p.write_text("1: a\n")
    assert "not a string" in _err(load_mapping_file, p, "job spec")
    p.write_text("!!python/object:os.system {}\n")
    assert "not valid YAML" in _err(load_mapping_file, p, "job spec")


def test_output_paths_never_clobber(tmp_path):
    assert "is a directory" in _err(check_output_file, tmp_path, "output")
    f = tmp_path / "file"
    f.write_text("keep")
    assert "its folder" in _err(check_output_file, f / "out.jsonl", "output")
    assert "already exists" in _err(check_output_file, f, "output", overwrite=False)
    assert "is a file" in _err(check_output_dir, f, "run folder")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep")
    assert "not empty" in _err(check_output_dir, full, "run folder")
    assert (full / "x").read_text() == "keep" and f.read_text() == "keep"
    assert "is a file" in _err(check_output_dir, f / "sub" / "run", "run folder")
    assert "longer than" in _err(check_output_dir, tmp_path / ("y" * 300), "run folder")
    assert check_output_dir(tmp_path / "new" / "run", "run folder") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()  # checking writes nothing


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_bytes_only_rfterror(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("fz") / "x.yaml"
    p.write_bytes(data)
    for fn in (load_mapping_file, load_json_file):
        try:
            fn(p, "job spec")
        except RftError:
            pass
