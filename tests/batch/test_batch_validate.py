"""Input validation happens before any work and reports every problem with its line and field; config
files fail with the file and field; the batch folder's files survive torn writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from batchfakes import write_requests

from rft.batch import create_batch, list_batches, load_config
from rft.batch.store import read_records
from rft.batch.validate import validate_file
from rft.errors import RftError


def _line(cid, body=None, **over):
    obj = {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
           "body": body if body is not None else {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}
    obj.update(over)
    return json.dumps(obj)


def test_every_problem_reported_with_line_and_field(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text("\n".join([
        _line("a"),                                                         # 1 ok
        '{"custom_id": "b", "method": "POST", ',                            # 2 malformed JSON
        _line("a"),                                                         # 3 duplicate custom_id
        _line(""),                                                          # 4 empty custom_id
        _line("e", url="/v1/embeddings"),                                   # 5 unsupported url
        _line("f", body={"model": "other", "messages": [{"role": "user", "content": "x"}]}),  # 6 mixed models
        _line("g", body={"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 5}),  # 7
        _line("h", method="GET"),                                           # 8 method
        _line("i", body={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}),  # 9
        "",
        _line("j", extra=1),                                                # 11 unknown key
    ]) + "\n")
    with pytest.raises(RftError) as ei:
        validate_file(p, local=True)
    got = {(q.line, q.field) for q in ei.value.problems}
    assert got == {(2, None), (3, "custom_id"), (4, "custom_id"), (5, "url"), (6, "body.model"),
                   (7, "body.temperature"), (8, "method"), (9, "body.stream"), (11, "extra")}
    assert all(q.file == str(p) for q in ei.value.problems)
    text = str(ei.value)
    assert "in.jsonl:3: field 'custom_id': duplicate custom_id 'a' (first on line 1)" in text
    assert "in.jsonl:2: the line is not valid JSON" in text


def test_limits_are_checked(tmp_path):
    p = write_requests(tmp_path / "in.jsonl", ["a", "b", "c", "d"])
    with pytest.raises(RftError) as ei:
        validate_file(p, local=False, max_requests=3)
    assert "at most 3" in " | ".join(q.message for q in ei.value.problems)
    with pytest.raises(RftError, match="at most 0 MB") as ei:  # too large: refused before it is read
        validate_file(p, local=False, max_bytes=100)
    assert "split" in ei.value.hint
    reqs, model = validate_file(p, local=False)
    assert [r.custom_id for r in reqs] == ["a", "b", "c", "d"] and model == "fake-model"


def test_invalid_input_records_a_failed_batch_and_runs_nothing(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text(_line("a") + "\n" + _line("a") + "\n")
    with pytest.raises(RftError, match="nothing was run") as ei:
        create_batch(p, model="http://127.0.0.1:9/v1")
    assert ei.value.problems[0].file == str(p) and ei.value.problems[0].line == 2
    [b] = list_batches()
    assert b["status"] == "failed" and b["errors"]["data"][0]["line"] == 2
    assert b["request_counts"]["total"] == 0


def test_remote_needs_a_model_name(tmp_path):
    p = write_requests(tmp_path / "in.jsonl", ["a"], model=None)
    with pytest.raises(RftError, match="--remote-model"):
        create_batch(p, model="http://127.0.0.1:9/v1")


def test_cli_reports_problems_with_exit_code_2(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(_line("a") + "\n{oops\n" + _line("c", url="/v1/responses") + "\n")
    r = subprocess.run([sys.executable, "-m", "rft.cli.main", "batch", "run", str(p), "--model",
                        "http://127.0.0.1:9/v1"], capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "bad.jsonl:2: the line is not valid JSON" in r.stderr
    assert "bad.jsonl:3: field 'url'" in r.stderr


def test_config_file_errors_name_file_and_field(tmp_path):
    p = tmp_path / "batch.yaml"
    p.write_text("retry:\n  max_atempts: 3\n  initial_backoff_s: -1\nconcurrency: 4\n")
    with pytest.raises(RftError) as ei:
        load_config(p)
    fields = {q.field for q in ei.value.problems}
    assert fields == {"retry.max_atempts", "retry.initial_backoff_s"}
    assert "did you mean 'max_attempts'" in str(ei.value)
    cfg = load_config(None, {"retry.max_attempts": 2, "concurrency": None})
    assert cfg.retry.max_attempts == 2 and cfg.concurrency == 8


def test_torn_last_line_is_cut_and_corruption_is_reported(tmp_path):
    p = tmp_path / "out.jsonl"
    good = json.dumps({"custom_id": "a", "response": None}) + "\n"
    p.write_text(good + good.replace('"a"', '"b"') + '{"custom_id": "c", "respo')
    assert [r["custom_id"] for r in read_records(p)] == ["a", "b"]
    assert p.read_bytes().endswith(b'"respo')  # reading alone changes nothing
    read_records(p, repair=True)
    assert p.read_bytes() == (good + good.replace('"a"', '"b"')).encode()
    p.write_text(good + "garbage\n" + good)
    with pytest.raises(RftError, match="out.jsonl:2: corrupt"):
        read_records(p)
