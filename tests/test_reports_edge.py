"""Reports never fail a job: the plot and the markdown reports drawn from edge values (accuracy 0 or 1 with a
confidence bound a rounding error past the mean, one item, NaN metrics, a single step, no evaluations, a torn
metrics line), and a training run whose report steps raise still ends `succeeded` with a warning event.

Run: `.venv/bin/python -m pytest -q tests/test_reports_edge.py`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from rft.eval.report import curve_points, eval_markdown, format_ci, plot_curves, run_markdown, write_markdown
from rft.eval.stats import wilson_ci
from tests.clitools import run_rft

NAN = float("nan")


def _ev(step, acc, lo, hi, n=6, unscored=0.0):
    return {"step": step, "accuracy": acc, "accuracy_ci95": [lo, hi], "n": n, "unscored_frac": unscored}


def _metrics(tmp_path: Path, rewards: list) -> Path:
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(json.dumps({"step": i + 1, "reward": r}) + "\n" for i, r in enumerate(rewards)))
    return p


ZERO_LO = wilson_ci(0, 3)[0]  # about 1e-17 > 0: the lower bound of 0 of 3 lands above the mean
ONE_HI = wilson_ci(10, 10)[1]  # a hair below 1

CASES = {
    "all_zero": ([0.0, 0.0, 0.0], [_ev(2, 0.0, ZERO_LO, 0.56)], _ev(0, 0.0, ZERO_LO, 0.56)),
    "all_one": ([1.0, 1.0, 1.0], [_ev(2, 1.0, 0.72, ONE_HI)], _ev(0, 1.0, 0.72, ONE_HI)),
    "one_item": ([0.5], [_ev(1, 1.0, 0.2, 1.0, n=1)], _ev(0, 0.0, 0.0, 0.79, n=1)),
    "nan_metrics": ([NAN, 0.5, NAN], [_ev(2, NAN, NAN, NAN), _ev(3, 0.5, NAN, NAN)], _ev(0, NAN, NAN, NAN)),
    "single_step": ([0.25], [], None),
    "no_evaluations": ([0.1, 0.2], [], None),
    "no_steps": ([], [], _ev(0, 0.0, ZERO_LO, 0.56)),
    "bad_bounds": ([0.3], [_ev(1, 0.4, 0.6, 0.2), {"step": 2, "accuracy": 0.5, "accuracy_ci95": None}], None),
}


def test_the_edge_values_are_real():
    # The user's case: a bound on the wrong side of the mean, which matplotlib refuses as a negative error bar.
    assert ZERO_LO > 0.0 and ONE_HI < 1.0


@pytest.mark.parametrize("case", sorted(CASES))
def test_plot_draws_edge_values(tmp_path, case):
    rewards, evals, baseline = CASES[case]
    out = plot_curves(_metrics(tmp_path, rewards), evals, baseline, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png" and out.stat().st_size > 1000
    steps, rs, (es, ea, lo, hi) = curve_points([json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()],
                                               evals, baseline)
    assert all(math.isfinite(v) for v in steps + rs + es + ea + lo + hi)
    assert all(v >= 0.0 for v in lo + hi), (lo, hi)
    assert len(es) == len(ea) == len(lo) == len(hi)


def test_plot_points_clamp_and_skip():
    _, _, (es, ea, lo, hi) = curve_points([], [_ev(3, 0.0, ZERO_LO, 0.5), _ev(4, NAN, 0.1, 0.2)], _ev(0, 1.0, 0.7, ONE_HI))
    assert es == [0, 3] and ea == [1.0, 0.0]  # the NaN-accuracy point is left out
    assert lo == [pytest.approx(0.3), 0.0] and hi == [0.0, 0.5]


def test_plot_without_metrics_file_and_with_a_torn_line(tmp_path):
    assert plot_curves(tmp_path / "absent.jsonl", [], None, tmp_path / "a.png").exists()
    p = tmp_path / "metrics.jsonl"
    p.write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n" + '{"step": 2, "rew')  # killed mid-write
    assert plot_curves(p, [], None, tmp_path / "b.png").exists()


def _run_report(**extra) -> dict:
    base = {"id": "ftjob-x", "model": "m", "status": "succeeded", "training_file": "t.jsonl", "trained_steps": 1,
            "train_seconds": NAN, "baseline_eval": _ev(0, 0.0, ZERO_LO, 0.56), "final_eval": _ev(1, NAN, NAN, NAN),
            "evals": [_ev(1, NAN, NAN, NAN, unscored=None)], "paths": {"report": "r.md"}}
    return base | extra


@pytest.mark.parametrize("extra", [
    {},
    {"final_eval": None, "baseline_eval": None, "evals": []},
    {"final_eval": {"accuracy": 1.0}, "final_comparison": {"mean_difference": NAN}, "regressed_items": [],
     "skipped_steps": 2},
    {"training_file_sha256": None, "grader_sha256": None, "config_sha256": None, "paths": None},
])
def test_run_markdown_edge_values(tmp_path, extra):
    text = run_markdown(_run_report(**extra))
    assert text.startswith("# rft run ftjob-x")
    write_markdown(_run_report(**extra), tmp_path / "report.md")
    assert (tmp_path / "report.md").read_text() == text


def test_format_ci_and_eval_markdown_with_nan():
    assert format_ci(_ev(0, NAN, NAN, NAN)) == "n/a [n/a, n/a] (n=6)"
    assert format_ci({"accuracy": 0.5}) == "0.500 [n/a, n/a] (n=?)"
    md = eval_markdown({"id": "e", "accuracy": NAN, "accuracy_ci95": [NAN, NAN], "n": 0, "items": []})
    assert "n/a" in md


def _job_yaml(tmp_path: Path, model_dir: Path, **rft_extra) -> Path:
    data = tmp_path / "train.jsonl"
    rows = [(f"What is {a} + {a}?", str(2 * a)) for a in range(1, 7)]
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}], "answer": x}) + "\n" for q, x in rows))
    spec = {
        "model": str(model_dir), "training_file": str(data), "validation_file": str(data), "seed": 1,
        "method": {"type": "reinforcement", "reinforcement": {
            # a random model never answers exactly: validation accuracy is 0 of 6 (Wilson lower bound > 0)
            "grader": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                       "reference": "{{item.answer}}", "operation": "eq"},
            "hyperparameters": {"batch_size": 2, "eval_interval": 1}}},
        "rft": {"sampling": {"n": 2, "max_new_tokens": 4}, "eval": {"max_items": 6},
                "train": {"max_steps": 2, "dtype": "float32"}, **rft_extra},
    }
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_zero_accuracy_run_succeeds_through_the_cli(tiny_model_dir, tmp_path):
    """The user's report: validation accuracy 0.0 made the plot raise and the job end in a traceback."""
    from rft.registry import Registry

    r = run_rft("train", str(_job_yaml(tmp_path, tiny_model_dir)), "-o", str(tmp_path / "run"), "--json", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["final_eval"]["accuracy"] == 0.0
    assert job["final_eval"]["accuracy_ci95"][0] > 0.0  # the edge value really occurred
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert Registry().get_job(job["id"])["status"] == "succeeded"


def test_report_failures_are_warnings_not_job_failures(tiny_model_dir, tmp_path, monkeypatch):
    from rft.config import load_job
    from rft.registry import Registry
    from rft.train import loop

    def broken(*a, **k):
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr(loop, "plot_curves", broken)
    monkeypatch.setattr(loop, "write_markdown", broken)
    job = load_job(_job_yaml(tmp_path, tiny_model_dir), ["rft.train.max_steps=1", "rft.eval.max_items=2"])
    res = loop.run_job(job, output_dir=str(tmp_path / "run"), log=lambda s: None)
    assert res["status"] == "succeeded" and res["paths"]["plot"] is None
    assert Registry().get_job(res["id"])["status"] == "succeeded"
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    warns = [e["message"] for e in events if e["level"] == "warn" and e["type"] == "report"]
    assert len(warns) == 2 and all("negative values" in w and "result stands" in w for w in warns), warns
    assert "successfully completed" in events[-1]["message"]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["status"] == "succeeded"
