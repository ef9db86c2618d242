"""Catalogue A3 (pickle safety) and A4 (safetensors abuse).

A3: pickle files whose `__reduce__` creates a marker file, placed where rft might load them (a base model
directory with only pickle weights, an adapter, a checkpoint or training state whose safetensors file is really
a pickle with a matching manifest), loaded through `rft eval` and resume: the marker never appears and the
loader refuses with a clear message. A4: malformed safetensors headers are refused before any library parses
them, with an RftError naming the file, without reading more than the header.

Run: `.venv/bin/python -m pytest -q tests/test_artifacts_hostile.py`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
import tracemalloc
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from rft.errors import RftError
from rft.hashing import MAX_SAFETENSORS_HEADER, MAX_SAFETENSORS_TENSORS, check_safetensors, file_entries
from tests.clitools import assert_user_error, run_rft

SRC = Path(__file__).resolve().parents[1] / "src" / "rft"


# --------------------------------------------------------------------------------------------------- A3
class Evil:
    """Unpickling this calls open(marker, "w"): the file appearing means pickle code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_pt(path: Path, marker: Path) -> Path:
    torch.save({"weight": Evil(marker)}, path)
    return path


def test_the_crafted_pickle_really_runs_code_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "marker"
    torch.load(_evil_pt(tmp_path / "x.pt", marker), weights_only=False)  # what rft must never do
    assert marker.exists()
    marker.unlink()
    with pytest.raises(Exception):
        torch.load(tmp_path / "x.pt", weights_only=True)
    assert not marker.exists()


def test_no_unsafe_deserialisation_in_the_codebase():
    bad = []
    for p in SRC.rglob("*.py"):
        text = p.read_text()
        for pat in (r"\btorch\.load\(", r"\bpickle\.loads?\(", r"weights_only\s*=\s*False", r"\bimport pickle\b",
                    r"\bjoblib\.load\(", r"\bdill\b"):
            if re.search(pat, text):
                bad.append(f"{p.relative_to(SRC)}: {pat}")
    assert not bad, bad


def _grader(tmp_path: Path) -> Path:
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
                             "reference": "{{item.answer}}", "operation": "eq"}))
    return g


def _eval(tmp_path: Path, model: Path):
    return run_rft("eval", str(model), "--data", "builtin:arithmetic?n=4", "--grader", str(_grader(tmp_path)),
                   "-o", str(tmp_path / "eval_out"))


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            shutil.copy(f, dst / f.name)


def test_base_model_with_only_pickle_weights_is_refused(tiny_model_dir, tmp_path):
    d = tmp_path / "pickle_model"
    d.mkdir()
    shutil.copy(tiny_model_dir / "config.json", d)
    _copy_tokenizer(tiny_model_dir, d)
    marker = tmp_path / "marker"
    _evil_pt(d / "pytorch_model.bin", marker)
    _evil_pt(d / "model.pt", marker)
    r = _eval(tmp_path, d)
    assert_user_error(r, "has no *.safetensors weights", "pytorch_model.bin", "rft only loads safetensors")
    assert not marker.exists()


def test_adapter_stored_as_pickle_is_refused(tiny_model_dir, tmp_path):
    d = tmp_path / "adapter_model_dir"
    shutil.copytree(tiny_model_dir, d)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(d),
                                                       "r": 4, "target_modules": ["q_proj"]}))
    marker = tmp_path / "marker"
    _evil_pt(d / "adapter_model.bin", marker)
    r = _eval(tmp_path, d)
    assert_user_error(r, "adapter without adapter_model.safetensors", "adapter_model.bin")
    assert not marker.exists()


def _rewrite_manifest(d: Path) -> None:
    """What an attacker who can write the folder can also do: make the manifest match the swapped file."""
    m = json.loads((d / "manifest.json").read_text())
    m["files"] = file_entries(d, list(m["files"]))
    (d / "manifest.json").write_text(json.dumps(m))


def test_checkpoint_whose_weights_are_a_pickle_is_refused_by_rft_eval(tiny_model_dir, tmp_path):
    from rft.models import ResolvedModel, load
    from rft.train.checkpoint import save_model_checkpoint

    model, tok = load(ResolvedModel(str(tiny_model_dir), tiny_model_dir, "directory"))
    ck = tmp_path / "ckpt"
    save_model_checkpoint(model, tok, ck, {"step": 1})
    marker = tmp_path / "marker"
    _evil_pt(ck / "model.safetensors", marker)  # a .pt under the safetensors name
    _rewrite_manifest(ck)
    r = _eval(tmp_path, ck)
    assert_user_error(r, str(ck / "model.safetensors"), "not a valid safetensors file")
    assert not marker.exists()


@pytest.mark.parametrize("victim", ["trainable.safetensors", "optimizer.safetensors", "rng.safetensors"])
def test_training_state_holding_a_pickle_is_refused_on_resume(tiny_model_dir, tmp_path, victim):
    from rft.models import ResolvedModel, load
    from rft.train.state import find_latest_state, load_state, save_state

    model, _ = load(ResolvedModel(str(tiny_model_dir), tiny_model_dir, "directory"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    root = tmp_path / "state"
    d = save_state(root, 1, model=model, opt=opt, trainer={"loop": {"step": 1}})
    marker = tmp_path / "marker"
    _evil_pt(d / victim, marker)
    _evil_pt(d / "optimizer.pt", marker)  # a stray .pt beside the state is never read
    (d / "trainer_state.pkl").write_bytes(pickle.dumps(Evil(marker)))
    _rewrite_manifest(d)
    warnings = []
    assert find_latest_state(root, warn=warnings.append) is None  # the resume path: refused, reported
    assert any("not a valid safetensors file" in w and victim in w for w in warnings), warnings
    with pytest.raises(RftError, match="not a valid safetensors file"):
        load_state(d, model=model, opt=opt)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------- A4
def _st_file(path: Path, header: dict | bytes, data: bytes = b"", declared: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if declared is None else declared) + raw + data)
    return path


def _entry(dtype="F32", shape=(2,), offs=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offs)}


def test_a_real_safetensors_file_passes(tmp_path):
    p = tmp_path / "ok.safetensors"
    save_file({"a": torch.zeros(3, 2), "b": torch.ones(5, dtype=torch.bfloat16), "c": torch.zeros(0)}, str(p),
              metadata={"format": "pt"})
    assert set(check_safetensors(p)) == {"a", "b", "c"}


CASES = {
    "header_over_100MB": (lambda p: _st_file(p, b"{}", declared=200 * 1024 * 1024), "the header declares"),
    "header_past_eof": (lambda p: _st_file(p, {"a": _entry()}, b"\0" * 8, declared=10_000), "has only"),
    "offsets_past_eof": (lambda p: _st_file(p, {"a": _entry(offs=(0, 4096), shape=(1024,))}, b"\0" * 8), "past the end"),
    "overlapping": (lambda p: _st_file(p, {"a": _entry(offs=(0, 8)), "b": _entry(offs=(4, 12))}, b"\0" * 12), "overlaps"),
    "dtype_shape_mismatch": (lambda p: _st_file(p, {"a": _entry(shape=(4,), offs=(0, 8))}, b"\0" * 8), "needs 16 bytes"),
    "unknown_dtype": (lambda p: _st_file(p, {"a": _entry(dtype="Q9")}, b"\0" * 8), "unknown dtype"),
    "negative_shape": (lambda p: _st_file(p, {"a": _entry(shape=(-2,))}, b"\0" * 8), "non-negative"),
    "reversed_offsets": (lambda p: _st_file(p, {"a": _entry(offs=(8, 0))}, b"\0" * 8), "begin <= end"),
    "hole": (lambda p: _st_file(p, {"a": _entry(offs=(8, 16))}, b"\0" * 16), "a hole"),
    "trailing_bytes": (lambda p: _st_file(p, {"a": _entry()}, b"\0" * 12), "cover 8 of 12"),
    "not_json": (lambda p: _st_file(p, b"\x80\x02}q\x00(X\x01"), "not JSON"),
    "json_list": (lambda p: _st_file(p, b"[1, 2]"), "not a JSON object"),
    "deep_nesting": (lambda p: _st_file(p, b"[" * 100_000 + b"]" * 100_000), "not JSON"),
    "bad_metadata": (lambda p: _st_file(p, {"__metadata__": {"a": 1}}), "__metadata__"),
    "too_short": (lambda p: p.write_bytes(b"\1\2\3") and p, "shorter than the 8-byte"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_safetensors_is_refused_naming_the_file(tmp_path, case):
    make, needle = CASES[case]
    p = tmp_path / "evil.safetensors"
    make(p)
    with pytest.raises(RftError) as ei:
        check_safetensors(p)
    assert str(p) in str(ei.value) and needle in str(ei.value), str(ei.value)


def test_100k_entries_and_a_huge_sparse_header_are_refused_within_a_memory_budget(tmp_path):
    n = 100_001
    header = b"{" + b",".join(b'"t%d":{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}' % (i, i, i + 1)
                              for i in range(n)) + b"}"
    many = _st_file(tmp_path / "many.safetensors", header, b"\0" * n)
    sparse = tmp_path / "sparse.safetensors"
    with open(sparse, "wb") as f:  # really 300 MB long (sparse), so only the bound refuses the 250 MB header
        f.write(struct.pack("<Q", 250 * 1024 * 1024))
        f.truncate(300 * 1024 * 1024)
    assert 250 * 1024 * 1024 > MAX_SAFETENSORS_HEADER and n > MAX_SAFETENSORS_TENSORS
    tracemalloc.start()
    try:
        for p, needle in ((many, "tensors in one file"), (sparse, "the header declares")):
            with pytest.raises(RftError, match=needle):
                check_safetensors(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(header) + (1 << 20), peak  # the header bytes, never parsed into 100k objects


def test_every_loader_checks_the_header(tiny_model_dir, tmp_path):
    """Model directories (resolve), checkpoints and states (verified_manifest) all refuse a bad header."""
    from rft.hashing import verified_manifest
    from rft.models import resolve

    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    _st_file(d / "model.safetensors", {"a": _entry(offs=(0, 1 << 40), shape=(1 << 38,))}, b"\0" * 8)
    with pytest.raises(RftError, match="past the end"):
        resolve(str(d))
    (d / "manifest.json").write_text(json.dumps({"files": file_entries(d, ["model.safetensors"])}))
    with pytest.raises(RftError, match="past the end"):
        verified_manifest(d, "checkpoint")


def test_cli_names_the_malformed_file(tiny_model_dir, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    _st_file(d / "model.safetensors", {"a": _entry(), "b": _entry(offs=(4, 12))}, b"\0" * 12)
    assert_user_error(_eval(tmp_path, d), str(d / "model.safetensors"), "overlaps")


_ENTRY = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "U8", "BF16", "X", 3]),
                                 "shape": st.lists(st.integers(-1, 4), max_size=3) | st.none(),
                                 "data_offsets": st.lists(st.integers(-1, 40), max_size=3)})


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _ENTRY | st.integers(), max_size=4), st.integers(0, 48),
       st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_fuzzed_headers_only_raise_rft_errors(tmp_path_factory, header, data_len, declared):
    p = _st_file(tmp_path_factory.mktemp("fz") / "f.safetensors", header, b"\0" * data_len, declared)
    try:
        check_safetensors(p)
    except RftError as e:
        assert str(p) in str(e)
    os.unlink(p)
