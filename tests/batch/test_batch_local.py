"""Local-model batches: grouped runs through run_chat_calls, engine failures under the retry policy, and
kill -9 in the middle of a 500-request batch followed by resume (tiny random Llama, no real model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from batchfakes import FakeClock, assert_exactly_once, read_jsonl, write_requests

from rft.batch import BatchConfig, RetryPolicy, create_batch, resume_batch, run_batch, show_batch
from rft.engine import SamplingParams
from rft.types import Completion


class ScriptedEngine:
    """generate() raises while any of its prompts still has failures scripted in `fail` (content -> count);
    `tried` and `served` count, per prompt, the calls that included it and the completions returned."""

    def __init__(self, fail: dict[str, int] | None = None):
        self.fail = dict(fail or {})
        self.tried: Counter = Counter()
        self.served: Counter = Counter()

    def generate(self, prompts, params: SamplingParams):
        contents = [p[-1]["content"] for p in prompts]
        self.tried.update(contents)
        bad = [c for c in contents if self.fail.get(c, 0) > 0]
        for c in bad:
            self.fail[c] -= 1
        if bad:
            raise RuntimeError("engine fell over")
        self.served.update(contents)
        return [[Completion(text=f"re: {c}", token_ids=(1, 2, 3), logprobs=(0.0,) * 3,
                            finish_reason="length", prompt_tokens=4)] for c in contents]


def _local_batch(tmp_path, ids, clock, **retry):
    cfg = BatchConfig(retry=RetryPolicy(**({"max_attempts": 3, "initial_backoff_s": 1.0} | retry)), batch_size=4)
    inp = write_requests(tmp_path / "in.jsonl", ids, model=None)
    model_dir = tmp_path / "fake_model"  # create_batch checks the reference; the engine is injected
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'  # a valid one-tensor safetensors file
    (model_dir / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    return create_batch(inp, model=str(model_dir), output=tmp_path / "out.jsonl", config=cfg, clock=clock)


def test_local_groups_and_engine_failures_are_retried(tmp_path):
    ids = [f"q{i}" for i in range(10)]
    engine, clock = ScriptedEngine(fail={"q3": 2}), FakeClock()
    st = _local_batch(tmp_path, ids, clock)
    seen = []
    final = run_batch(st["id"], engine=engine, clock=clock, progress=seen.append)
    out, errs = assert_exactly_once(final, ids)
    assert not errs and final["status"] == "completed"
    assert all(out[c]["response"]["body"]["choices"][0]["message"]["content"] == f"re: {c}" for c in ids)
    # every prompt generated once; q3's engine failure (a 500) was retried after one backoff, within the window
    assert all(engine.served[c] == 1 for c in ids)
    assert len(clock.sleeps) == 1 and 0 <= clock.sleeps[0] <= 1.0
    assert final["usage"] == {"prompt_tokens": 40, "completion_tokens": 30, "total_tokens": 70}
    assert seen[-1]["completed"] == 10 and seen[-1]["completion_tokens"] == 30


def test_local_engine_that_keeps_failing_dead_letters_with_attempts(tmp_path):
    ids = ["a", "b"]
    clock = FakeClock()
    st = _local_batch(tmp_path, ids, clock, max_attempts=3)
    final = run_batch(st["id"], engine=ScriptedEngine(fail={"a": 99, "b": 99}), clock=clock)
    _, errs = assert_exactly_once(final, ids)
    assert final["status"] == "failed"
    for cid in ids:
        assert errs[cid]["reason"] == "max_attempts" and len(errs[cid]["attempts"]) == 3
        assert errs[cid]["error"]["message"].startswith("generation failed: RuntimeError")


def test_local_circuit_breaker_leaves_requests_pending(tmp_path):
    ids = [f"b{i}" for i in range(12)]
    clock = FakeClock()
    st = _local_batch(tmp_path, ids, clock, max_attempts=10, circuit_breaker_threshold=4)
    engine = ScriptedEngine(fail={c: 10**6 for c in ids})
    stopped = run_batch(st["id"], engine=engine, clock=clock)
    assert stopped["stop_reason"] == "circuit_breaker_open" and stopped["status"] == "in_progress"
    assert len(engine.tried) == 4 and not clock.sleeps  # the first group's 4 failures opened it: no retry, no more groups
    assert read_jsonl(stopped["error_file"]) == [] and show_batch(st["id"])["pending"] == 12
    engine.fail.clear()
    done = resume_batch(st["id"], engine=engine, clock=clock)
    assert done["status"] == "completed"
    assert_exactly_once(done, ids)


def test_tiny_model_batch_with_prediction(tmp_path, tiny_model_dir, one_torch_thread):
    inp = tmp_path / "in.jsonl"
    lines = [{"custom_id": f"t{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"messages": [{"role": "user", "content": "hi " * (i + 1)}], "max_tokens": 4, "temperature": 0}}
             for i in range(6)]
    lines[2]["body"]["prediction"] = {"type": "content", "content": "hello"}
    inp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    st = create_batch(inp, model=str(tiny_model_dir), config=BatchConfig(batch_size=3))
    from rft.engine import load_engine

    engine = load_engine(str(tiny_model_dir))
    predicted = []
    real = engine.generate_predicted
    engine.generate_predicted = lambda m, params, pred: predicted.append(pred) or real(m, params, pred)
    final = run_batch(st["id"], engine=engine)
    out, errs = assert_exactly_once(final, [x["custom_id"] for x in lines])
    assert final["status"] == "completed" and not errs
    assert all(r["response"]["body"]["usage"]["completion_tokens"] == 4 for r in out.values())
    assert predicted == ["hello"]  # the prediction went through to the engine's predicted-output path
    assert "accepted_prediction_tokens" in out["t2"]["response"]["body"]["usage"]["completion_tokens_details"]
    assert final["usage"]["completion_tokens"] == 24 and final["wall_seconds"] > 0
    assert final["cost"]["basis"] == "per_hour" and final["cost"]["estimate_usd"] > 0


@pytest.fixture
def one_torch_thread():
    """The tiny model runs ~10x faster on one thread when the CPU is shared; restore the setting after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_kill_9_mid_batch_then_resume(tmp_path, tiny_model_dir, one_torch_thread):
    ids = [f"k{i:03d}" for i in range(500)]
    inp = write_requests(tmp_path / "in.jsonl", ids, model=None, max_tokens=6, extra={"temperature": 0})
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "rft.cli.main", "batch", "run", str(inp), "--model", str(tiny_model_dir),
           "--output", str(out), "--batch-size", "4", "--quiet"]
    env = os.environ.copy() | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 40:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the batch ended before the kill: {proc.communicate()[1].decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    n_before = out.read_bytes().count(b"\n")
    assert 40 <= n_before < 500

    from rft.batch import list_batches

    [st] = list_batches()
    assert st["status"] == "in_progress" and not st["running"]
    with open(out, "ab") as f:  # a write torn by the kill: half a line, no newline
        f.write(b'{"id": "batch_req_torn", "custom_id": "k000", "response": {"status_c')

    from typer.testing import CliRunner

    from rft.cli.batch_cmd import batch_app

    r = CliRunner().invoke(batch_app, ["resume", st["id"], "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert done["status"] == "completed"
    recs, errs = assert_exactly_once(done, ids)
    assert not errs and len(recs) == 500
    assert all(line.strip() for line in out.read_text().splitlines())  # the torn fragment is gone
    assert done["request_counts"] == {"total": 500, "completed": 500, "failed": 0}
    assert done["usage"]["completion_tokens"] == 500 * 6
