"""The file store (rft.files), `file-...` ids in rft.data's loaders and job specs, and `rft files` through the
installed console script."""

from __future__ import annotations

import json
from itertools import count

import pytest

from clitools import assert_user_error, run_rft
from rft.errors import RftError
from rft.files import FileNotFound, FileStore, is_file_id, sanitize_filename

RFT_ROW = {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}
SFT_ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
DPO_ROW = {"input": {"messages": [{"role": "user", "content": "hi"}]},
           "preferred_output": [{"role": "assistant", "content": "hello"}],
           "non_preferred_output": [{"role": "assistant", "content": "go away"}]}


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def fake_clock(start: float = 1_700_000_000.0):
    c = count()
    return lambda: start + next(c)


def test_ids_and_filenames_are_checked_before_any_path_is_built(tmp_path):
    assert is_file_id("file-0123456789abcdef")
    for bad in ("../x", "file-../../etc", "/etc/passwd", "file-ABCDEF0123", "file-123", "file-" + "a" * 65, "",
                "file-0123456789abcdef/", "%2e%2e", "file-0123456789abcdef\x00"):
        assert not is_file_id(bad)
    store = FileStore(tmp_path / "files")
    with pytest.raises(FileNotFound, match="not a file id"):
        store.get("../x")
    assert not (tmp_path / "files").exists()  # nothing was created or read
    assert sanitize_filename("../../etc/passwd") == "passwd"
    assert sanitize_filename("C:\\Users\\me\\train.jsonl") == "train.jsonl"
    assert sanitize_filename("..") == "upload" and sanitize_filename("") == "upload"
    assert sanitize_filename("a\x00b\nc\u202e.jsonl") == "abc.jsonl"
    assert len(sanitize_filename("x" * 1000)) == 255


def test_create_get_list_delete(tmp_path):
    store = FileStore(tmp_path / "files", clock=fake_clock())
    a = store.create(jsonl(RFT_ROW), filename="sub/a.jsonl", purpose="fine-tune")
    b = store.create(jsonl(RFT_ROW, RFT_ROW), filename="b.jsonl", purpose="batch")
    assert is_file_id(a.id) and a.filename == "a.jsonl" and a.bytes == len(jsonl(RFT_ROW))
    obj = a.to_openai()
    assert obj["object"] == "file" and obj["status"] == "processed" and obj["expires_at"] is None
    assert obj["created_at"] == 1_700_000_000 and len(obj["sha256"]) == 64
    assert store.get(a.id) == a
    assert store.content_path(a.id).read_bytes() == jsonl(RFT_ROW)
    assert [f.id for f in store.list()] == [b.id, a.id]  # newest first
    assert store.delete(a.id) and not store.delete(a.id)
    with pytest.raises(FileNotFound, match="rft files list"):
        store.content_path(a.id)
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == [b.id]


def test_a_refused_upload_leaves_nothing(tmp_path):
    store = FileStore(tmp_path / "files")

    def refuse(path, name):
        raise RftError(f"{name}: bad")

    with pytest.raises(RftError, match="x.jsonl: bad"):
        store.create(jsonl(RFT_ROW), filename="x.jsonl", purpose="fine-tune", validate=refuse)
    with pytest.raises(RftError, match="upload limit of 10 bytes"):
        store.create(b"x" * 11, filename="big", purpose="evals", max_bytes=10)
    with pytest.raises(RftError, match="empty"):
        store.create(b"", filename="e", purpose="evals")

    def record_fails(stored):
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        store.create(jsonl(RFT_ROW), filename="x.jsonl", purpose="fine-tune", record=record_fails)
    assert list((tmp_path / "files").iterdir()) == []


def test_fine_tune_validation_accepts_the_three_openai_formats(tmp_path):
    from rft.data import validate_fine_tune_file

    for rows in ((RFT_ROW,), (SFT_ROW, SFT_ROW), (DPO_ROW,)):
        p = tmp_path / "ok.jsonl"
        p.write_bytes(jsonl(*rows))
        assert validate_fine_tune_file(p).ok, validate_fine_tune_file(p).problems
    p = tmp_path / "bad.jsonl"
    p.write_bytes(jsonl(RFT_ROW, SFT_ROW, {"input": {"messages": []}, "preferred_output": []}))
    problems = [str(x) for x in validate_fine_tune_file(p, name="bad.jsonl").problems]
    assert any(s.startswith("bad.jsonl:2:") and "one format" in s for s in problems), problems
    assert any(s.startswith("bad.jsonl:3:") and "non_preferred_output" in s for s in problems), problems


def test_load_dataset_resolves_a_file_id_through_the_store(tmp_path):
    from rft.config import JobSpec
    from rft.data import load_dataset

    f = FileStore().create(jsonl(RFT_ROW, RFT_ROW), filename="train.jsonl", purpose="fine-tune")
    job = JobSpec.model_validate({"model": "m", "training_file": f.id,
                                  "method": {"type": "reinforcement", "reinforcement": {
                                      "grader": {"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
                                                 "reference": "{{item.answer}}", "operation": "eq"}}}})
    ds = load_dataset(job.training_file)
    assert len(ds) == 2 and ds.name == f.id and ds.line_numbers == (1, 2)
    local = tmp_path / "same.jsonl"
    local.write_bytes(jsonl(RFT_ROW, RFT_ROW))
    assert ds.sha256 == load_dataset(str(local)).sha256
    with pytest.raises(RftError) as e:
        load_dataset("file-00000000deadbeef")
    assert "file-00000000deadbeef" in str(e.value) and "rft files list" in str(e.value)


def test_cli_upload_list_show_content_delete(tmp_path):
    good = tmp_path / "train.jsonl"
    good.write_bytes(jsonl(RFT_ROW))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(RFT_ROW) + b'{"messages": [{"role": "bogus", "content": "x"}]}\nnot json\n')

    r = run_rft("files", "upload", str(good), "--purpose", "fine-tune", "--json")
    assert r.returncode == 0, r.stderr
    fid = json.loads(r.stdout)["id"]
    assert_user_error(run_rft("files", "upload", str(bad), "--purpose", "fine-tune"),
                      "bad.jsonl:2:", "bad.jsonl:3:", "invalid JSON")
    assert_user_error(run_rft("files", "upload", str(good), "--purpose", "nonsense"), "unknown file purpose")

    r = run_rft("files", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert [f["id"] for f in json.loads(r.stdout)["data"]] == [fid]  # the refused uploads left nothing
    assert fid in run_rft("files", "list").stdout
    assert json.loads(run_rft("files", "show", fid, "--json").stdout)["filename"] == "train.jsonl"
    assert run_rft("files", "content", fid).stdout == good.read_text()
    r = run_rft("data", "validate", fid)
    assert r.returncode == 0, r.stderr

    assert_user_error(run_rft("files", "show", "../../etc/passwd"), "No such File object")
    r = run_rft("files", "delete", fid, "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"id": fid, "object": "file", "deleted": True}
    assert_user_error(run_rft("files", "delete", fid), "No such File object", fid)
    assert json.loads(run_rft("files", "list", "--json").stdout)["data"] == []
