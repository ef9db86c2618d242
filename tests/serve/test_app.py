"""The FastAPI app in-process (TestClient): routes, SSE streaming, errors, auth, alias switching, batching."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from rft import models
from rft.engine import SamplingParams
from rft.errors import RftError
from rft.models import ResolvedModel
from rft.openai_chat import ChatRequestError, parse_chat_body
from rft.serve import create_app, is_loopback, serve
from rft.serve.worker import ModelWorker

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def target(monkeypatch, tmp_path):
    """`rft.models.resolve` for 'alias:prod' returns whatever target["path"] names (a promote is a write here);
    target["error"] makes it fail like a deleted alias."""
    state = {"path": tmp_path / "a", "error": None}
    real = models.resolve

    def fake_resolve(ref, **kw):
        if ref != "alias:prod":
            return real(ref, **kw)
        if state["error"]:
            raise RftError(state["error"])
        return ResolvedModel(ref, state["path"], "checkpoint")

    monkeypatch.setattr(models, "resolve", fake_resolve)
    return state


@pytest.fixture
def fake_client(target, scripted):
    engines = []

    def loader(resolved):
        engines.append(scripted(label=resolved.path.name))
        return engines[-1]

    with TestClient(create_app("alias:prod", loader=loader)) as client:
        client.engines = engines
        yield client


def test_models_routes(fake_client):
    c = fake_client
    listing = c.get("/v1/models").json()
    ids = [m["id"] for m in listing["data"]]
    assert listing["object"] == "list" and ids[0] == "alias:prod" and "smollm2-135m-instruct" in ids
    assert listing["data"][0]["object"] == "model" and listing["data"][0]["owned_by"] == "rft"
    assert c.get("/v1/models/alias:prod").json()["id"] == "alias:prod"
    r = c.get("/v1/models/gpt-4o")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert c.get("/health").json() == {"status": "ok", "model": "alias:prod"}


def test_chat_completion(fake_client):
    r = fake_client.post("/v1/chat/completions", json={"model": "alias:prod", "messages": HI, "max_tokens": 50})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "alias:prod"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "a:hi"},
                                "finish_reason": "stop", "logprobs": None}]
    assert body["usage"]["prompt_tokens"] == 2 and body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == 6
    # the model field may be left out; the request went to the engine with OpenAI's default temperature
    assert fake_client.post("/v1/chat/completions", json={"messages": HI}).status_code == 200
    assert fake_client.engines[0].generate_calls[-1][1].temperature == 1.0


@pytest.mark.parametrize("body, status, param", [
    ({"model": "gpt-4o", "messages": HI}, 404, "model"),
    ({"messages": HI, "tools": [{"type": "function"}]}, 400, "tools"),
    ({"messages": HI, "n": 2, "prediction": {"type": "content", "content": "x"}}, 400, "n"),
    ({"messages": []}, 400, "messages"),
    ({"messages": HI, "bogus": 1}, 400, "bogus"),
    ([1, 2], 400, None),
])
def test_chat_errors_have_openai_shape(fake_client, body, status, param):
    r = fake_client.post("/v1/chat/completions", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and err["message"]


def test_invalid_json_and_unknown_routes(fake_client):
    r = fake_client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = fake_client.get("/v1/completions")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert fake_client.get("/v1/chat/completions").status_code == 405


def test_engine_failure_is_a_clean_error(fake_client):
    r = fake_client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "boom"}]})
    assert r.status_code == 400 and "scripted failure" in r.json()["error"]["message"]


def test_streaming(fake_client, parse_sse):
    r = fake_client.post("/v1/chat/completions", json={"messages": HI, "stream": True,
                                                       "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    ev = parse_sse(r.text)
    assert ev[-1] == "[DONE]"
    chunks = ev[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "a:hi"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    # include_usage: every chunk has usage null except the last, which has no choices
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4

    plain = parse_sse(fake_client.post("/v1/chat/completions", json={"messages": HI, "stream": True}).text)
    assert all("usage" not in c for c in plain[:-1]) and plain[-1] == "[DONE]"


def test_streaming_n2_and_prediction(fake_client, parse_sse):
    ev = parse_sse(fake_client.post("/v1/chat/completions", json={"messages": HI, "stream": True, "n": 2}).text)
    by_index = {0: "", 1: ""}
    for c in ev[:-1]:
        for ch in c["choices"]:
            by_index[ch["index"]] += ch["delta"].get("content", "")
    assert by_index == {0: "a:hi", 1: "a:hi"}

    ev = parse_sse(fake_client.post("/v1/chat/completions", json={
        "messages": HI, "stream": True, "stream_options": {"include_usage": True},
        "prediction": {"type": "content", "content": "a:hi"}}).text)
    assert ev[-2]["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] == 4
    assert fake_client.engines[0].predicted_calls[-1][2] == "a:hi"


def test_stream_error_after_start_is_an_error_event(fake_client, parse_sse):
    r = fake_client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "boom"}], "stream": True})
    ev = parse_sse(r.text)
    assert "[DONE]" not in ev and "scripted failure" in ev[-1]["error"]["message"]


def test_stream_error_before_start_keeps_its_status(tiny_model_dir):
    with TestClient(create_app(str(tiny_model_dir))) as c:
        r = c.post("/v1/chat/completions", json={"messages": HI, "stream": True, "max_tokens": 1000})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_token_is_checked_on_every_route(target, scripted):
    app = create_app("alias:prod", token="s3cret-token", loader=lambda r: scripted())
    with TestClient(app) as c:
        for method, path in [("get", "/v1/models"), ("get", "/health"), ("post", "/v1/chat/completions"),
                             ("get", "/nowhere"), ("get", "/docs")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"},
                            {"Authorization": "s3cret-token"}):
                r = c.request(method, path, headers=headers, json={"messages": HI})
                assert r.status_code == 401, (path, headers)
                assert r.json()["error"]["code"] == "invalid_api_key"
                assert r.headers["www-authenticate"] == "Bearer"
        ok = {"Authorization": "Bearer s3cret-token"}
        assert c.get("/v1/models", headers=ok).status_code == 200
        assert c.post("/v1/chat/completions", headers=ok, json={"messages": HI}).status_code == 200


def test_alias_switch_without_restart(target, tiny_model_dir, tiny_model_dir_b):
    from rft.engine import load_engine

    body = {"messages": HI, "max_tokens": 12, "temperature": 1.0, "seed": 3}
    params = parse_chat_body(body).params
    expect = {d: load_engine(str(d)).generate([HI], params)[0][0].text for d in (tiny_model_dir, tiny_model_dir_b)}
    assert expect[tiny_model_dir] != expect[tiny_model_dir_b]  # the two models are distinguishable

    target["path"] = tiny_model_dir
    with TestClient(create_app("alias:prod", max_models=1)) as c:
        pool = c.app.state.pool
        content = lambda: c.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]  # noqa: E731
        assert content() == expect[tiny_model_dir]
        target["path"] = tiny_model_dir_b  # promote: the old target is closed to make room (max_models=1)
        assert content() == expect[tiny_model_dir_b]
        assert pool.loads == 2 and pool.closes == 1
        assert content() == expect[tiny_model_dir_b] and pool.loads == 2  # unchanged target: no reload
        target["path"] = tiny_model_dir  # rollback
        assert content() == expect[tiny_model_dir] and pool.loads == 3 and pool.closes == 2
        target["error"] = "alias 'prod' not found"  # deleted: refuse rather than serve a stale model
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 503 and "alias 'prod' not found" in r.json()["error"]["message"]


def test_worker_micro_batches_queued_requests(target, scripted):
    eng = scripted()
    eng.gate = threading.Event()
    w = ModelWorker("alias:prod", loader=lambda r: eng)
    try:
        first = w.submit_chat(parse_chat_body({"messages": [{"role": "user", "content": "1"}]}))
        assert eng.entered.wait(30)  # the worker is busy with the first request
        queued = [w.submit_chat(parse_chat_body({"messages": [{"role": "user", "content": c}], **extra}))
                  for c, extra in [("2", {}), ("3", {}), ("4", {"max_tokens": 3})]]
        eng.gate.set()
        results = [f.result(30) for f in [first, *queued]]
    finally:
        w.close()
    assert [r["choices"][0]["message"]["content"] for r in results] == ["fake:1", "fake:2", "fake:3", "fak"]
    batches = [sorted(m[-1]["content"] for m in prompts) for prompts, _ in eng.generate_calls]
    assert batches[0] == ["1"]
    assert sorted(batches[1:]) == [["2", "3"], ["4"]]  # the queued requests ran as one batch per params


def test_worker_refuses_work_after_close(target, scripted):
    w = ModelWorker("alias:prod", loader=lambda r: scripted())
    w.close()
    with pytest.raises(ChatRequestError) as ei:
        w.submit_chat(parse_chat_body({"messages": HI}))
    assert ei.value.status_code == 503


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.5", False), ("example.com", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_serve_refuses_public_bind_without_token(monkeypatch):
    monkeypatch.delenv("RFT_API_TOKEN", raising=False)
    # the model reference is never looked at: the token check comes first
    with pytest.raises(RftError, match="refusing to bind to 0.0.0.0 without a token"):
        serve("no-such-model", host="0.0.0.0", port=1)
    monkeypatch.setenv("RFT_API_TOKEN", "")
    with pytest.raises(RftError, match="without a token"):
        serve("no-such-model", host="0.0.0.0", port=1)


def test_cli_serve(monkeypatch):
    from typer.testing import CliRunner

    from rft.cli.main import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["serve", "--help"]).output
    assert "--model" in help_text and "RFT_API_TOKEN" in help_text
    monkeypatch.delenv("RFT_API_TOKEN", raising=False)
    res = runner.invoke(app, ["serve", "--model", "no-such-model", "--host", "0.0.0.0"])
    assert isinstance(res.exception, RftError) and "without a token" in str(res.exception)
    res = runner.invoke(app, ["serve", "--model", "no-such-model"])
    assert isinstance(res.exception, RftError) and "not found" in str(res.exception)


def test_sampling_params_reach_the_engine(fake_client):
    fake_client.post("/v1/chat/completions", json={"messages": HI, "temperature": 0.2, "top_p": 0.9, "n": 2,
                                                   "max_completion_tokens": 9, "stop": ["x"], "seed": 5})
    assert fake_client.engines[0].generate_calls[-1][1] == SamplingParams(
        n=2, temperature=0.2, top_p=0.9, max_new_tokens=9, stop=("x",), seed=5)


def test_worker_skips_cancelled_streams_and_survives_a_gone_consumer(target, scripted):
    eng = scripted()
    eng.gate = threading.Event()
    w = ModelWorker("alias:prod", loader=lambda r: eng)
    try:
        first = w.submit_chat(parse_chat_body({"messages": HI}))
        assert eng.entered.wait(30)
        got: list = []
        cancelled = w.submit_stream(parse_chat_body({"messages": HI, "stream": True}), got.append)
        cancelled.cancel()  # the client disconnected while queued

        def gone(ev):
            raise RuntimeError("Event loop is closed")

        w.submit_stream(parse_chat_body({"messages": HI, "stream": True}), gone)
        last = w.submit_chat(parse_chat_body({"messages": [{"role": "user", "content": "after"}]}))
        eng.gate.set()
        assert first.result(30)["choices"][0]["message"]["content"] == "fake:hi"
        assert last.result(30)["choices"][0]["message"]["content"] == "fake:after"  # the worker is alive
    finally:
        w.close()
    assert got == []
