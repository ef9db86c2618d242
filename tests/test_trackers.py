"""Experiment trackers (rft.report_to): one tiny training job writes to TensorBoard, MLflow, W&B (offline) and
trackio, and each test reads what was written back with that library's own reader. Then: a tracker that fails
never fails the job, OpenAI's `integrations: wandb` maps onto rft.report_to, and a tracker whose library is
missing is a user error at validation (through the installed CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clitools import assert_user_error, run_rft
from rft.config import TRACKER_PACKAGES, parse_job
from rft.errors import RftError
from rft.jobcheck import parse_job as check_and_parse
from rft.train import loop, trackers

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "y",
          "operation": "like"}


def _raw(model, **rft) -> dict:
    return {
        "model": str(model), "training_file": "builtin:arithmetic", "validation_file": "builtin:arithmetic",
        "seed": 0,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": GRADER, "hyperparameters": {"batch_size": 2, "eval_interval": 2}}},
        "rft": {"sampling": {"n": 4, "max_new_tokens": 8}, "eval": {"max_items": 8},
                "train": {"max_steps": 3, "dtype": "float32"}, "optimizer": {"lr": 1e-3},
                "checkpoint": {"at_eval": False}, **rft},
    }


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tracked(tiny_model_dir, tmp_path_factory):
    """One 3-step job (evaluations at 0, 2 and 3) reporting to all four trackers."""
    home = tmp_path_factory.mktemp("trackers_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RFT_HOME", str(home / "rft_home"))
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        mp.setenv("WANDB_MODE", "online")  # rft must stay offline whatever the environment says
        job = parse_job(_raw(tiny_model_dir, report_to=list(TRACKER_PACKAGES),
                             trackers={"wandb": {"project": "rft-test", "tags": ["tiny"]}}))
        lines = []
        res = loop.run_job(job, output_dir=str(home / "run"), log=lines.append)
    assert res["status"] == "succeeded"
    events = [json.loads(x) for x in (home / "run" / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e.get("type") == "tracker"], "a tracker failed"
    return {"run": home / "run", "res": res, "metrics": _metrics(home / "run"), "log": lines}


def test_every_tracker_registered_and_recorded(tracked):
    assert set(trackers.TRACKERS) == set(TRACKER_PACKAGES)
    res, run = tracked["res"], tracked["run"]
    assert set(res["trackers"]) == set(TRACKER_PACKAGES)
    assert json.loads((run / "report.json").read_text())["trackers"] == res["trackers"]
    for name, where in res["trackers"].items():  # printed at the end of training
        assert f"{name}: {where}" in tracked["log"]


def test_tensorboard_event_files_read_back(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, res, rows = tracked["run"], tracked["res"], tracked["metrics"]
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    for key in ("reward", "kl", "grad_norm", "rewards/exact/mean", "time/step", "completions/mean_length"):
        pts = ea.Scalars(key)
        assert [p.step for p in pts] == [1, 2, 3], key
        assert [p.value for p in pts] == pytest.approx([r[key] for r in rows], rel=1e-6), key
    acc = ea.Scalars("eval/accuracy")
    assert [p.step for p in acc] == [0, 2, 3]
    assert acc[0].value == pytest.approx(res["baseline_eval"]["accuracy"])
    assert ea.Scalars("final_eval/accuracy")[-1].value == pytest.approx(res["final_eval"]["accuracy"])
    assert ea.Scalars("final_eval/accuracy_ci95_high")[-1].value == pytest.approx(res["final_eval"]["accuracy_ci95"][1])
    for text in ("config/text_summary", "lineage/text_summary", "eval_final/text_summary"):
        assert text in tags["tensors"], text
    lineage = ea.Tensors("lineage/text_summary")[0].tensor_proto.string_val[0].decode()
    assert res["final_checkpoint_id"] in lineage and res["config_sha256"] in lineage


def test_mlflow_store_read_back(tracked):
    from mlflow.tracking import MlflowClient

    run, res, rows = tracked["run"], tracked["res"], tracked["metrics"]
    assert res["trackers"]["mlflow"] == f"sqlite:///{run / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=res["trackers"]["mlflow"])
    (r,) = client.search_runs([client.get_experiment_by_name("rft").experiment_id])
    assert r.info.run_name == res["id"] and r.info.status == "FINISHED" and r.data.tags["rft.status"] == "succeeded"
    hist = client.get_metric_history(r.info.run_id, "reward")
    assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [1, 2, 3]
    assert [m.value for m in sorted(hist, key=lambda m: m.step)] == pytest.approx([x["reward"] for x in rows])
    acc = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "eval/accuracy"))
    assert [s for s, _ in acc] == [0, 2, 3] and acc[-1][1] == pytest.approx(res["final_eval"]["accuracy"])
    assert r.data.params["resolved.total_steps"] == "3" and r.data.params["rft.sampling.n"] == "4"
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"resolved_config.json", "eval_baseline.json", "eval_step_2.json", "eval_final.json", "lineage.json",
            "summary.json"} <= arts
    lineage = json.loads(Path(client.download_artifacts(r.info.run_id, "lineage.json")).read_text())
    assert lineage["checkpoint"]["id"] == res["final_checkpoint_id"]
    assert lineage["config"]["sha256"] == res["config_sha256"]


def test_wandb_offline_files_read_back(tracked):
    run, res, rows = tracked["run"], tracked["res"], tracked["metrics"]
    (run_dir,) = (run / "wandb").glob("offline-run-*")  # offline although WANDB_MODE=online was set
    assert res["trackers"]["wandb"] == str(run_dir)
    wandb_exe = str(Path(sys.executable).with_name("wandb"))
    out = subprocess.run([wandb_exe, "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    records = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    train = [h for h in history if "reward" in h]
    assert [h["_step"] for h in train] == [1, 2, 3]
    assert [h["reward"] for h in train] == pytest.approx([x["reward"] for x in rows])
    evals = [(h["_step"], h["eval/accuracy"]) for h in history if "eval/accuracy" in h]
    assert [s for s, _ in evals] == [0, 2, 3]
    summ = json.loads(subprocess.run([wandb_exe, "leet", "inspect", "--summary", "--json", str(run_dir)],
                                     capture_output=True, text=True, timeout=120).stdout)
    assert summ["project"] == "rft-test" and summ["name"] == res["id"] and summ["tags"] == ["tiny"]
    assert summ["config"]["resolved"]["total_steps"] == 3
    assert summ["summary"]["final_eval/accuracy"] == pytest.approx(res["final_eval"]["accuracy"])
    assert summ["summary"]["lineage"]["checkpoint"]["id"] == res["final_checkpoint_id"]
    assert summ["summary"]["rft/status"] == "succeeded" and summ["exit_code"] == 0


def test_trackio_local_database_read_back(tracked):
    from trackio.sqlite_storage import SQLiteStorage

    run, res, rows = tracked["run"], tracked["res"], tracked["metrics"]
    assert res["trackers"]["trackio"] == str(run / "trackio") and (run / "trackio" / "rft.db").exists()
    trackers._point_trackio_at(run / "trackio")  # the reader uses trackio's folder constant too
    logs = SQLiteStorage.get_logs("rft", res["id"])
    train = [x for x in logs if "reward" in x]
    assert [x["step"] for x in train] == [1, 2, 3]
    assert [x["reward"] for x in train] == pytest.approx([r["reward"] for r in rows])
    assert [x["step"] for x in logs if "eval/accuracy" in x] == [0, 2, 3]
    config = SQLiteStorage.get_run_config("rft", res["id"])
    assert config["resolved"]["total_steps"] == 3 and config["rft"]["report_to"] == list(TRACKER_PACKAGES)
    lineage = json.loads((run / "trackio" / "rft" / res["id"] / "lineage.json").read_text())
    assert lineage["checkpoint"]["id"] == res["final_checkpoint_id"]


# ------------------------------------------------------------------------------------------ failures
class _Recorder(trackers.Tracker):
    calls: list = []

    def start(self, config):
        return "mem://"

    def log_metrics(self, step, values):
        self.calls.append((self.name, "metrics", step))

    def log_artifact(self, name, obj):
        self.calls.append((self.name, "artifact", name))

    def finish(self, status):
        self.calls.append((self.name, "finish", status))


class _DiskFull(_Recorder):
    def log_metrics(self, step, values):
        if step == 2:
            raise OSError(28, "No space left on device")
        super().log_metrics(step, values)


class _Missing(_Recorder):
    def start(self, config):
        raise ModuleNotFoundError("No module named 'mlflow'")


def test_a_failing_tracker_warns_once_and_never_fails_the_job(tiny_model_dir, tmp_path, monkeypatch):
    _Recorder.calls = []
    fakes = {"tensorboard": type("T", (_DiskFull,), {"name": "tensorboard"}),
             "mlflow": type("M", (_Missing,), {"name": "mlflow"}),
             "trackio": type("K", (_Recorder,), {"name": "trackio"})}
    monkeypatch.setattr(trackers, "TRACKERS", fakes)
    job = parse_job(_raw(tiny_model_dir, report_to=["tensorboard", "mlflow", "trackio"]))
    res = loop.run_job(job, output_dir=str(tmp_path / "run"), log=lambda s: None)
    assert res["status"] == "succeeded" and res["trained_steps"] == 3
    warns = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    warns = [e for e in warns if e.get("type") == "tracker"]
    assert [(w["data"]["tracker"], w["level"]) for w in warns] == [("mlflow", "warn"), ("tensorboard", "warn")]
    assert "No space left on device" in warns[1]["message"] and "training goes on" in warns[1]["message"]
    # the healthy one got everything; the failing ones nothing after they failed
    def steps(name):
        return [s for who, kind, s in _Recorder.calls if who == name and kind == "metrics"]

    assert steps("trackio") == [0, 1, 2, 2, 3, 3]  # baseline, steps 1-3, evaluations at 2 and 3 (final)
    assert steps("tensorboard") == [0, 1] and steps("mlflow") == []
    assert ("trackio", "artifact", "lineage") in _Recorder.calls
    assert [c for c in _Recorder.calls if c[1] == "finish"] == [("trackio", "finish", "succeeded")]
    assert set(res["trackers"]) == {"tensorboard", "trackio"}


def test_trackers_set_reports_each_failure_once():
    warned = []

    class Bad(_Recorder):
        name = "wandb"

        def log_metrics(self, step, values):
            raise RuntimeError("boom")

    ts = trackers.Trackers([Bad(None, job_id="j", run_dir=Path("."))], warn=lambda m, d: warned.append(d))
    ts.start({})
    for step in (1, 2, 3):
        ts.log_metrics(step, {"reward": 1.0, "x": None, "flag": True, "nan": float("nan")})
    ts.finish("failed")
    assert warned == [{"tracker": "wandb", "during": "metrics of step 1", "error": "RuntimeError"}]
    assert trackers.scalars({"step": 1, "reward": 1, "flag": True, "x": None, "nan": float("nan"), "s": "a"}) == \
        {"reward": 1.0, "flag": 1.0}


# ------------------------------------------------------------------------------------------ spec
def _spec(**top) -> dict:
    return {"training_file": "builtin:arithmetic",
            "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER}}, **top}


def test_openai_wandb_integration_maps_onto_report_to():
    integ = [{"type": "wandb", "wandb": {"project": "my-proj", "name": "run-1", "entity": "team", "tags": ["a"]}}]
    job = check_and_parse(_spec(integrations=integ, rft={"report_to": ["tensorboard"]}))
    assert job.rft.report_to == ["tensorboard", "wandb"]
    w = job.rft.trackers.wandb
    assert (w.project, w.name, w.entity, w.tags) == ("my-proj", "run-1", "team", ["a"])
    again = check_and_parse(job.model_dump(mode="json"))  # a stored spec parses to the same job
    assert again.rft.report_to == ["tensorboard", "wandb"] and again.rft.trackers.wandb == w
    assert check_and_parse(_spec()).rft.report_to == []


@pytest.mark.parametrize("integ,rft,field,needle", [
    ([{"type": "wandbb", "wandb": {"project": "p"}}], {}, "integrations[0].type", "did you mean 'wandb'"),
    ([{"type": "wandb", "wandb": {"projet": "p"}}], {}, "integrations[0].wandb.project", "needs wandb.project"),
    ([{"type": "wandb", "wandb": {"project": "p", "tag": ["x"]}}], {}, "integrations[0].wandb.tag",
     "did you mean 'tags'"),
    ([{"type": "wandb", "wandb": {"project": "p"}}], {"trackers": {"wandb": {"project": "q"}}},
     "integrations[0].wandb.project", "conflicts with rft.trackers.wandb.project"),
    ([{"type": "wandb", "wandb": {"project": "p", "tags": ["x" * 65]}}], {}, "integrations[0].wandb.tags.0",
     "at most 64"),
])
def test_bad_integrations_are_user_errors(integ, rft, field, needle):
    with pytest.raises(RftError) as e:
        check_and_parse(_spec(integrations=integ, rft=rft))
    fields = {p.field: p.message for p in e.value.problems}
    assert field in fields, fields
    assert needle in fields[field], fields


def test_missing_tracker_library_is_a_user_error_naming_the_package(tmp_path):
    # hide the installed trackio and mlflow from the CLI's interpreter
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class _Hide:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("trackio", "mlflow"):
                    raise ModuleNotFoundError(f"No module named {name!r}")
        sys.meta_path.insert(0, _Hide())
    """))
    job = tmp_path / "job.json"
    job.write_text(json.dumps(_spec(rft={"report_to": ["trackio", "mlflow"]})))
    r = run_rft("train", str(job), env={"PYTHONPATH": str(tmp_path / "hide")})
    assert_user_error(r, "rft.report_to", "pip install trackio", "pip install mlflow-skinny")
    assert not list((tmp_path).glob("**/metrics.jsonl"))


@pytest.mark.parametrize("exc,status", [(None, "succeeded"), (RftError("bad"), "failed"),
                                        (KeyboardInterrupt(), "cancelled")])
def test_tracking_finishes_with_the_jobs_outcome(exc, status, monkeypatch, tmp_path):
    class Stopped(Exception):  # like the loop's JobStopped: carries a status
        status = "paused"

    _Recorder.calls = []
    monkeypatch.setattr(trackers, "TRACKERS", {"trackio": type("K", (_Recorder,), {"name": "trackio"})})
    job = parse_job(_spec(rft={"report_to": ["trackio"]}))
    run = type("Run", (), {"job_id": "j", "dir": tmp_path, "event": lambda self, *a, **k: None})()
    for e, want in ((exc, status), (Stopped(), "paused")):
        _Recorder.calls = []
        with pytest.raises(BaseException) if e is not None else _nothing():
            with trackers.tracking(job, run, {}, log=lambda s: None):
                if e is not None:
                    raise e
        assert _Recorder.calls == [("trackio", "finish", want)]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
