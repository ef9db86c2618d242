"""Remote endpoint batches against a scripted flaky server (in-process httpx transport) and a fake clock:
exactly-once results, retry bounds, permanent errors, idempotency keys, the circuit breaker, max-cost, redrive."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from batchfakes import assert_exactly_once, read_jsonl, write_requests

from rft.batch import (BatchConfig, RetryPolicy, create_batch, idempotency_key, redrive_batch, resume_batch,
                       run_batch, show_batch)
from rft.batch.retry import backoff_window
from rft.errors import RftError

URL = "http://fake-endpoint/v1"


def _config(**retry) -> BatchConfig:
    base = dict(max_attempts=5, initial_backoff_s=1.0, max_backoff_s=8.0, retry_after_cap_s=5.0,
                request_deadline_s=120.0, circuit_breaker_threshold=0)
    base.update(retry)
    return BatchConfig(retry=RetryPolicy(**base), concurrency=4)


def _start(tmp_path, ids, clock, config, **kw):
    inp = write_requests(tmp_path / "in.jsonl", ids, **kw)
    return create_batch(inp, model=URL, output=tmp_path / "out.jsonl", config=config, clock=clock)


def test_flaky_server_every_request_exactly_once(tmp_path, server, clock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    ids = [f"r{i:02d}" for i in range(40)]
    server.script = {
        "r00": ["429:2", "ok"],          # Retry-After honoured
        "r01": ["429:1000", "ok"],       # Retry-After above the cap: capped at 5 s
        "r02": ["500", "500", "ok"],     # 5xx that recover
        "r03": ["timeout", "ok"],
        "r04": ["connect", "503ms:1500", "ok"],
        "r05": ["lost", "ok"],           # applied, response lost: the retry must not apply it again
        "r06": ["400"],                  # permanent
        "r07": ["401"],                  # permanent
        "r08": ["500"] * 10,             # never recovers within max_attempts
        "r09": ["timeout"] * 10,
    }
    st = _start(tmp_path, ids, clock, _config())
    final = run_batch(st["id"], transport=server.transport(), clock=clock, rng=random.Random(1))

    out, errs = assert_exactly_once(final, ids)
    assert set(errs) == {"r06", "r07", "r08", "r09"}
    assert final["status"] == "completed_with_errors"  # some failed: never plain "completed" (catalogue B1)
    assert final["request_counts"] == {"total": 40, "completed": 36, "failed": 4}
    # joined by custom_id, never by position: each response answers its own request
    for cid, rec in out.items():
        assert rec["response"]["status_code"] == 200
        assert rec["response"]["body"]["choices"][0]["message"]["content"] == f"echo {cid}"
        assert rec["error"] is None
    assert [r["custom_id"] for r in read_jsonl(final["output_file"])] != sorted(out)  # completion order

    # permanent errors: one call, not retried, the server's answer kept
    for cid, code in (("r06", 400), ("r07", 401)):
        assert len(server.calls_for(cid)) == 1
        assert errs[cid]["reason"] == "permanent_error"
        assert errs[cid]["response"]["status_code"] == code
        assert errs[cid]["error"]["code"] == f"scripted_{code}"
        assert len(errs[cid]["attempts"]) == 1
    # retryable failures stop at max_attempts; every attempt is in the dead letter with timestamps
    for cid in ("r08", "r09"):
        assert len(server.calls_for(cid)) == 5
        assert errs[cid]["reason"] == "max_attempts"
        assert [a["attempt"] for a in errs[cid]["attempts"]] == [1, 2, 3, 4, 5]
        assert all(a["finished_at"] >= a["started_at"] for a in errs[cid]["attempts"])
        assert errs[cid]["request"]["body"]["messages"][0]["content"] == cid
    assert errs["r09"]["attempts"][0]["error"]["kind"] == "timeout"

    # the lost response: applied once on the server, the replayed answer is in the output
    assert server.apply_count["r05"] == 1
    assert len(server.calls_for("r05")) == 2
    # idempotency key: the same on every attempt, derived from (batch, custom_id), distinct per request
    for cid in ids:
        keys = {c["key"] for c in server.calls_for(cid)}
        assert keys == {idempotency_key(st["id"], cid)}
    assert len({idempotency_key(st["id"], c) for c in ids}) == len(ids)
    assert all(c["auth"] == "Bearer sk-test" and c["model"] == "fake-model" for c in server.calls)

    # waits: Retry-After honoured (2 s), capped (5 s, never 1000), retry-after-ms read; nothing above the caps
    assert 2.0 in clock.sleeps and 5.0 in clock.sleeps and 1.5 in clock.sleeps
    assert max(clock.sleeps) <= 8.0
    # at most max_attempts calls per request, overall
    assert max(len(server.calls_for(c)) for c in ids) <= 5


def test_backoff_is_full_jitter_within_the_window(tmp_path, server, clock):
    """One request, one at a time, so every recorded sleep belongs to it: sleep k lies in [0, window(k)]."""
    server.script = {"only": ["500"] * 6}
    cfg = _config(max_attempts=6, initial_backoff_s=1.0, backoff_multiplier=3.0, max_backoff_s=10.0)
    cfg.concurrency = 1
    st = _start(tmp_path, ["only"], clock, cfg)
    final = run_batch(st["id"], transport=server.transport(), clock=clock, rng=random.Random(7))
    assert len(server.calls) == 6
    assert len(clock.sleeps) == 5
    for k, s in enumerate(clock.sleeps, 1):
        assert 0.0 <= s <= backoff_window(cfg.retry, k)
    assert [backoff_window(cfg.retry, k) for k in range(1, 6)] == [1.0, 3.0, 9.0, 10.0, 10.0]
    assert final["status"] == "failed"  # its only request failed: not "completed"


def test_request_deadline_bounds_the_total_wait(tmp_path, server, clock):
    server.script = {"slow": ["503ms:4000"] * 50}
    cfg = _config(max_attempts=50, request_deadline_s=10.0, retry_after_cap_s=5.0)
    cfg.concurrency = 1
    st = _start(tmp_path, ["slow"], clock, cfg)
    final = run_batch(st["id"], transport=server.transport(), clock=clock, rng=random.Random(0))
    _, errs = assert_exactly_once(final, ["slow"])
    assert errs["slow"]["reason"] == "deadline_exceeded"
    assert sum(clock.sleeps) < 10.0
    assert clock.sleeps == [4.0, 4.0]  # a third wait would cross the 10 s deadline
    assert len(server.calls) == 3


def test_circuit_breaker_trips_then_resume_completes(tmp_path, server, clock):
    ids = [f"c{i:02d}" for i in range(30)]
    server.default = "500"  # the endpoint is down
    cfg = _config(circuit_breaker_threshold=6, max_attempts=4)
    cfg.concurrency = 2
    st = _start(tmp_path, ids, clock, cfg)
    stopped = run_batch(st["id"], transport=server.transport(), clock=clock, rng=random.Random(0))

    assert stopped["status"] == "in_progress"
    assert stopped["stop_reason"] == "circuit_breaker_open"
    # it stopped sending: the threshold plus at most what was in flight
    assert len(server.calls) <= 6 + 2
    # the rest are not attempted, not failed: nothing in the error file, all pending
    assert stopped["request_counts"]["failed"] == 0
    assert read_jsonl(stopped["error_file"]) == []
    assert show_batch(st["id"])["pending"] == 30

    server.default = "ok"  # the endpoint recovers
    done = resume_batch(st["id"], transport=server.transport(), clock=clock, rng=random.Random(0))
    assert done["status"] == "completed" and done["stop_reason"] is None
    out, errs = assert_exactly_once(done, ids)
    assert len(out) == 30 and not errs
    with pytest.raises(RftError, match="nothing to resume"):
        resume_batch(st["id"], transport=server.transport(), clock=clock)


def test_max_cost_stops_cleanly_and_resume_completes(tmp_path, server, clock):
    ids = [f"m{i:02d}" for i in range(20)]
    cfg = _config()
    cfg.concurrency = 1
    cfg.prices.remote_default.prompt_per_1k = 1.0  # each request: 10 prompt + 5 completion tokens = $0.015
    cfg.prices.remote_default.completion_per_1k = 1.0
    cfg.max_cost = 0.1
    st = _start(tmp_path, ids, clock, cfg)
    stopped = run_batch(st["id"], transport=server.transport(), clock=clock)
    assert stopped["status"] == "in_progress" and stopped["stop_reason"] == "max_cost_reached"
    assert stopped["request_counts"]["completed"] == 7  # 7 x 0.015 = 0.105 >= 0.1
    assert stopped["cost"]["estimate_usd"] == pytest.approx(0.105)
    assert stopped["usage"] == {"prompt_tokens": 70, "completion_tokens": 35, "total_tokens": 105}
    assert_exactly_once(stopped, ids, allow_pending=True)

    with pytest.raises(RftError, match="cost limit"):
        resume_batch(st["id"], transport=server.transport(), clock=clock)
    done = resume_batch(st["id"], max_cost=1.0, transport=server.transport(), clock=clock)
    assert done["status"] == "completed"
    assert_exactly_once(done, ids)
    assert done["cost"]["estimate_usd"] == pytest.approx(0.3)
    assert len(server.calls) == 20  # nothing ran twice


def test_redrive_reruns_only_dead_letters(tmp_path, server, clock):
    ids = [f"d{i:02d}" for i in range(12)]
    server.script = {"d01": ["500"] * 3, "d05": ["timeout"] * 3, "d07": ["400", "400"]}
    cfg = _config(max_attempts=3)
    st = _start(tmp_path, ids, clock, cfg)
    first = run_batch(st["id"], transport=server.transport(), clock=clock)
    _, errs = assert_exactly_once(first, ids)
    assert set(errs) == {"d01", "d05", "d07"}
    assert first["request_counts"]["failed"] == 3

    n_before = len(server.calls)
    second = redrive_batch(st["id"], transport=server.transport(), clock=clock)
    redriven = server.calls[n_before:]
    assert {c["content"] for c in redriven} == {"d01", "d05", "d07"}  # only the dead letters ran again
    assert {c["key"] for c in redriven if c["content"] == "d01"} == {idempotency_key(st["id"], "d01")}
    out, errs = assert_exactly_once(second, ids)
    assert set(errs) == {"d07"}  # d07 fails for good again; d01 and d05 recovered
    assert first["status"] == second["status"] == "completed_with_errors"
    assert second["request_counts"] == {"total": 12, "completed": 11, "failed": 1}
    # the dead letter keeps every attempt of both rounds
    assert [a["round"] for a in errs["d07"]["attempts"]] == [0, 1] and errs["d07"]["round"] == 1
    assert out["d01"]["response"]["body"]["choices"][0]["message"]["content"] == "echo d01"


def test_all_failed_is_failed_and_list_show_json(tmp_path, server, clock):
    from typer.testing import CliRunner

    from rft.cli.batch_cmd import batch_app

    server.default = "422"
    st = _start(tmp_path, ["a", "b"], clock, _config())
    final = run_batch(st["id"], transport=server.transport(), clock=clock)
    assert final["status"] == "failed" and final["request_counts"]["failed"] == 2
    r = CliRunner().invoke(batch_app, ["list", "--json"])
    assert r.exit_code == 0, r.output
    import json

    rows = json.loads(r.output)
    assert [(x["id"], x["status"]) for x in rows] == [(st["id"], "failed")]
    r = CliRunner().invoke(batch_app, ["show", st["id"][:12], "--json"])
    shown = json.loads(r.output)
    assert shown["id"] == st["id"] and shown["request_counts"] == {"total": 2, "completed": 0, "failed": 2}


def test_cancel_while_running_and_redrive_the_cancelled(tmp_path, server, clock):
    from rft.batch import cancel_batch

    ids = [f"x{i:02d}" for i in range(20)]
    cfg = _config()
    cfg.concurrency = 1
    st = _start(tmp_path, ids, clock, cfg)
    real = server.handler

    async def handler(request):
        if len(server.calls) == 5:
            assert cancel_batch(st["id"])["status"] == "cancelling"  # the runner holds the lock: ask it to stop
        return await real(request)

    server.handler = handler
    final = run_batch(st["id"], transport=server.transport(), clock=clock)
    assert final["status"] == "cancelled"
    out, errs = assert_exactly_once(final, ids)
    assert len(out) == 6 and all(e["error"]["code"] == "batch_cancelled" for e in errs.values())
    assert not (Path(final["output_file"]).parent / "cancel").exists()
    with pytest.raises(RftError, match="already cancelled"):
        cancel_batch(st["id"])

    server.handler = real
    again = redrive_batch(st["id"], transport=server.transport(), clock=clock)
    assert again["status"] == "completed" and again["request_counts"]["completed"] == 20
    assert_exactly_once(again, ids)
    assert len(server.calls) == 20


def test_cancel_a_stopped_batch(tmp_path, server, clock):
    from rft.batch import cancel_batch

    ids = [f"s{i}" for i in range(6)]
    server.default = "500"
    st = _start(tmp_path, ids, clock, _config(circuit_breaker_threshold=2))
    assert run_batch(st["id"], transport=server.transport(), clock=clock)["stop_reason"] == "circuit_breaker_open"
    done = cancel_batch(st["id"], clock=clock)
    assert done["status"] == "cancelled" and done["request_counts"]["failed"] == 6
    assert_exactly_once(done, ids)


def test_unfinished_requests_expire_with_the_completion_window(tmp_path, server, clock):
    ids = [f"e{i}" for i in range(6)]
    server.script = {"e0": ["429:40"] * 3}  # each wait moves the fake clock 40 s past a 1-minute window
    cfg = _config(retry_after_cap_s=60)
    cfg.concurrency = 1
    inp = write_requests(tmp_path / "in.jsonl", ids)
    st = create_batch(inp, model=URL, config=cfg, clock=clock, completion_window="1m")
    final = run_batch(st["id"], transport=server.transport(), clock=clock)
    assert final["status"] == "expired"
    out, errs = assert_exactly_once(final, ids)
    assert errs and all(e["error"]["code"] == "batch_expired" for e in errs.values())
    assert "e0" in errs and len(server.calls) < 6 + 3


def test_auth_failures_trip_the_breaker_but_bad_requests_do_not(tmp_path, server, clock):
    ids = [f"u{i:02d}" for i in range(10)]
    server.default = "401"  # a wrong key: every request would fail the same way
    cfg = _config(circuit_breaker_threshold=3)
    cfg.concurrency = 1
    st = _start(tmp_path, ids, clock, cfg)
    stopped = run_batch(st["id"], transport=server.transport(), clock=clock)
    assert stopped["stop_reason"] == "circuit_breaker_open"
    assert len(server.calls) == 3 and stopped["request_counts"]["failed"] == 3  # 401s are not retried
    server.default = "400"  # request-specific errors: no trip, every request gets its answer
    done = resume_batch(st["id"], transport=server.transport(), clock=clock)
    assert done["status"] == "failed" and done["request_counts"]["failed"] == 10
    assert_exactly_once(done, ids)


def test_batch_state_is_recorded_in_the_registry(tmp_path, server, clock):
    """The batch folder is what resume reads; the registry mirrors every state write (status, counts)."""
    from rft.registry import Registry

    ids = [f"r{i}" for i in range(5)]
    server.script = {"r2": ["400"]}
    st = _start(tmp_path, ids, clock, _config(max_attempts=2))
    done = run_batch(st["id"], transport=server.transport(), clock=clock)
    rows = {b["id"]: b for b in Registry().batches()}
    row = rows[st["id"]]
    assert row["status"] == done["status"] == "completed_with_errors"
    assert row["request_counts"] == {"total": 5, "completed": 4, "failed": 1}
    assert row["output_file"] == done["output_file"] and row["state"]["usage"] == done["usage"]


# ------------------------------------------------------------------------------------- catalogue B1
def _b1_ids() -> list[str]:
    return [f"b1-{i:03d}" for i in range(100)]


def test_b1_malformed_line_is_reported_with_its_line_number_and_nothing_runs(tmp_path, server, clock):
    """B1, the malformed line: the whole file is refused before anything is sent (as OpenAI's validation
    does), naming the line; a half-broken file is never half run."""
    inp = write_requests(tmp_path / "in.jsonl", _b1_ids())
    lines = inp.read_text().splitlines()
    lines[56] = lines[56][:40]  # line 57: JSON cut short
    inp.write_text("\n".join(lines) + "\n")
    with pytest.raises(RftError, match="nothing was run") as ei:
        create_batch(inp, model=URL, output=tmp_path / "out.jsonl", config=_config(), clock=clock)
    assert [(p.file, p.line) for p in ei.value.problems] == [(str(inp), 57)]
    assert "in.jsonl:57: the line is not valid JSON" in str(ei.value)
    assert not server.calls and not (tmp_path / "out.jsonl").exists()


def test_b1_failures_are_isolated_and_the_batch_is_completed_with_errors(tmp_path, server, clock):
    """B1: 100 lines; 3 answer 400, 2 answer 500 twice and then succeed; completion order is shuffled.
    97 results and 3 dead letters, joined by custom_id; the status is completed_with_errors."""
    ids = _b1_ids()
    bad, flaky = {"b1-007", "b1-042", "b1-093"}, {"b1-013", "b1-077"}
    server.script = {cid: ["400"] for cid in bad} | {cid: ["500", "500", "ok"] for cid in flaky}
    st = _start(tmp_path, ids, clock, _config(max_attempts=4))
    final = run_batch(st["id"], transport=server.transport(), clock=clock, rng=random.Random(3))

    assert final["status"] == "completed_with_errors"
    assert final["completed_at"] is not None and final["failed_at"] is None
    assert final["request_counts"] == {"total": 100, "completed": 97, "failed": 3}
    out, errs = assert_exactly_once(final, ids)
    assert set(errs) == bad and len(out) == 97
    for cid, rec in out.items():  # each result answers its own request, wherever it sits in the file
        assert rec["response"]["body"]["choices"][0]["message"]["content"] == f"echo {cid}"
    for cid in bad:
        assert errs[cid]["response"]["status_code"] == 400 and len(server.calls_for(cid)) == 1
        assert errs[cid]["request"]["body"]["messages"][0]["content"] == cid
    for cid in flaky:
        assert len(server.calls_for(cid)) == 3 and cid in out
    order = [r["custom_id"] for r in read_jsonl(final["output_file"])]
    assert order != [c for c in ids if c not in bad]  # shuffled: joining by position would be wrong
    assert show_batch(st["id"][:14])["status"] == "completed_with_errors"


class _LoopbackChat:
    """A real OpenAI-compatible endpoint on 127.0.0.1 (a thread), for the installed `rft` to talk to: a user
    message starting with 'bad' gets 400, anything else an echo."""

    def __enter__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                if content.startswith("bad"):
                    code, answer = 400, {"error": {"message": "scripted 400", "code": "bad"}}
                else:
                    code, answer = 200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": f"echo {content}"}}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_b1_cli_exit_codes_and_show(tmp_path):
    """`rft batch run` (the installed script) exits 4 for completed_with_errors and says so; 0 when every
    request succeeded; `rft batch show` prints the status and exits 0."""
    import json

    from tests.clitools import run_rft

    env = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "OPENAI_API_KEY": "sk-test"}
    with _LoopbackChat() as url:
        mixed = write_requests(tmp_path / "mixed.jsonl", ["ok-1", "bad-2", "ok-3"])
        r = run_rft("batch", "run", str(mixed), "--model", url, "--output", str(tmp_path / "m.jsonl"), "--json",
                    "--max-attempts", "1", env=env, timeout=120)
        assert r.returncode == 4, (r.stdout[-2000:], r.stderr[-2000:])
        view = json.loads(r.stdout)
        assert view["status"] == "completed_with_errors"
        assert view["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        assert "completed with errors: 1 of 3 request(s) failed" in r.stderr and "exit code 4" in r.stderr
        assert [x["custom_id"] for x in read_jsonl(tmp_path / "m.errors.jsonl")] == ["bad-2"]

        shown = run_rft("batch", "show", view["id"], env=env)
        assert shown.returncode == 0 and f"batch {view['id']}: completed_with_errors" in shown.stdout

        clean = write_requests(tmp_path / "clean.jsonl", ["ok-a", "ok-b"])
        r = run_rft("batch", "run", str(clean), "--model", url, "--output", str(tmp_path / "c.jsonl"), "--quiet",
                    env=env, timeout=120)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
        assert "batch " in r.stdout and ": completed" in r.stdout and "completed_with_errors" not in r.stdout
