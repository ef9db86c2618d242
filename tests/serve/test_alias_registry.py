"""`rft serve --model alias:production` on the real registry: promote and rollback switch the served model
without a restart, and a checkpoint tampered with after promotion is refused (503), never served."""

from __future__ import annotations

from fastapi.testclient import TestClient

from rft.hashing import sha256_file
from rft.models import ResolvedModel, load
from rft.openai_chat import parse_chat_body
from rft.registry import Registry
from rft.serve.app import create_app
from rft.train.checkpoint import save_model_checkpoint

HI = [{"role": "user", "content": "hi"}]


def _register(reg: Registry, src, out, step: int) -> str:
    model, tok = load(ResolvedModel(str(src), src, "directory"))
    save_model_checkpoint(model, tok, out, {"job_id": "ftjob-serve", "step": step})
    cid = reg.add_checkpoint("ftjob-serve", step, str(out), sha256_file(out / "manifest.json"))
    reg.add_verdict(cid, {"passed": True, "checks": []})
    reg.approve(cid, by="ann", note="ok")
    return cid


def test_served_alias_follows_promote_and_rollback(tmp_path, tiny_model_dir, tiny_model_dir_b):
    from rft.engine import load_engine

    reg = Registry()
    reg.create_job("ftjob-serve", spec={}, model="m", run_dir=str(tmp_path))
    a = _register(reg, tiny_model_dir, tmp_path / "a", 1)
    b = _register(reg, tiny_model_dir_b, tmp_path / "b", 2)
    body = {"messages": HI, "max_tokens": 12, "temperature": 1.0, "seed": 3}
    params = parse_chat_body(body).params
    expect = {c: load_engine(f"ckpt:{c}").generate([HI], params)[0][0].text for c in (a, b)}
    assert expect[a] != expect[b]
    reg.promote(a, "production", by="ann")
    with TestClient(create_app("alias:production")) as client:
        say = lambda: client.post("/v1/chat/completions", json=body)  # noqa: E731
        assert say().json()["choices"][0]["message"]["content"] == expect[a]
        reg.promote(b, "production", by="ann")
        assert say().json()["choices"][0]["message"]["content"] == expect[b]
        reg.rollback("production", by="ann")
        assert say().json()["choices"][0]["message"]["content"] == expect[a]
        # tamper with b, then move the alias to it again: the server refuses rather than serve unverified weights
        w = tmp_path / "b" / "model.safetensors"
        raw = bytearray(w.read_bytes())
        raw[-1] ^= 1
        w.write_bytes(bytes(raw))
        reg.promote(b, "production", by="ann")
        r = say()
        assert r.status_code == 503 and "tampered or corrupt" in r.json()["error"]["message"]
