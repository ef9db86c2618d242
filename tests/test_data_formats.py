"""Data from Parquet files and from the local Hugging Face cache (`hf:`), checked like JSONL rows, and
`rft data list`. The HF cache folders are built here with pyarrow in the layout the `datasets` library leaves
(`<ns>___<name>/<config>/<version>/<hash>/<name>-<split>.arrow`, Arrow IPC stream files) and the hub's
(`datasets--<ns>--<name>/snapshots/<rev>/**.parquet`); `datasets` itself is not needed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rft.data import load_dataset, load_jsonl, validate_file
from rft.errors import RftError
from tests.clitools import assert_user_error, run_rft

ROWS = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1), "topic": "add",
         "meta": {"level": i}} for i in range(6)]
ROWS[2]["messages"].insert(0, {"role": "system", "content": "Be brief."})


def _jsonl(tmp_path: Path, rows) -> Path:
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _parquet(path: Path, rows) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_parquet_rows_equal_the_jsonl_rows_with_the_same_fingerprint(tmp_path):
    js = load_jsonl(_jsonl(tmp_path, ROWS))
    ds = load_dataset(str(_parquet(tmp_path / "train.parquet", ROWS)))
    assert list(ds.rows) == list(js.rows) and ds.sha256 == js.sha256
    assert ds.line_numbers == tuple(range(1, 7))
    # the magic bytes decide, not only the suffix
    (tmp_path / "data.bin").write_bytes((tmp_path / "train.parquet").read_bytes())
    assert load_dataset(str(tmp_path / "data.bin")).sha256 == js.sha256


def test_parquet_problems_name_file_row_and_field(tmp_path):
    schema = pa.schema([("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
                        ("score", pa.float64()), ("blob", pa.binary())])
    rows = [{"messages": [{"role": "user", "content": "ok"}], "score": 1.0, "blob": None},
            {"messages": [{"role": "bot", "content": "x"}], "score": 1.0, "blob": None},
            {"messages": [{"role": "user", "content": "x"}], "score": float("nan"), "blob": None},
            {"messages": [{"role": "user", "content": "x"}], "score": 1.0, "blob": b"\x00\x01"},
            {"messages": [], "score": 1.0, "blob": None}]
    p = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), p)
    rep = validate_file(str(p))
    got = {(x.line, x.field) for x in rep.problems}
    assert got == {(2, "messages[0].role"), (3, "score"), (4, "blob"), (5, "messages")}, rep.problems
    assert all(x.file == str(p) for x in rep.problems) and rep.sha256 is None and rep.n_rows == 5
    with pytest.raises(RftError) as e:
        load_dataset(str(p))
    assert "row numbers" in str(e.value) and f"{p}:2: field 'messages[0].role'" in str(e.value)


@pytest.mark.parametrize("make, needle", [
    (lambda p: pq.write_table(pa.table({"prompt": ["hi"]}), p), "no 'messages' column"),
    (lambda p: p.write_bytes(b"PAR1 not really parquet"), "not a readable Parquet file"),
])
def test_bad_parquet_files_are_one_problem(tmp_path, make, needle):
    p = tmp_path / "x.parquet"
    make(p)
    rep = validate_file(str(p))
    assert len(rep.problems) == 1 and needle in rep.problems[0].message


def _arrow_stream(path: Path, rows) -> None:
    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_stream(str(path), table.schema) as w:
        w.write_table(table)


def _datasets_cache(root: Path, repo: str, config: str, splits: dict[str, list], shards: int = 1) -> Path:
    ns, _, name = repo.rpartition("/")
    folder = root / (f"{ns}___{name}" if ns else name) / config / "0.0.0" / "abc123"
    folder.mkdir(parents=True)
    for split, rows in splits.items():
        if shards == 1:
            _arrow_stream(folder / f"{name}-{split}.arrow", rows)
        else:
            k = (len(rows) + shards - 1) // shards
            for i in range(shards):
                _arrow_stream(folder / f"{name}-{split}-{i:05d}-of-{shards:05d}.arrow", rows[i * k:(i + 1) * k])
    (folder / "dataset_info.json").write_text(json.dumps({"dataset_name": name, "config_name": config,
                                                          "splits": {s: {"name": s} for s in splits}}))
    return folder


@pytest.fixture()
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home


def test_hf_datasets_cache_splits_configs_and_shards(tmp_path, hf_home):
    _datasets_cache(hf_home / "datasets", "acme/math", "main", {"train": ROWS, "test": ROWS[:2]}, shards=2)
    _datasets_cache(hf_home / "datasets", "acme/math", "other", {"train": ROWS[:1]})
    js = load_jsonl(_jsonl(tmp_path, ROWS))
    ds = load_dataset("hf:acme/math:main")
    assert ds.sha256 == js.sha256 and ds.line_numbers == tuple(range(1, 7)) and ds.source == "hf:acme/math:main@train"
    assert len(load_dataset("hf:acme/math:main@test")) == 2
    assert len(load_dataset("hf:ACME/Math:other")) == 1  # the cache keeps the repo's spelling; names match either way
    with pytest.raises(RftError, match="several configs.*main, other"):
        load_dataset("hf:acme/math")
    with pytest.raises(RftError, match="no split 'validation'.*test, train") as e:
        load_dataset("hf:acme/math:main", split="validation")
    assert "hf:acme/math:main@test" in e.value.hint
    with pytest.raises(RftError, match="no config 'mian' \\(did you mean 'main'"):
        load_dataset("hf:acme/math:mian")


def test_hf_rows_are_checked_like_jsonl_rows(hf_home):
    bad = [dict(ROWS[0]), {"messages": [{"role": "assistant", "content": "x"}], "answer": "1", "topic": "t",
                           "meta": {"level": 1}}]
    _datasets_cache(hf_home / "datasets", "solo", "default", {"train": bad})
    with pytest.raises(RftError) as e:
        load_dataset("hf:solo")
    assert "hf:solo@train:2: field 'messages[0].role'" in str(e.value)


def test_hf_hub_cache_parquet_files(tmp_path, hf_home):
    snap = hf_home / "hub" / "datasets--acme--qa" / "snapshots" / "0123abcd"
    (snap / "data").mkdir(parents=True)
    _parquet(snap / "data" / "train-00000-of-00001.parquet", ROWS)
    _parquet(snap / "data" / "validation-00000-of-00001.parquet", ROWS[:3])
    (hf_home / "hub" / "datasets--acme--qa" / "refs").mkdir()
    (hf_home / "hub" / "datasets--acme--qa" / "refs" / "main").write_text("0123abcd")
    assert load_dataset("hf:acme/qa").sha256 == load_jsonl(_jsonl(tmp_path, ROWS)).sha256
    assert len(load_dataset("hf:acme/qa", split="validation")) == 3


def test_hf_dataset_not_cached_is_a_clear_error_and_no_download(hf_home, monkeypatch):
    import socket

    def no_network(*a, **k):
        raise AssertionError("rft tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(RftError) as e:
        load_dataset("hf:openai/gsm8k:main@test")
    assert "not in the local Hugging Face cache" in str(e.value) and str(hf_home / "datasets") in str(e.value)
    assert "never downloads" in str(e.value) and "datasets.load_dataset('openai/gsm8k')" in e.value.hint
    with pytest.raises(RftError, match="not a Hugging Face dataset reference"):
        load_dataset("hf:bad name")


def test_cli_validate_parquet_and_hf_and_train_refuses_an_uncached_hf_dataset(tmp_path, hf_home):
    _datasets_cache(hf_home / "datasets", "acme/math", "main", {"train": ROWS})
    p = _parquet(tmp_path / "train.parquet", ROWS)
    env = {"HF_HOME": str(hf_home)}
    for ref in (str(p), "hf:acme/math"):
        r = run_rft("data", "validate", ref, "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["rows"] == 6
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"messages": [[{"role": "bot", "content": "x"}]]}), bad)
    assert_user_error(run_rft("data", "validate", str(bad), env=env), f"{bad}:1: field 'messages[0].role'")
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": "smollm2-135m-instruct", "training_file": "hf:acme/missing",
                               "method": {"type": "reinforcement", "reinforcement": {"grader": {
                                   "type": "string_check", "name": "x", "input": "{{sample.output_text}}",
                                   "reference": "{{item.answer}}", "operation": "eq"}}}}))
    r = run_rft("train", str(job), env=env)
    assert_user_error(r, "hf:acme/missing: not in the local Hugging Face cache")
    assert run_rft("jobs", "list", "--json", env=env).stdout.strip() == "[]"  # nothing recorded


def test_cli_data_list():
    r = run_rft("data", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    refs = [x["ref"] for x in rows]
    from rft.data.reasoning_gym_tasks import reasoning_gym_task_names

    assert refs[0] == "builtin:arithmetic"
    assert set(refs[1:]) == {f"builtin:reasoning_gym/{t}" for t in reasoning_gym_task_names()}
    assert all(x["description"] and "\n" not in x["description"] and len(x["description"]) <= 140 for x in rows)
    r = run_rft("data", "list")
    assert r.returncode == 0 and "builtin:arithmetic" in r.stdout and "leg_counting" in r.stdout
