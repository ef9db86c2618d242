"""`rft serve --model http://.../v1 --remote-model NAME`: the same front end in front of a remote
OpenAI-compatible endpoint. The "remote" here is rft's own server on the tiny model, reached in-process."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from rft.errors import RftError
from rft.serve.app import create_app

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def upstream(tiny_model_dir):
    app = create_app(str(tiny_model_dir))
    with TestClient(app):  # runs its lifespan
        yield app, app.state.worker.served_name


def _proxy(upstream, **kw):
    app, name = upstream
    seen = []

    async def handler(request: httpx.Request):
        seen.append({"path": request.url.path, "auth": request.headers.get("authorization"),
                     "body": json.loads(request.content)})
        return await httpx.ASGITransport(app=app).handle_async_request(request)

    proxy = create_app("http://remote.test/v1", remote_model=name, transport=httpx.MockTransport(handler), **kw)
    return proxy, name, seen


def test_forwards_plain_and_streaming_requests(upstream, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-remote")
    proxy, name, seen = _proxy(upstream)
    body = {"messages": HI, "max_tokens": 6, "temperature": 0}
    direct = TestClient(upstream[0]).post("/v1/chat/completions", json=body).json()
    with TestClient(proxy) as c:
        assert c.get("/v1/models").json()["data"][0]["id"] == name
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        got = r.json()
        assert got["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
        assert got["usage"]["completion_tokens"] == direct["usage"]["completion_tokens"]
        assert seen[-1] == {"path": "/v1/chat/completions", "auth": "Bearer sk-remote", "body": body | {"model": name}}
        with c.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as s:
            lines = [x for x in s.iter_lines() if x.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        text = "".join(json.loads(x[6:])["choices"][0]["delta"].get("content", "") for x in lines[:-1]
                       if json.loads(x[6:])["choices"])
        assert text == direct["choices"][0]["message"]["content"]


def test_remote_errors_keep_their_status_and_unreachable_is_502(upstream):
    proxy, name, _ = _proxy(upstream)
    with TestClient(proxy) as c:
        r = c.post("/v1/chat/completions", json={"messages": HI, "tools": [{"type": "function"}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools"  # the remote's own answer
        assert c.post("/v1/chat/completions", json={"messages": HI, "model": "other"}).status_code == 404
        assert c.post("/v1/chat/completions", json={"messages": []}).status_code == 400

    def down(request):
        raise httpx.ConnectError("connection refused")

    dead = create_app("http://remote.test/v1", remote_model=name, transport=httpx.MockTransport(down))
    with TestClient(dead) as c:
        r = c.post("/v1/chat/completions", json={"messages": HI})
        assert r.status_code == 502 and "could not be reached" in r.json()["error"]["message"]


def test_token_and_remote_model_are_required(upstream):
    proxy, _, _ = _proxy(upstream, token="s3cret")
    with TestClient(proxy) as c:
        assert c.post("/v1/chat/completions", json={"messages": HI}).status_code == 401
        ok = c.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 2},
                    headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
    with pytest.raises(RftError, match="--remote-model"):
        create_app("http://remote.test/v1")
