"""Review while a job runs: the monitor's grader_disagreement alarm pauses a tiny training job once people's
verdicts (inserted by the test during step 1) disagree with the grader; and the alarm's unit behaviour."""

from __future__ import annotations

import json

import pytest
from jobspecs import tiny_job_file

from rft.registry import Registry
from rft.registry.reviews import add_verdict
from rft.train.monitor import MonitorConfig, RewardMonitor


def _rows(pairs):
    return [{"item_key": f"train:1:{i}", "human_score": h, "grader_score": g} for i, (h, g) in enumerate(pairs)]


def test_alarm_needs_enough_verdicts_and_latches():
    rows = []
    mon = RewardMonitor(MonitorConfig(max_grader_disagreement=0.25, min_review_verdicts=4), review_source=lambda: rows)
    rows += _rows([(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])  # 2 of 3 disagree, but 3 < 4 verdicts
    assert mon.observe_step(1, {}) == []
    rows += _rows([(0.0, 0.0)])  # 4 verdicts, 2 disagree: 50%
    (a,) = mon.observe_step(2, {})
    assert a.kind == "grader_disagreement" and a.action == "pause" and a.numbers["verdicts"] == 4
    assert a.numbers["disagreement"] == pytest.approx(0.5) and "50.0% of 4 reviewed items" in a.message
    assert mon.observe_step(3, {}) == []  # latched
    rows[:] = _rows([(1.0, 1.0)] * 8)  # people now agree: the condition clears and re-arms
    assert mon.observe_step(4, {}) == []
    warn = RewardMonitor(MonitorConfig(max_grader_disagreement=0.0, min_review_verdicts=1,
                                       actions={"grader_disagreement": "warn"}), review_source=lambda: _rows([(1.0, None), (0.0, 1.0)]))
    (w,) = warn.observe_step(1, {})
    assert w.action == "warn" and w.numbers["verdicts"] == 1  # the unscored verdict is left out
    off = RewardMonitor(MonitorConfig(), review_source=lambda: _rows([(1.0, 0.0)] * 30))
    assert off.observe_step(1, {}) == []  # no limit set: never checked


def test_a_running_job_pauses_when_people_disagree(tmp_path, tiny_model_dir):
    from rft.config import load_job
    from rft.train import loop

    spec = tiny_job_file(tmp_path, tiny_model_dir, learnability={"enabled": False},
                         monitor={"max_grader_disagreement": 0.2, "min_review_verdicts": 2})
    job = load_job(spec)
    run = tmp_path / "run"
    seen = {}

    def progress(step, total, m):
        if step == 1 and "jid" not in seen:
            jid = json.loads((run / "job.json").read_text())["id"]
            rows = [json.loads(x) for x in (run / "samples" / "step_000001.jsonl").read_text().splitlines()]
            for i, r in enumerate(rows[:2]):  # people say the opposite of the grader on two samples
                add_verdict(Registry(), job_id=jid, item_key=f"train:1:{i}", source="train", reviewer="tester",
                            human_score=1.0 - (r["reward"] or 0.0), grader_score=r["reward"])
            seen["jid"] = jid

    with pytest.raises(loop.JobStopped) as ei:
        loop.run_job(job, output_dir=str(run), log=lambda s: None, progress=progress)
    assert ei.value.status == "paused" and "monitor alarm grader_disagreement" in str(ei.value)
    jid = seen["jid"]
    assert Registry().get_job(jid)["status"] == "paused"
    alarms = [e for e in Registry().events(jid) if e["type"] == "alarm"]
    assert len(alarms) == 1 and alarms[0]["data"]["kind"] == "grader_disagreement"
    assert "people disagree with the grader on 100.0% of 2 reviewed items" in alarms[0]["message"]
