"""`rft review` through the installed entry point: the queue, the interactive mode driven over a pipe, a
verdicts file (line-numbered errors, all or nothing), the agreement report, the guard-set export."""

from __future__ import annotations

import json

import pytest
from clitools import assert_user_error, run_rft
from reviewfakes import make_run

from rft.registry import Registry
from rft.registry.reviews import all_verdicts, list_verdicts

SHA = "a" * 64


def _job(tmp_path, job_id="ftjob-review1"):
    run = make_run(tmp_path / "run")
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"eval question {i}"}],
                                       "answer": str(i)}) + "\n" for i in range(10)))
    Registry().create_job(job_id, spec={"training_file": str(tmp_path / "missing.jsonl"), "validation_file": str(val)},
                          model="tiny", run_dir=str(run), status="succeeded", grader_sha256=SHA)
    return job_id


def test_queue_interactive_pipe_and_report(tmp_path):
    jid = _job(tmp_path)
    r = run_rft("review", jid, "--queue", "-n", "12", "--json")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)
    assert q["n"] == 12 and q["strata"]["regressed"] == 2 and q["strata"]["grader_error"] == 3
    keys = [it["key"] for it in q["items"]]
    # eval items got their prompt from the validation file
    ev = [it for it in q["items"] if it["source"] == "eval"]
    assert ev and all(it["prompt"] == f"eval question {it['index']}" for it in ev)

    # interactive over a pipe: pass with a note, fail without, a score, a skip, then quit
    r = run_rft("review", jid, "-n", "12", input="p\nlooks right\nf\n\nbogus\n0.7\npartly\ns\nq\n",
                env={"RFT_ACTOR": "alice"})
    assert r.returncode == 0, r.stderr
    assert "prompt:" in r.stdout and "grader score:" in r.stdout and keys[0] in r.stdout
    assert "verdict 'bogus'" in r.stdout + r.stderr  # a bad answer is asked again, not fatal
    assert "stored 3 verdict(s), skipped 1" in r.stdout
    rows = {v["item_key"]: v for v in list_verdicts(Registry(), jid)}
    assert set(rows) == set(keys[:3])
    assert [rows[k]["human_score"] for k in keys[:3]] == [1.0, 0.0, 0.7]
    assert rows[keys[0]]["note"] == "looks right" and rows[keys[1]]["note"] is None
    assert all(v["reviewer"] == "alice" and v["grader_sha256"] == SHA for v in rows.values())
    assert rows[keys[0]]["data"]["completion"] == q["items"][0]["completion"]

    # reviewed items leave the queue
    r = run_rft("review", jid, "--queue", "-n", "12", "--json")
    assert not set(keys[:3]) & {it["key"] for it in json.loads(r.stdout)["items"]}

    # the report: agreement over the verdicts on scored items, checked against the stored rows
    r = run_rft("review", jid, "--report", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    scored = [v for v in rows.values() if v["grader_score"] is not None]
    differ = [v["item_key"] for v in scored if (v["human_score"] >= 0.5) != (v["grader_score"] >= 0.5)]
    assert rep["overall"]["n"] == len(scored) and sorted(rep["overall"]["disagreements"]) == sorted(differ)
    assert list(rep["by_grader"]) == [SHA]
    r = run_rft("review", jid, "--report")
    assert r.returncode == 0 and "kappa" in r.stdout and "method:" in r.stdout


def test_verdicts_file_errors_and_import(tmp_path):
    jid = _job(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_key": "train:1:0", "verdict": "pass"}\n'
                   '{"item_key": "train:1:1", "verdict": 3}\n'
                   '{"item_key": "nonsense", "verdict": "fail"}\n'
                   '{"item_key": "train:1:3", "verdict": "fail", "colour": "red"}\n')
    r = run_rft("review", jid, "--verdicts", str(bad))
    assert_user_error(r, f"{bad}:2", f"{bad}:3", f"{bad}:4", "colour", "3 bad verdict line(s)")
    assert list_verdicts(Registry(), jid) == []
    missing = tmp_path / "missing_item.jsonl"
    missing.write_text('{"item_key": "train:1:0", "verdict": "pass"}\n{"item_key": "train:99:0", "verdict": "fail"}\n')
    r = run_rft("review", jid, "--verdicts", str(missing))
    assert_user_error(r, "has no item train:99:0", f"{missing}:2", "nothing was stored")
    assert list_verdicts(Registry(), jid) == []

    # a planted disagreement: people fail every training sample the grader passed on step 1 (lines 0, 3, 6)
    good = tmp_path / "good.jsonl"
    lines = [{"item_key": f"train:1:{i}", "verdict": "fail", "note": "lists many numbers"} for i in (0, 3, 6)]
    lines += [{"item_key": f"train:1:{i}", "verdict": "fail"} for i in (1, 4, 5, 7)]
    lines += [{"item_key": "train:1:2", "score": 0.0}]  # the grader error: counted as unscored
    good.write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = run_rft("review", jid, "--verdicts", str(good), "--json", env={"RFT_ACTOR": "bob"})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    a = res["agreement"]
    assert res["stored"] == 8 and a["n"] == 7 and a["unscored"] == 1
    assert a["confusion"] == {"tp": 0, "fp": 3, "fn": 0, "tn": 4}
    # the person never passes: pe = (1 - 3/7) = 4/7 = po, so kappa is 0
    assert a["disagreement"] == pytest.approx(3 / 7) and a["kappa"] == pytest.approx(0.0)

    # a second verdict on the same item replaces the first (newest wins), the history is kept
    again = tmp_path / "again.jsonl"
    again.write_text('{"item_key": "train:1:0", "verdict": "pass", "note": "on second look"}\n')
    assert run_rft("review", jid, "--verdicts", str(again)).returncode == 0
    now = {v["item_key"]: v for v in list_verdicts(Registry(), jid)}
    assert now["train:1:0"]["human_score"] == 1.0 and len(all_verdicts(Registry(), jid)) == 9


def test_export_guard_is_a_usable_dataset(tmp_path):
    from rft.data import load_dataset

    jid = _job(tmp_path)
    out = tmp_path / "guard.jsonl"
    assert_user_error(run_rft("review", jid, "--export-guard", str(out)), "no review verdicts yet")
    f = tmp_path / "v.jsonl"
    f.write_text('{"item_key": "eval:eval_final:1", "verdict": "pass"}\n{"item_key": "train:2:0", "verdict": "fail"}\n')
    assert run_rft("review", jid, "--verdicts", str(f)).returncode == 0
    r = run_rft("review", jid, "--export-guard", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    ev = [x for x in rows if x["review"]["item_key"] == "eval:eval_final:1"][0]
    assert ev["messages"] == [{"role": "user", "content": "eval question 1"}] and ev["answer"] == "1"
    assert ev["review"]["human_score"] == 1.0
    ds = load_dataset(str(out))
    assert len(ds) == 2


def test_modes_and_unknown_job(tmp_path):
    jid = _job(tmp_path)
    assert_user_error(run_rft("review", jid, "--queue", "--report"), "give one of")
    assert_user_error(run_rft("review", "ftjob-nope", "--report"), "no job 'ftjob-nope'")
