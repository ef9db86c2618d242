"""endpoint graders against a scripted HTTP server on 127.0.0.1 (bounded requests, stops by itself)."""

import ipaddress
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rft.errors import RftError
from rft.graders import GraderContext, HttpClient, build, grade_many, make_sample, validate
from rft.graders import netguard
from rft.graders.endpoint import MAX_PAYLOAD_BYTES, EndpointGrader
from rft.graders.httpclient import TokenBucket
from rft.graders.multi import MultiGrader
from rft.graders.retry import Timing

NO_WAITING = Timing(sleep=lambda s: None)  # retries without sleeping, so the tests stay fast
LOOPBACK_OK = GraderContext(allow_private_hosts=("127.0.0.1",), http=HttpClient(timing=NO_WAITING))  # the mock server lives on loopback

MAX_REQUESTS = 500  # the server refuses to answer more than this: a runaway retry loop cannot hammer it

# Every outbound connection this process makes is recorded; one to a non-loopback address is stopped before a
# packet leaves (an audit hook that raises aborts socket.connect), so a refused address that slipped through the
# policy fails the test instead of sending traffic.
CONNECTS: list = []


def _audit(event, args):
    if event == "socket.connect":
        addr = args[1]
        if isinstance(addr, tuple) and isinstance(addr[0], str):
            CONNECTS.append(addr)
            host = addr[0].split("%", 1)[0]
            try:
                ok = ipaddress.ip_address(host).is_loopback
            except ValueError:
                ok = False
            if not ok:
                raise ConnectionRefusedError(f"test guard: refused to connect to non-loopback {addr}")


sys.addaudithook(_audit)


def _start_server():
    """`script` is a list of (status, body, delay_s) answers used in order; then {"score": 1.0}. A body may
    also be (payload, {header: value}) to add headers (e.g. a redirect's Location)."""
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
            payload, extra_headers = payload if isinstance(payload, tuple) else (payload, {})
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra_headers.items():
                    self.send_header(k, v)
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
    return srv, state


@pytest.fixture
def server():
    srv, state = _start_server()
    yield f"http://127.0.0.1:{srv.server_address[1]}/grade", state
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def second_server():
    srv, state = _start_server()
    yield srv.server_address[1], state
    srv.shutdown()
    srv.server_close()


def endpoint(url, *, context=LOOPBACK_OK, **extra):
    return build({"type": "endpoint", "name": "ep", "url": url, **extra}, context=context)


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
    r = endpoint(url, timeout_s=0.2).grade(make_sample("x"), {})
    assert r.error == "unresponsive_reward_error" and "timed out" in r.details.lower()
    # what happened, not how long it took: four requests, each given up on at its timeout (the server would
    # have answered {"score": 1} after 1 s, so a timeout_s that was not applied would have scored)
    assert len(state["requests"]) == 4 and r.details.lower().count("timed out") == 4


def _ctx(fake_time):
    return GraderContext(allow_private_hosts=("127.0.0.1",), http=HttpClient(timing=fake_time.timing()))


def test_backoff_is_exponential_with_full_jitter(server, fake_time):
    url, state = server
    state["script"] = [(503, {}, 0)] * 4
    g = endpoint(url, context=_ctx(fake_time))
    assert g.grade(make_sample("x"), {}).error == "unresponsive_reward_error"
    assert fake_time.sleeps == [0.5, 1.0, 2.0]  # the top of each window (the fake draw is 1.0)
    fake_time.draw, fake_time.sleeps[:] = 0.25, []
    state["script"] = [(503, {}, 0)] * 4
    assert g.grade(make_sample("x"), {}).error == "unresponsive_reward_error"
    assert fake_time.sleeps == [0.125, 0.25, 0.5]  # a uniform draw inside each window


def test_retry_after_is_honoured_up_to_a_cap(server, fake_time):
    url, state = server
    state["script"] = [(503, ({}, {"Retry-After": "4"}), 0), (503, ({}, {"Retry-After": "600"}), 0),
                       (503, ({}, {"Retry-After": "soon"}), 0)]
    r = endpoint(url, context=_ctx(fake_time)).grade(make_sample("x"), {})
    assert r.score == 1.0 and len(state["requests"]) == 4
    assert fake_time.sleeps == [4.0, 30.0, 2.0]  # as sent, capped at 30 s, and backoff for a header that is not seconds


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
    ctx = GraderContext(allow_private_hosts=("127.0.0.1",))  # real time: this test measures the limiter
    a, b = endpoint(url, rate_limit=20, context=ctx), endpoint(url, rate_limit=20, context=ctx)
    assert a.bucket is b.bucket
    assert endpoint(url, rate_limit=20).bucket is not a.bucket  # shared within a context, not through a global
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
    msgs = [p.message for p in validate({"type": "endpoint", "url": "http://127.0.0.1:1/x", **patch}, context=LOOPBACK_OK)]
    assert any(fragment in m for m in msgs), msgs


# --- W7: SSRF. Loopback, link-local, private, ... are refused unless the build context allows them. ------------

REFUSED_URLS = [
    ("http://127.0.0.1:{port}/grade", "a loopback address"),
    ("http://localhost:{port}/grade", "a loopback address"),
    ("http://LocalHost.:{port}/grade", "a loopback address"),
    ("http://[::1]:{port}/grade", "a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
    ("http://[fe80::1]/grade", "a link-local address"),
    ("http://10.0.0.1/grade", "a private address"),
    ("http://172.16.5.4/grade", "a private address"),
    ("http://192.168.1.1/grade", "a private address"),
    ("http://[fc00::1]/grade", "a private address"),
    ("http://0.0.0.0:{port}/grade", "an unspecified address"),
    ("http://224.0.0.1/grade", "a multicast address"),
    ("http://240.0.0.1/grade", "a reserved address"),
    ("http://[::ffff:127.0.0.1]:{port}/grade", "a loopback address"),
    ("http://100.64.0.1/grade", "not a globally routable address"),
]


@pytest.mark.parametrize("url, why", REFUSED_URLS)
def test_refused_at_validation_without_the_allowlist(server, url, why):
    url = url.format(port=server[0].rsplit(":", 1)[1].split("/")[0])
    spec = {"type": "endpoint", "url": url}
    msgs = [p.message for p in validate(spec)]
    assert any(why in m and "rft.network.allow_private_hosts" in m for m in msgs), msgs
    with pytest.raises(RftError, match="may not reach"):
        build(spec)
    # ... also inside a multi grader (the context travels to sub-graders)
    with pytest.raises(RftError, match="graders.ep.url"):
        build({"type": "multi", "graders": {"ep": spec}, "calculate_output": "ep"})


@pytest.mark.parametrize("url, why", REFUSED_URLS)
def test_refused_at_grading_before_connecting(server, url, why):
    """A grader that skipped validation (built directly) is still refused at connect time, with no traffic."""
    url = url.format(port=server[0].rsplit(":", 1)[1].split("/")[0])
    g = EndpointGrader({"type": "endpoint", "url": url}, context=GraderContext(http=HttpClient(timing=NO_WAITING)))
    before = len(CONNECTS)
    r = g.grade(make_sample("x"), {})
    assert r.score is None and r.error == "other_error" and "refused to connect" in r.details, r
    assert CONNECTS[before:] == [] and server[1]["requests"] == []


def test_the_allowlist_admits_exactly_what_it_names(server):
    url, state = server
    port = url.rsplit(":", 1)[1].split("/")[0]
    for allow in (["127.0.0.1"], ["127.0.0.0/8"], ["10.0.0.0/8", "127.0.0.1/32"]):
        g = build({"type": "endpoint", "url": url}, context=GraderContext(allow_private_hosts=tuple(allow)))
        assert g.grade(make_sample("x"), {}).score == 1.0
    # hostname entries trust the name, not the address: "localhost" admits http://localhost, not http://127.0.0.1
    ctx = GraderContext(allow_private_hosts=("localhost",))
    assert build({"type": "endpoint", "url": f"http://localhost:{port}/grade"}, context=ctx).grade(make_sample("x"), {}).score == 1.0
    with pytest.raises(RftError, match="127.0.0.1 is a loopback address"):
        build({"type": "endpoint", "url": url}, context=ctx)
    with pytest.raises(RftError, match="may not reach"):  # one private range does not open another
        build({"type": "endpoint", "url": url}, context=GraderContext(allow_private_hosts=("10.0.0.0/8",)))


def _resolve_to(ip, calls=None):
    def fake(host, port):
        if calls is not None:
            calls.append(host)
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (ip, port) if family == socket.AF_INET else (ip, port, 0, 0))]

    return fake


def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time(server, monkeypatch):
    url, state = server
    port = url.rsplit(":", 1)[1].split("/")[0]
    calls = []
    monkeypatch.setattr(netguard, "getaddrinfo", _resolve_to("127.0.0.1", calls))
    spec = {"type": "endpoint", "url": f"http://rebind.example.test:{port}/grade"}
    g = build(spec, context=GraderContext(http=HttpClient(timing=NO_WAITING)))  # a name: nothing to see until it is resolved
    before = len(CONNECTS)
    r = g.grade(make_sample("x"), {})
    assert r.error == "other_error" and "rebind.example.test (127.0.0.1) is a loopback address" in r.details
    assert CONNECTS[before:] == [] and state["requests"] == [] and calls == ["rebind.example.test"]


def test_allowed_name_connects_to_the_address_that_was_checked(server, monkeypatch):
    """The name exists only in the fake resolver, so an answer proves the connection used the checked address
    (resolved once per request) instead of resolving again."""
    url, state = server
    port = url.rsplit(":", 1)[1].split("/")[0]
    calls = []
    monkeypatch.setattr(netguard, "getaddrinfo", _resolve_to("127.0.0.1", calls))
    spec = {"type": "endpoint", "url": f"http://grader.example.test:{port}/grade"}
    for allow in ("grader.example.test", "127.0.0.1"):
        g = build(spec, context=GraderContext(allow_private_hosts=(allow,)))
        assert g.grade(make_sample("x"), {}).score == 1.0
    assert calls == ["grader.example.test"] * 2
    assert ("127.0.0.1", int(port)) in CONNECTS  # the audit hook sees connections (so the "no traffic" checks mean something)
    assert state["requests"][0]["headers"]["Host"] == f"grader.example.test:{port}"  # virtual hosting still works


def test_a_name_resolving_to_metadata_or_private_addresses_is_refused(monkeypatch):
    for ip in ("169.254.169.254", "10.0.0.1", "fd00::1", "::ffff:10.1.2.3"):
        monkeypatch.setattr(netguard, "getaddrinfo", _resolve_to(ip))
        g = build({"type": "endpoint", "url": "http://metadata.example.test/x"}, context=GraderContext(http=HttpClient(timing=NO_WAITING)))
        before = len(CONNECTS)
        r = g.grade(make_sample("x"), {})
        assert r.error == "other_error" and "refused to connect" in r.details and CONNECTS[before:] == [], (ip, r)


def test_a_redirect_to_loopback_from_an_allowed_host_is_not_followed(server, second_server, monkeypatch):
    url, state = server
    port = url.rsplit(":", 1)[1].split("/")[0]
    target_port, target = second_server
    monkeypatch.setattr(netguard, "getaddrinfo", _resolve_to("127.0.0.1"))
    state["script"] = [(302, ({}, {"Location": f"http://127.0.0.1:{target_port}/steal"}), 0)]
    g = build({"type": "endpoint", "url": f"http://grader.example.test:{port}/grade"},
              context=GraderContext(allow_private_hosts=("grader.example.test",)))
    r = g.grade(make_sample("x"), {})
    assert r.score is None and r.error == "other_error" and "redirect" in r.details and "/steal" in r.details
    assert len(state["requests"]) == 1 and target["requests"] == []


def test_public_addresses_pass_the_check_without_any_traffic(monkeypatch):
    monkeypatch.setattr(netguard, "getaddrinfo", _resolve_to("93.184.216.34"))
    allow = netguard.HostAllowlist()
    assert netguard.resolve_checked("example.test", 443, allow) == [(socket.AF_INET, ("93.184.216.34", 443))]
    assert netguard.literal_host_problem("https://93.184.216.34/x", allow) is None
    assert netguard.literal_host_problem("https://grader.example.com/x", allow) is None  # checked when resolved


@pytest.mark.parametrize("ip, why", [
    ("8.8.8.8", None), ("2606:4700::1111", None), ("127.0.0.2", "a loopback address"),
    ("169.254.0.1", "a link-local address"), ("::ffff:169.254.169.254", "a link-local address (inside ::ffff:a9fe:a9fe)"),
    ("2002:7f00:1::", "a loopback address (inside 2002:7f00:1::)"),  # 6to4 wrapping 127.0.0.1
    ("::", "an unspecified address"), ("ff02::1", "a multicast address"), ("192.0.2.1", "a private address"),
])
def test_blocked_reason(ip, why):
    assert netguard.blocked_reason(ipaddress.ip_address(ip)) == why


@pytest.mark.parametrize("entry", ["http://127.0.0.1", "10.0.0.0/33", "127.0.0.1:8000", "", "bad host", 5])
def test_allowlist_entries_are_checked(entry):
    with pytest.raises(RftError, match="allow_private_hosts"):
        GraderContext(allow_private_hosts=(entry,))


def test_allowlist_accepts_names_ips_and_blocks():
    ctx = GraderContext(allow_private_hosts=("Grader.Internal.", "::1", "[fe80::1]", "10.0.0.0/8", "localhost"))
    a = ctx.allowlist
    assert a.allows_host("grader.internal") and a.allows_host("LOCALHOST") and not a.allows_host("other.internal")
    assert a.allows_ip(ipaddress.ip_address("10.9.8.7")) and a.allows_ip(ipaddress.ip_address("::1"))
    assert not a.allows_ip(ipaddress.ip_address("192.168.0.1"))


def test_a_score_that_overflows_float32_is_unscored(server):
    url, state = server
    state["script"] = [(200, {"score": 1e39}, 0), (200, {"score": 3.4e38}, 0)]
    r = endpoint(url).grade(make_sample("x"), {})
    assert r.score is None and r.error == "other_error" and "float32" in r.details
    assert endpoint(url).grade(make_sample("x"), {}).score == 3.4e38
