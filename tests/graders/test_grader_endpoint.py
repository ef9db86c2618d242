"""endpoint graders against a scripted HTTP server on 127.0.0.1 (bounded requests, stops by itself)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rft.graders import build, grade_many, make_sample, validate
from rft.graders.endpoint import MAX_PAYLOAD_BYTES, TokenBucket

MAX_REQUESTS = 500  # the server refuses to answer more than this: a runaway retry loop cannot hammer it


@pytest.fixture
def server():
    """`script` is a list of (status, body, delay_s) answers used in order; then {"score": 1.0}."""
    state = {"requests": [], "script": [], "lock": threading.Lock()}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state["lock"]:
                if len(state["requests"]) >= MAX_REQUESTS:
                    self.send_error(503)
                    return
                state["requests"].append({"time": time.monotonic(), "path": self.path, "headers": dict(self.headers),
                                          "body": json.loads(body)})
                status, payload, delay = state["script"].pop(0) if state["script"] else (200, {"score": 1.0}, 0)
            if delay:
                time.sleep(delay)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (timeout test)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/grade", state
    srv.shutdown()
    srv.server_close()


def endpoint(url, **extra):
    g = build({"type": "endpoint", "name": "ep", "url": url, **extra})
    g.backoff_s = 0.0  # retries without waiting, so the tests stay fast
    return g


def test_posts_sample_item_trace_id_and_headers(server, monkeypatch):
    url, state = server
    monkeypatch.setenv("RFT_TEST_EP_TOKEN", "tok-123")
    state["script"] = [(200, {"score": 0.75}, 0)]
    g = endpoint(url, headers={"Authorization": "Bearer ${RFT_TEST_EP_TOKEN}", "X-Team": "a"})
    sample = make_sample('{"x": 1}')
    r = g.grade(sample, {"answer": 4})
    assert r.score == 0.75 and r.error is None
    req = state["requests"][0]
    assert req["headers"]["Authorization"] == "Bearer tok-123" and req["headers"]["X-Team"] == "a"
    assert req["body"]["item"] == {"answer": 4} and req["body"]["sample"]["output_json"] == {"x": 1}
    assert isinstance(req["body"]["trace_id"], str) and len(req["body"]["trace_id"]) >= 16
    assert "tok-123" not in json.dumps(g.spec)


def test_trace_id_from_sample_is_kept_across_retries(server):
    url, state = server
    state["script"] = [(503, {}, 0), (200, {"score": 1}, 0)]
    sample = {**make_sample("x"), "trace_id": "rollout-7"}
    assert endpoint(url).grade(sample, {}).score == 1.0
    assert [r["body"]["trace_id"] for r in state["requests"]] == ["rollout-7", "rollout-7"]


@pytest.mark.parametrize("failure", [(500, {}, 0), (503, b"oops", 0), (429, {}, 0)])
def test_retries_then_scores(server, failure):
    url, state = server
    state["script"] = [failure, failure, failure, (200, {"score": 0.5}, 0)]
    r = endpoint(url).grade(make_sample("x"), {})
    assert r.score == 0.5 and len(state["requests"]) == 4


def test_unresponsive_after_three_retries_is_unscored_not_zero(server):
    url, state = server
    state["script"] = [(502, {}, 0)] * 10
    r = endpoint(url).grade(make_sample("x"), {})
    assert r.score is None and r.error == "unresponsive_reward_error"
    assert len(state["requests"]) == 4  # 1 try + 3 retries
    assert "HTTP 502" in r.details


def test_timeouts_are_retried(server):
    url, state = server
    state["script"] = [(200, {"score": 1}, 1.0)] * 4
    t0 = time.monotonic()
    r = endpoint(url, timeout_s=0.2).grade(make_sample("x"), {})
    assert r.error == "unresponsive_reward_error" and "timed out" in r.details.lower()
    assert time.monotonic() - t0 < 3.0


def test_backoff_is_exponential(server):
    url, state = server
    state["script"] = [(503, {}, 0)] * 4
    g = endpoint(url)
    waits = []
    g.backoff_s, g.sleep = 0.5, waits.append
    assert g.grade(make_sample("x"), {}).error == "unresponsive_reward_error"
    assert waits == [0.5, 1.0, 2.0]


def test_connection_refused_is_unresponsive():
    g = endpoint("http://127.0.0.1:9/grade")
    r = g.grade(make_sample("x"), {})
    assert r.error == "unresponsive_reward_error" and "Connection refused" in r.details


@pytest.mark.parametrize(
    "status, payload, fragment",
    [
        (200, {"result": 1}, 'must answer {"score": <number>}'),
        (200, {"score": "high"}, 'must answer {"score": <number>}'),
        (200, {"score": True}, 'must answer {"score": <number>}'),
        (200, b"not json", "not JSON"),
        (400, {"error": "bad"}, "HTTP 400"),
        (404, {}, "HTTP 404"),
    ],
)
def test_bad_answers_are_other_errors_without_retry(server, status, payload, fragment):
    url, state = server
    state["script"] = [(status, payload, 0)]
    r = endpoint(url).grade(make_sample("x"), {})
    assert r.score is None and r.error == "other_error" and fragment in r.details
    assert len(state["requests"]) == 1


def test_oversized_payload_is_not_sent(server):
    url, state = server
    r = endpoint(url).grade(make_sample("x" * (MAX_PAYLOAD_BYTES + 10)), {})
    assert r.error == "truncated_observation_error" and state["requests"] == []


def test_rate_limit_is_shared_across_graders(server):
    url, state = server
    a, b = endpoint(url, rate_limit=20), endpoint(url, rate_limit=20)
    assert a.bucket is b.bucket
    t0 = time.monotonic()
    results = grade_many(a, [make_sample("x")] * 15, [{}] * 15, max_workers=4) + [b.grade(make_sample("x"), {}) for _ in range(15)]
    elapsed = time.monotonic() - t0
    assert all(r.score == 1.0 for r in results)
    # 30 requests at 20/s with a burst of 20: at least (30 - 20) / 20 = 0.5 s.
    assert elapsed >= 0.45, elapsed
    times = sorted(r["time"] for r in state["requests"])
    # In any window of w seconds, at most burst + rate * w requests (+1 for the boundary).
    assert all(sum(1 for t in times if s <= t < s + 0.25) <= 20 + 5 + 1 for s in times)


def test_token_bucket_with_a_fake_clock():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    b = TokenBucket(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        b.acquire()
    assert now[0] == pytest.approx(2.0)  # 2 burst tokens free, then 4 more at 2/s
    assert len(slept) == 4


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"url": "ftp://x"}, "url must be an http"),
        ({"headers": {"A": "${RFT_TEST_SURELY_UNSET}"}}, "is not set"),
        ({"headers": {"A": "${not valid}"}}, "not a valid environment variable"),
        ({"headers": {"A": 5}}, "must be a string"),
        ({"rate_limit": 0}, "rate_limit must be a positive number"),
        ({"timeout_s": "10"}, "timeout_s must be a positive number"),
        ({"retries": 5}, "unknown field 'retries'"),
    ],
)
def test_validation(patch, fragment):
    msgs = [p.message for p in validate({"type": "endpoint", "url": "http://127.0.0.1:1/x", **patch})]
    assert any(fragment in m for m in msgs), msgs
