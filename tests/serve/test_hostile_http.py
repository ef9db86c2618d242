"""Hostile requests against a live `rft serve` on loopback (uvicorn in a thread, a free port, a scripted engine):
body limits (413 before the body is read), nesting and non-finite numbers (400, local and remote), parsing off
the event loop, the Host allowlist and cross-origin refusal (403, catalogue W3/W4), non-JSON bodies (415), the
rate limit (429 with an injected clock), and `rft serve` refusing weak tokens and bad options (exit 2).

Run: .venv/bin/python -m pytest -q -p no:cacheprovider tests/serve/test_hostile_http.py
"""

from __future__ import annotations

import json
import socket
import threading
from urllib.parse import urlsplit

import httpx
import pytest

from rft.serve import ServeLimits, create_app
from rft.serve.app import bind_hosts
from rft.serve.guard import RateLimit
from tests.clitools import assert_user_error, run_rft

HI = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}
STRONG = "x" * 40  # a token long enough for a public bind


@pytest.fixture
def make_app(tiny_model_dir, scripted):
    """create_app on the tiny model's directory with a scripted engine; `app.engine` is that engine."""

    def make(engine=None, **kw):
        eng = engine or scripted()
        app = create_app(str(tiny_model_dir), loader=lambda r: eng, **kw)
        app.state.engine = eng
        return app

    return make


def loopback_limits(**kw) -> ServeLimits:
    return ServeLimits(allowed_hosts=bind_hosts("127.0.0.1"), **kw)


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    assert "access-control-allow-origin" not in r.headers
    return err


def raw_exchange(base: str, *parts: bytes) -> tuple[int, dict, bytes]:
    """Send `parts` on one raw connection, then read one HTTP response (status, headers, body)."""
    u = urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=60) as s:
        for p in parts:
            s.sendall(p)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        want = int(headers.get("content-length", "0"))
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


# ------------------------------------------------------------------------------------- 1. body limits
def test_content_length_over_the_limit_is_413_before_the_body_is_sent(make_app, live_server):
    app = make_app(limits=loopback_limits())  # the default limit, 4 MiB
    with live_server(app) as base:
        host = urlsplit(base).netloc
        # only the headers go out: the answer cannot have waited for (or read) the 100 MB they announce
        status, headers, body = raw_exchange(base, (
            f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n").encode())
    assert status == 413
    err = json.loads(body)["error"]
    assert err["code"] == "request_too_large" and "4 MiB" in err["message"] and err["type"] == "invalid_request_error"
    assert app.state.engine.generate_calls == []


def test_chunked_body_over_the_limit_is_413(make_app, live_server):
    app = make_app(limits=loopback_limits(max_body_bytes=1000))
    with live_server(app) as base:
        host = urlsplit(base).netloc
        head = (f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n").encode()
        chunk = b"258\r\n" + b" " * 600 + b"\r\n"  # 0x258 = 600 bytes; two of them cross the 1000-byte limit
        status, _, body = raw_exchange(base, head, chunk, chunk)
        assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
        # at the limit exactly is fine, chunked or not
        ok = json.dumps({"messages": HI}).encode()
        ok += b" " * (1000 - len(ok))
        with httpx.Client(base_url=base, timeout=60) as c:
            assert c.post(CHAT, content=ok, headers=JSON).status_code == 200
            assert c.post(CHAT, content=iter([ok[:500], ok[500:]]), headers=JSON).status_code == 200
            assert_openai_error(c.post(CHAT, content=ok + b" ", headers=JSON), 413, "request_too_large")
    assert len(app.state.engine.generate_calls) == 2


# ---------------------------------------------------------------------- 2. nesting and non-finite numbers
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]


def _bodies_that_are_400() -> list[tuple[str, bytes]]:
    msgs = json.dumps(HI)
    out = [(f"temperature {v}", f'{{"messages": {msgs}, "temperature": {v}}}'.encode()) for v in NON_FINITE]
    out.append(("NaN in ignored metadata", f'{{"messages": {msgs}, "metadata": {{"x": NaN}}}}'.encode()))
    deep = '{"a":' * 40 + "1" + "}" * 40
    out.append(("40 levels in metadata", f'{{"messages": {msgs}, "metadata": {deep}}}'.encode()))
    out.append(("200k levels", b"[" * 200_000 + b"]" * 200_000))
    out.append(("a 5000-digit integer", f'{{"messages": {msgs}, "seed": {"9" * 5000}}}'.encode()))
    out.append(("not UTF-8", b'{"messages": "\xff\xfe"}'))
    return out


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_nesting_and_non_finite_numbers_are_400_and_never_forwarded(mode, make_app, live_server):
    forwarded = []

    def upstream(request: httpx.Request):
        forwarded.append(request.content)
        return httpx.Response(200, json={"choices": []})

    if mode == "local":
        app = make_app(limits=loopback_limits())
    else:
        app = create_app("http://remote.test/v1", remote_model="m", transport=httpx.MockTransport(upstream),
                         limits=loopback_limits())
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        for what, body in _bodies_that_are_400():
            err = assert_openai_error(c.post(CHAT, content=body, headers=JSON), 400)
            assert err["type"] == "invalid_request_error", what
        assert c.post(CHAT, json={"messages": HI, "temperature": 0.5}).status_code == 200  # still serving
    if mode == "local":
        assert len(app.state.engine.generate_calls) == 1
    else:
        assert len(forwarded) == 1 and b"NaN" not in forwarded[0]


# ------------------------------------------------------------------------- 3. parsing off the event loop
class SlowTokenizer:
    """Tokenises instantly, except a long prompt, which waits for `gate` (set by the test) after signalling
    `entered`: tokenising a 20 MB body took 35 s on the real tokenizer."""

    def __init__(self):
        self.entered = threading.Event()
        self.gate = threading.Event()

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        text = "".join(m["content"] for m in messages)
        if len(text) > 100_000:
            self.entered.set()
            self.gate.wait(60)  # longer than the small request's timeout below: a blocked server fails the test
        return list(range(len(text)))


def test_a_small_request_is_answered_while_a_large_one_is_tokenised(make_app, live_server, scripted):
    engine = scripted()
    engine.tokenizer = SlowTokenizer()
    app = make_app(engine, limits=loopback_limits())
    large_result: list = []
    with live_server(app) as base, httpx.Client(base_url=base, timeout=120) as c:
        big = {"messages": [{"role": "user", "content": "y" * 3_000_000}], "max_tokens": 3}  # ~3 MB, under 4 MiB
        large = threading.Thread(target=lambda: large_result.append(c.post(CHAT, json=big)))
        large.start()
        try:
            assert engine.tokenizer.entered.wait(60)  # the large request is being tokenised now
            small = c.post(CHAT, json={"messages": HI}, timeout=30)
            assert small.status_code == 200 and small.json()["choices"][0]["message"]["content"] == "fake:hi"
            assert large_result == []  # ordering, not timing: the large one cannot finish before the gate opens
        finally:
            engine.tokenizer.gate.set()
            large.join(120)
    assert large_result[0].status_code == 200 and large_result[0].json()["choices"][0]["message"]["content"] == "fak"


# ------------------------------------------------------------------------ 4. Host allowlist, cross-origin
def test_host_allowlist_on_a_loopback_bind(make_app, live_server):
    app = make_app(limits=ServeLimits(allowed_hosts=bind_hosts("127.0.0.1", ["proxy.example:8443"])))
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        port = urlsplit(base).port
        for host in ["evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example",
                     "[::2]", "proxy.example:80", "proxy.example", f"localhost:{port}x", ""]:
            err = assert_openai_error(c.get("/v1/models", headers={"Host": host}), 403, "host_not_allowed")
            assert "--allowed-host" in err["message"], host
            r = c.post(CHAT, json={"messages": HI}, headers={"Host": host})
            assert r.status_code == 403, host  # a rebinding page gets no completion either
        for host in ["localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]",
                     f"[::1]:{port}", "LOCALHOST", "proxy.example:8443"]:
            assert c.get("/v1/models", headers={"Host": host}).status_code == 200, host
    assert app.state.engine.generate_calls == []


def test_any_host_when_no_allowlist_is_set(make_app, live_server):
    # a public bind (allowed_hosts None): the token, not the Host, is the protection
    app = make_app(token=STRONG)
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        r = c.get("/v1/models", headers={"Host": "api.example", "Authorization": f"Bearer {STRONG}"})
        assert r.status_code == 200
        assert_openai_error(c.get("/v1/models", headers={"Host": "api.example"}), 401, "invalid_api_key")


@pytest.mark.parametrize("token", [None, STRONG])
def test_no_state_change_from_a_cross_origin_page(token, make_app, live_server):
    app = make_app(token=token, limits=loopback_limits())
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60, headers=auth) as c:
        own = base  # http://127.0.0.1:PORT
        for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Origin": "http://localhost:3000"},
                        {"Origin": own.replace("http://", "https://") + "0"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": own, "Sec-Fetch-Site": "cross-site"}):
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                r = c.request(method, CHAT, json={"messages": HI}, headers=headers)
                assert_openai_error(r, 403, "cross_origin_refused")
        # the server's own origin, and programs that send no Origin, are served
        same = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
        assert c.post(CHAT, json={"messages": HI}, headers=same).status_code == 200
        assert c.post(CHAT, json={"messages": HI}).status_code == 200
        # a GET from anywhere is read-only, and its answer is not readable cross-origin (no CORS headers)
        r = c.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)
    assert len(app.state.engine.generate_calls) == 2


def test_simple_request_content_types_get_415(make_app, live_server):
    app = make_app(limits=loopback_limits())
    body = json.dumps({"messages": HI})
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        # what a <form> or fetch(no-cors) on any page can send without a preflight, and a body with no type
        for ctype in ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=x", None]:
            headers = {"content-type": ctype} if ctype else {}
            r = c.post(CHAT, content=body.encode(), headers=headers)
            assert_openai_error(r, 415, "unsupported_media_type")
        ok = c.post(CHAT, content=body, headers={"content-type": "application/json; charset=utf-8"})
        assert ok.status_code == 200
    assert len(app.state.engine.generate_calls) == 1


def test_cors_preflight_gets_no_allow_headers(make_app, live_server):
    app = make_app(limits=loopback_limits())
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        r = c.options(CHAT, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                                     "Access-Control-Request-Headers": "authorization, content-type"})
        assert_openai_error(r, 403, "cross_origin_refused")
        assert not any(h.startswith("access-control-") for h in r.headers)


def test_get_routes_have_no_side_effects(make_app, live_server):
    app = make_app(limits=loopback_limits())
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        assert c.get(CHAT, params={"messages": json.dumps(HI)}).status_code == 405
        assert c.get("/v1/models").status_code == 200 and c.get("/health").status_code == 200
    assert app.state.engine.generate_calls == []


# ----------------------------------------------------------------------------------------- 6. rate limit
class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rate_limit_answers_429_with_retry_after(make_app, live_server):
    clock = FakeClock()
    app = make_app(token=STRONG, limits=loopback_limits(rate_limit=2), clock=clock)
    auth = {"Authorization": f"Bearer {STRONG}"}
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60, headers=auth) as c:
        assert c.post(CHAT, json={"messages": HI}).status_code == 200
        assert c.get("/v1/models").status_code == 200
        for _ in range(3):
            assert c.get("/health").status_code == 200  # probes are not counted
        r = c.post(CHAT, json={"messages": HI})
        err = assert_openai_error(r, 429, "rate_limit_exceeded")
        assert r.headers["retry-after"] == "30" and "2 requests per minute" in err["message"]  # 2/min: one per 30 s
        # a wrong token is refused before it is counted (401, not 429)
        assert_openai_error(c.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401)
        clock.t += 29
        assert c.post(CHAT, json={"messages": HI}).headers["retry-after"] == "1"
        clock.t += 1
        assert c.post(CHAT, json={"messages": HI}).status_code == 200
        assert c.post(CHAT, json={"messages": HI}).status_code == 429
    assert len(app.state.engine.generate_calls) == 2


def test_rate_limit_buckets_are_per_key():
    clock = FakeClock()
    rl = RateLimit(None, per_minute=60, clock=clock)
    assert [rl.take("a") for _ in range(60)] == [0.0] * 60
    assert rl.take("a") == pytest.approx(1.0)
    assert rl.take("b") == 0.0  # another token (or client) has its own bucket
    clock.t += 0.5
    assert rl.take("a") == pytest.approx(0.5)


def test_rate_limit_off_by_default(make_app, live_server):
    app = make_app(limits=loopback_limits())
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        assert all(c.get("/v1/models").status_code == 200 for _ in range(50))


# ------------------------------------------------------------------------ 5. startup: tokens and options
@pytest.mark.parametrize("args, env, needles", [
    (["--host", "0.0.0.0"], {"RFT_API_TOKEN": "short"},
     ["5-character RFT_API_TOKEN", "at least 32", "secrets.token_urlsafe(32)"]),
    (["--host", "0.0.0.0"], {"RFT_API_TOKEN": "y" * 31}, ["31-character RFT_API_TOKEN"]),
    (["--host", "0.0.0.0"], {"RFT_API_TOKEN": ""}, ["without a token", "secrets.token_urlsafe(32)"]),
    (["--port", "0"], {}, ["--port must be between 1 and 65535, got 0"]),
    (["--port", "65536"], {}, ["--port must be between 1 and 65535, got 65536"]),
    (["--max-body-mb", "0"], {}, ["--max-body-mb must be more than 0"]),
    (["--rate-limit", "-3"], {}, ["--rate-limit must be 0"]),
])
def test_serve_refuses_bad_settings_before_binding(args, env, needles):
    # the model reference does not exist: each of these must be refused before it is even looked at
    r = run_rft("serve", "--model", "no-such-model", *args, env=env, timeout=120)
    assert_user_error(r, *needles)
    assert "not found" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr  # one line


def test_serve_with_a_strong_token_goes_on_to_the_model():
    r = run_rft("serve", "--model", "no-such-model", "--host", "0.0.0.0", env={"RFT_API_TOKEN": STRONG}, timeout=120)
    assert_user_error(r, "no-such-model")


@pytest.mark.parametrize("args, needles", [
    (["--max-models", "0"], ["--max-models must be between 1 and 64"]),
    (["--model", "no-such-model"], ["no-such-model"]),
    (["--model", "no-such-model", "--port", "abc"], ["Invalid value for '--port'"]),
])
def test_serve_usage_errors(args, needles):
    assert_user_error(run_rft("serve", *args, timeout=120), *needles)


def test_serve_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        # a remote endpoint as the model: nothing to load, and it is not contacted before a request comes
        r = run_rft("serve", "--model", "http://127.0.0.1:9/v1", "--remote-model", "m", "--port", str(port),
                    timeout=120)
    assert_user_error(r, f"cannot listen on 127.0.0.1:{port}")


def test_listen_socket_says_it_is_tcp():
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; a socket made with proto 0 served
    # every small response ~40 ms late (Nagle's algorithm against delayed ACKs)
    from rft.serve.app import _listen_socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sock = _listen_socket("127.0.0.1", port)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
