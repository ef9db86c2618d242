"""Hub-cache models in `GET /v1/models`: a model in the local Hugging Face hub cache (the fake entry the hub tests
build around the tiny random model) is listed with owned_by and engine as for the embedded model, found by
`GET /v1/models/{Org/Name}`, served by its hub id, and `rft models list --json` shows the same engine.

Run: .venv/bin/python -m pytest -q tests/serve/test_models_hub.py
"""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from rft.serve import create_app
from tests.clitools import run_rft
from tests.test_hub_cache import REPO, hub, make_entry  # noqa: F401 - `hub`: the empty-cache fixture


def test_a_hub_cache_model_is_listed_and_served(hub, tiny_model_dir, tmp_path):
    snap = make_entry(hub, tiny_model_dir)
    broken = make_entry(hub, tiny_model_dir, repo="TinyOrg/Broken", commit="b" * 40)
    (broken / "model.safetensors").unlink()  # a snapshot without weights: listed as broken, not served
    with TestClient(create_app(None)) as c:
        data = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        m = data[REPO]
        assert m["object"] == "model" and m["owned_by"] == "rft" == data["smollm2-135m-instruct"]["owned_by"]
        assert m["rft"] == {"kind": "hub", "status": "ready", "engine": "fast"}
        assert data["smollm2-135m-instruct"]["rft"]["engine"] == "fast"
        assert data["TinyOrg/Broken"]["rft"]["status"] == "broken"
        assert c.get(f"/v1/models/{REPO}").json() == m
        r = c.post("/v1/chat/completions", json={"model": REPO, "max_tokens": 2, "temperature": 0,
                                                 "messages": [{"role": "user", "content": "Say red"}]})
        assert r.status_code == 200 and r.json()["model"] == REPO, r.text
    r = run_rft("models", "list", "--json", env={"HF_HUB_CACHE": str(hub), "HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr
    rows = {x["id"]: x for x in json.loads(r.stdout)}
    assert rows[REPO]["kind"] == "hub" and rows[REPO]["engine"] == "fast" and rows[REPO]["path"] == str(snap)
