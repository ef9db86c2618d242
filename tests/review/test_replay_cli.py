"""`rft replay`, `rft explain` and `rft eval --replay` through the installed entry point: the JSON they print, the
lineage that records the replay, and user mistakes (unknown job, bad grader file, a job with no samples, a
checkpoint with no evaluation) as one error line with exit 2."""

from __future__ import annotations

import json

from clitools import assert_user_error, run_rft
from replaytools import FIXED, grader_file, make_job


def test_replay_json_and_text(tmp_path):
    job = make_job(tmp_path)
    g = grader_file(tmp_path, FIXED)
    r = run_rft("replay", job["id"], "--grader", str(g), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["object"] == "rft.replay" and "items" not in res
    assert res["training"]["flips"]["pass_to_fail_keys"] == ["train:1:1", "train:1:3", "train:1:7"]
    assert res["evaluations"][0]["new"]["accuracy"] == 0.5
    r = run_rft("replay", job["id"][:10], "--grader", str(g))  # a unique prefix works too
    assert r.returncode == 0, r.stderr
    assert "training flips: 3 pass->fail, 1 fail->pass" in r.stdout and "train:1:6" in r.stdout
    assert "advantages (grpo, groups of 4): 4 of 8 samples change sign, in 2 of 2 groups" in r.stdout


def test_replay_shows_in_lineage(tmp_path):
    from rft.registry import Registry
    from rft.registry.lineage import format_lineage, lineage

    job = make_job(tmp_path)
    res = json.loads(run_rft("replay", job["id"], "--grader", str(grader_file(tmp_path, FIXED)), "--json").stdout)
    cid = Registry().add_checkpoint(job["id"], 1, str(tmp_path / "ck"), "m" * 64)
    lin = lineage(f"ckpt:{cid}", verify=False)
    assert lin["graders"][0]["role"] == "trained with"
    (rp,) = lin["replays"]
    assert rp["id"] == res["id"] and rp["old_grader_sha256"] == lin["graders"][0]["sha256"]
    assert rp["new_grader_sha256"] == res["graders"]["new"]["sha256"] and rp["pass_to_fail"] == 5
    text = format_lineage(lin)
    assert f"replay          {res['id']}" in text and res["graders"]["new"]["sha256"] in text


def test_unknown_job(tmp_path):
    make_job(tmp_path)
    assert_user_error(run_rft("replay", "ftjob-nope", "--grader", str(grader_file(tmp_path, FIXED))), "no job 'ftjob-nope'")


def test_bad_grader_file(tmp_path):
    job = make_job(tmp_path)
    bad = grader_file(tmp_path, dict(FIXED, operaton="eq"), "bad.json")
    r = run_rft("replay", job["id"], "--grader", str(bad))
    assert_user_error(r, "bad.json", "operaton")
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_user_error(run_rft("replay", job["id"], "--grader", str(broken)), "broken.json")
    assert_user_error(run_rft("replay", job["id"], "--grader", str(tmp_path / "missing.json")), "missing.json")


def test_job_with_no_samples(tmp_path):
    job = make_job(tmp_path, samples=False, evals=False)
    assert_user_error(run_rft("replay", job["id"], "--grader", str(grader_file(tmp_path, FIXED))),
                      "has no stored samples to replay")


def test_explain_cli(tmp_path):
    from test_explain import make_regressed

    cid, run = make_regressed(tmp_path)
    r = run_rft("explain", f"ckpt:{cid}", "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["top_slice"]["field"] == "op" and e["top_slice"]["value"] == "*"
    r = run_rft("explain", cid)
    assert r.returncode == 0, r.stderr
    assert "where: op=* in the validation set: 8 of its 10 items regressed" in r.stdout
    assert str(run / "events.jsonl") in r.stdout
    assert_user_error(run_rft("explain", "ckpt:ckpt-nope"), "no checkpoint")


def test_eval_replay_cli(tmp_path):
    job = make_job(tmp_path)
    rep = json.loads((job["run_dir"] / "eval_baseline.json").read_text())
    rep |= {"id": "eval-cli-1", "dataset": str(job["val"]), "settings": {"extract": "-?\\d+", "split": "validation"},
            "grader": {"type": "string_check", "name": "contains", "sha256": "a" * 64}}
    home = tmp_path / "rft_home"
    (home / "evals" / "eval-cli-1").mkdir(parents=True)
    (home / "evals" / "eval-cli-1" / "report.json").write_text(json.dumps(rep))
    g = grader_file(tmp_path, FIXED)
    r = run_rft("eval", "--replay", "eval-cli-1", "--grader", str(g), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["eval_id"] == "eval-cli-1" and res["flips"]["pass_to_fail_keys"] == ["eval:eval-cli-1:1", "eval:eval-cli-1:3"]
    r = run_rft("eval", "--replay", "eval-cli-1", "--grader", str(g))
    assert r.returncode == 0 and "accuracy 1.000" in r.stdout and "-> 0.500" in r.stdout
    assert_user_error(run_rft("eval", "--replay", "eval-nope", "--grader", str(g)), "no evaluation 'eval-nope'")
    assert_user_error(run_rft("eval", "--grader", str(g)), "needs a MODEL and --data")


def test_http_routes(tmp_path):
    """POST /v1/rft/jobs/{id}/replay, GET .../replays and GET /v1/rft/checkpoints/{id}/explain, in-process."""
    from fastapi.testclient import TestClient

    from rft.registry.access import set_process_principal
    from rft.serve.app import create_app
    from test_explain import make_regressed

    set_process_principal(None)
    job = make_job(tmp_path)
    cid, _ = make_regressed(tmp_path / "x")
    hdr = {"Content-Type": "application/json"}
    with TestClient(create_app(None)) as c:
        r = c.post(f"/v1/rft/jobs/{job['id']}/replay", content=json.dumps({"grader": FIXED}), headers=hdr)
        assert r.status_code == 200, r.text
        assert r.json()["training"]["flips"]["pass_to_fail_keys"] == ["train:1:1", "train:1:3", "train:1:7"]
        assert [x["id"] for x in c.get(f"/v1/rft/jobs/{job['id']}/replays").json()["data"]] == [r.json()["id"]]
        bad = c.post(f"/v1/rft/jobs/{job['id']}/replay", content=json.dumps({"grader": dict(FIXED, operaton="eq")}),
                     headers=hdr)
        assert bad.status_code == 400 and "operaton" in bad.json()["error"]["message"]
        assert c.post("/v1/rft/jobs/ftjob-nope/replay", content=json.dumps({"grader": FIXED}),
                      headers=hdr).status_code == 404
        e = c.get(f"/v1/rft/checkpoints/{cid}/explain")
        assert e.status_code == 200, e.text
        assert e.json()["top_slice"]["value"] == "*"
        assert c.get("/v1/rft/checkpoints/ckpt-nope/explain").status_code == 404
