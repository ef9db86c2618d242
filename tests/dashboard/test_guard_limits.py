"""The front door's dashboard pieces without a browser: the upload limit of POST /v1/files and the sessions."""

from __future__ import annotations

import httpx

from rft.serve.guard import Sessions


def test_upload_limit_applies_to_post_v1_files_only(tiny_model_dir, live_server_app):
    from rft.serve.guard import ServeLimits

    with live_server_app(ServeLimits(max_body_bytes=100, max_upload_bytes=1000)) as url, httpx.Client(base_url=url) as c:
        body = b"x" * 500
        r = c.post("/v1/files", content=body, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code != 413  # under the upload limit (the files routes answer it; here no route: 404)
        r = c.post("/v1/files", content=b"x" * 2000, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 413 and "upload" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 413  # every other route keeps max_body_bytes


def test_sessions_expire_and_csrf_is_per_session():
    now = [0.0]
    s = Sessions("tok", ttl_s=10, clock=lambda: now[0])
    assert s.login("nope") is None
    a, b = s.login("tok"), s.login(" tok ")
    assert a and b and a != b and s.valid(a)
    assert s.check_csrf(a, s.csrf_token(a)) and not s.check_csrf(b, s.csrf_token(a))
    assert not s.check_csrf(a, None) and not s.check_csrf(a, "")
    now[0] = 11.0
    assert not s.valid(a)
    s.logout(b)
    assert not s.valid(b)
    assert not Sessions(None).required and Sessions(None).login("") is None
