"""The review routes (rft.serve.api_review) in-process: queue, verdicts (all or none, OpenAI's error shape),
agreement; roles (a viewer reads, a trainer posts and is recorded as the reviewer); one live check on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from reviewfakes import make_run

from rft.registry import Registry
from rft.registry.access import set_process_principal
from rft.registry.reviews import list_verdicts
from rft.serve.app import create_app

JID = "ftjob-20261202-000000-abcdef"
SHA = "b" * 64
JSON = {"Content-Type": "application/json"}


@pytest.fixture(autouse=True)
def _no_process_user():
    set_process_principal(None)
    yield
    set_process_principal(None)


@pytest.fixture
def job(tmp_path):
    run = make_run(tmp_path / "run")
    Registry().create_job(JID, spec={}, model="tiny", run_dir=str(run), status="running", grader_sha256=SHA)
    return JID


def test_queue_verdicts_agreement_single_user(job, monkeypatch):
    monkeypatch.setenv("RFT_ACTOR", "carol")
    with TestClient(create_app(None)) as c:
        r = c.get(f"/v1/rft/jobs/{job}/review/queue", params={"n": 12, "seed": 3})
        assert r.status_code == 200, r.text
        q = r.json()
        assert q["n"] == 12 and q["strata"]["regressed"] == 2
        keys = [it["key"] for it in q["items"]]
        assert c.get(f"/v1/rft/jobs/{job}/review/queue", params={"n": 12, "seed": 3}).json()["items"] == q["items"]

        body = {"verdicts": [{"item_key": keys[0], "verdict": "fail", "note": "wrong"},
                             {"item_key": keys[1], "verdict": 1}]}
        r = c.post(f"/v1/rft/jobs/{job}/review/verdicts", content=json.dumps(body), headers=JSON)
        assert r.status_code == 200, r.text
        out = r.json()
        assert [d["item_key"] for d in out["data"]] == keys[:2] and all(d["reviewer"] == "carol" for d in out["data"])
        assert out["agreement"]["n"] + out["agreement"]["unscored"] == 2

        # all or none: one bad key refuses the whole request
        bad = {"verdicts": [{"item_key": keys[2], "verdict": "pass"}, {"item_key": "train:999:0", "verdict": "pass"}]}
        r = c.post(f"/v1/rft/jobs/{job}/review/verdicts", content=json.dumps(bad), headers=JSON)
        assert r.status_code == 400 and "train:999:0" in r.json()["error"]["message"]
        assert len(list_verdicts(Registry(), job)) == 2
        r = c.post(f"/v1/rft/jobs/{job}/review/verdicts", content=json.dumps({"item_key": keys[2], "verdict": 7}),
                   headers=JSON)
        assert r.status_code == 400 and "[0, 1]" in r.json()["error"]["message"]
        r = c.post(f"/v1/rft/jobs/{job}/review/verdicts", content=json.dumps({"item_key": keys[2], "colour": 1}),
                   headers=JSON)
        assert r.status_code == 400 and r.json()["error"]["param"] == "verdicts[0].colour"
        r = c.post(f"/v1/rft/jobs/{job}/review/verdicts", content="item_key=x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415

        ag = c.get(f"/v1/rft/jobs/{job}/review/agreement").json()
        assert ag["verdicts"] == 2 and list(ag["by_grader"]) == [SHA]
        assert c.get(f"/v1/rft/jobs/{job}/review/agreement", params={"grader_sha256": "c" * 64}).json()["verdicts"] == 0
        # reviewed items leave the queue
        assert not set(keys[:2]) & {it["key"] for it in c.get(f"/v1/rft/jobs/{job}/review/queue").json()["items"]}

        r = c.get("/v1/rft/jobs/ftjob-20261202-000000-ffffff/review/agreement")
        assert r.status_code == 404 and r.json()["error"]["param"] == "job_id"
        assert c.get(f"/v1/rft/jobs/{job[:10]}/review/queue").status_code == 404  # never a prefix match
        assert c.get(f"/v1/rft/jobs/{job}/review/queue", params={"n": 0}).status_code == 400


def test_roles_viewer_reads_trainer_posts(job):
    reg = Registry()
    toks = {name: reg.add_user(name, role, None, by="setup")[1]
            for name, role in (("ada", "admin"), ("vic", "viewer"), ("tom", "trainer"))}
    with TestClient(create_app(None)) as c:
        vic = {"Authorization": f"Bearer {toks['vic']}"}
        tom = {"Authorization": f"Bearer {toks['tom']}"}
        q = c.get(f"/v1/rft/jobs/{job}/review/queue", headers=vic)
        assert q.status_code == 200
        key = q.json()["items"][0]["key"]
        body = json.dumps({"verdicts": [{"item_key": key, "verdict": "pass"}]})
        r = c.post(f"/v1/rft/jobs/{job}/review/verdicts", content=body, headers=vic | JSON)
        assert r.status_code == 403 and "needs the trainer role" in r.json()["error"]["message"]
        r = c.post(f"/v1/rft/jobs/{job}/review/verdicts", content=body, headers=tom | JSON)
        assert r.status_code == 200, r.text
        assert [v["reviewer"] for v in list_verdicts(Registry(), job)] == ["tom"]
        assert c.get(f"/v1/rft/jobs/{job}/review/agreement").status_code == 401


def test_live_server(job):
    import httpx

    from livetools import run_live

    with run_live(create_app(None)) as base:
        r = httpx.get(f"{base}/v1/rft/jobs/{job}/review/queue?n=5", timeout=30)
        assert r.status_code == 200 and r.json()["n"] == 5
