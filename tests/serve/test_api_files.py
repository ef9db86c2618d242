"""OpenAI's Files API on `rft serve`: the official `openai` SDK, unchanged apart from base_url and api_key,
against a live uvicorn server on 127.0.0.1 (a scripted engine behind the tiny model's reference)."""

from __future__ import annotations

import json
from itertools import count

import httpx
import pytest

import rft.serve.api_files as api_files
from rft.files import FileStore
from rft.serve import create_app

openai = pytest.importorskip("openai")

TOKEN = "files-test-token-0123456789"
RFT_ROW = {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}
BATCH_LINE = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
              "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}}


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def server(tiny_model_dir, scripted, live_server, monkeypatch):
    """(base_url, openai client): a live server whose file store has an injected clock (one second per upload)."""
    ticks = count()
    monkeypatch.setattr(api_files, "FileStore", lambda: FileStore(clock=lambda: 1_700_000_000.0 + next(ticks)))
    app = create_app(str(tiny_model_dir), token=TOKEN, loader=lambda resolved: scripted())
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
        yield base, client
        client.close()


def _home_files(tmp_path):
    root = tmp_path / "rft_home" / "files"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_upload_list_retrieve_content_delete_with_the_sdk(server, tmp_path):
    base, client = server
    p = tmp_path / "train.jsonl"
    p.write_bytes(jsonl(RFT_ROW, RFT_ROW))
    with open(p, "rb") as fh:
        f = client.files.create(file=fh, purpose="fine-tune")
    assert f.object == "file" and f.purpose == "fine-tune" and f.filename == "train.jsonl"
    assert f.bytes == p.stat().st_size and f.status == "processed" and f.expires_at is None
    assert f.id.startswith("file-") and len(f.model_extra["sha256"]) == 64

    b = client.files.create(file=("requests.jsonl", jsonl(BATCH_LINE)), purpose="batch")
    e = client.files.create(file=("evals.jsonl", b'{"q": 1}\n{"q": 2}\n'), purpose="evals")

    # newest first; one page at a time with `after`, and the SDK's auto-pagination walks them all
    page = client.files.list(limit=2)
    assert [x.id for x in page.data] == [e.id, b.id] and page.has_more
    page2 = client.files.list(limit=2, after=b.id)
    assert [x.id for x in page2.data] == [f.id] and not page2.has_more
    assert [x.id for x in client.files.list(limit=1)] == [e.id, b.id, f.id]
    assert [x.id for x in client.files.list(order="asc")] == [f.id, b.id, e.id]
    assert [x.id for x in client.files.list(purpose="batch")] == [b.id]

    got = client.files.retrieve(f.id)
    assert got.id == f.id and got.created_at == f.created_at == 1_700_000_000
    assert client.files.content(f.id).content == p.read_bytes()
    raw = httpx.get(f"{base}/v1/files/{f.id}/content", headers={"Authorization": f"Bearer {TOKEN}"})
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert raw.headers["content-disposition"].startswith("attachment")

    gone = client.files.delete(f.id)
    assert gone.id == f.id and gone.deleted is True
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve(f.id)
    assert err.value.status_code == 404 and f.id in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.files.delete(f.id)
    assert [x.id for x in client.files.list()] == [e.id, b.id]
    assert _home_files(tmp_path) == sorted([b.id, e.id])


def test_an_invalid_upload_is_a_400_naming_its_lines_and_stores_nothing(server, tmp_path):
    _, client = server
    bad = jsonl(RFT_ROW) + b'{"messages": [{"role": "bogus", "content": "x"}]}\nnot json\n'
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    msg = err.value.body["message"]
    assert err.value.status_code == 400 and err.value.body["param"] == "file"
    assert "bad.jsonl" in msg and "line 2" in msg and "messages[0].role" in msg and "line 3" in msg, msg

    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("b.jsonl", jsonl(BATCH_LINE, {"custom_id": "a"})), purpose="batch")
    assert "line 2" in err.value.body["message"], err.value.body
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("e.jsonl", b'{"a": 1}\n[1, 2]\n'), purpose="evals")
    assert "line 2" in err.value.body["message"], err.value.body
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("t.jsonl", jsonl(RFT_ROW)), purpose="assistants")
    assert err.value.body["param"] == "purpose"
    assert client.files.list().data == [] and _home_files(tmp_path) == []


def test_hostile_ids_are_refused_and_touch_nothing(server, tmp_path):
    base, client = server
    f = client.files.create(file=("t.jsonl", jsonl(RFT_ROW)), purpose="fine-tune")
    secret = tmp_path / "rft_home" / "secret.txt"
    secret.write_text("do not serve or delete me")
    h = {"Authorization": f"Bearer {TOKEN}"}
    for raw_path in ("/v1/files/%2e%2e", "/v1/files/%2e%2e/content", "/v1/files/..%2fsecret.txt/content",
                     "/v1/files/%2Fetc%2Fpasswd", "/v1/files/file-../content", "/v1/files/FILE-0123456789ABCDEF",
                     f"/v1/files/{f.id}%2f..%2f..%2fsecret.txt/content"):
        for method in ("GET", "DELETE"):
            r = httpx.request(method, base + raw_path, headers=h)
            assert r.status_code in (400, 404, 405), (method, raw_path, r.status_code, r.text)
            assert "do not serve" not in r.text and set(r.json()) == {"error"}
    r = httpx.get(f"{base}/v1/files", params={"after": "../x"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"
    assert secret.read_text() == "do not serve or delete me"
    assert [x.id for x in client.files.list()] == [f.id] and _home_files(tmp_path) == [f.id]
    # the token is required here as on every route
    assert httpx.get(f"{base}/v1/files").status_code == 401


def test_upload_refusals_in_openai_shape(server):
    base, client = server
    h = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{base}/v1/files", headers=h, json={"purpose": "fine-tune"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = httpx.post(f"{base}/v1/files", headers=h, data={"purpose": "fine-tune"}, files={})
    assert r.status_code in (400, 415)
    r = httpx.post(f"{base}/v1/files", headers=h, data={"purpose": "fine-tune", "expires_after[anchor]": "created_at"},
                   files={"file": ("t.jsonl", jsonl(RFT_ROW))})
    assert r.status_code == 400 and r.json()["error"]["param"] == "expires_after"
    r = httpx.post(f"{base}/v1/files", headers=h, data={}, files={"file": ("t.jsonl", jsonl(RFT_ROW))})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(f"{base}/v1/files", headers=h, data={"purpose": "fine-tune"},
                   files={"file": ("../../evil.jsonl", jsonl(RFT_ROW))})
    assert r.status_code == 200 and r.json()["filename"] == "evil.jsonl"
    assert client.files.list().data[0].filename == "evil.jsonl"


def test_uploads_have_their_own_body_limit(tiny_model_dir, scripted, live_server, tmp_path):
    """An upload larger than the JSON routes' body limit is accepted up to max_upload_bytes, refused over it."""
    from rft.serve import ServeLimits

    limits = ServeLimits(max_body_bytes=64 * 1024, max_upload_bytes=256 * 1024)
    app = create_app(str(tiny_model_dir), token=TOKEN, loader=lambda resolved: scripted(), limits=limits)
    row = json.dumps(RFT_ROW) + "\n"
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
        big = (row * (100 * 1024 // len(row))).encode()  # ~100 KiB: over the JSON limit, under the upload one
        f = client.files.create(file=("big.jsonl", big), purpose="fine-tune")
        assert f.bytes == len(big)
        with pytest.raises(openai.APIStatusError) as err:
            client.files.create(file=("huge.jsonl", big * 3), purpose="fine-tune")
        assert err.value.status_code in (400, 413)
        assert [x.id for x in client.files.list()] == [f.id]
        client.close()
    assert _home_files(tmp_path) == [f.id]
