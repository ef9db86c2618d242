"""`run_eval` with a scripted engine (every number checked by hand), and the `rft eval` / `rft compare` commands
on the tiny random Llama."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rft.engine import SamplingParams
from rft.errors import RftError
from rft.eval.compare import compare_reports
from rft.eval.runner import load_report, run_eval
from rft.types import Completion

JSON_GRADER = {"type": "string_check", "name": "v", "input": "{{sample.output_json.v}}", "reference": "{{item.answer}}",
               "operation": "eq"}
EXACT_GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.extracted}}", "reference": "{{item.answer}}",
                "operation": "eq"}


def _c(text: str) -> Completion:
    return Completion(text=text, token_ids=tuple(range(len(text))), logprobs=(0.0,) * len(text), finish_reason="stop")


class ScriptedEngine:
    """Answers each prompt (by its last message) with a fixed greedy text and a fixed list of sampled texts."""

    def __init__(self, script: dict[str, tuple[str, list[str]]]):
        self.script = script
        self.calls: list[SamplingParams] = []

    def generate(self, prompts, params: SamplingParams):
        self.calls.append(params)
        out = []
        for p in prompts:
            greedy, samples = self.script[p[-1]["content"]]
            out.append([_c(greedy)] if params.temperature == 0 else [_c(t) for t in samples[: params.n]])
        return out


def _ok(v):
    return json.dumps({"v": v})


ROWS = [  # (id, topic, answer, greedy output, 4 sampled outputs)
    ("a", "add", "1", _ok("1"), [_ok("1"), _ok("0"), _ok("1"), "oops"]),
    ("b", "add", "2", _ok("3"), [_ok("3"), _ok("3"), _ok("2"), _ok("3")]),
    ("c", "mul", "4", "not json", [_ok("0"), _ok("0"), _ok("0"), _ok("0")]),
    ("d", "mul", "6", _ok("6"), [_ok("6"), _ok("6"), _ok("6"), _ok("6")]),
    ("e", "mul", "8", _ok("0"), ["x", "y", _ok("8"), _ok("8")]),
]


def _data(tmp_path: Path) -> tuple[Path, ScriptedEngine]:
    p = tmp_path / "val.jsonl"
    p.write_text("".join(json.dumps({"id": i, "topic": t, "answer": a, "messages": [{"role": "user", "content": f"q {i}"}],
                                     "meta": {"level": len(i)}}) + "\n" for i, t, a, _, _ in ROWS))
    return p, ScriptedEngine({f"q {i}": (g, s) for i, _, _, g, s in ROWS})


def _brute_pass_at_k(passes: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(passes, k))
    return sum(1 for s in subsets if any(s)) / len(subsets)


def test_run_eval_numbers_by_hand(tmp_path):
    data, engine = _data(tmp_path)
    seen = []
    rep = run_eval("scripted", str(data), JSON_GRADER, n=4, by=["topic", "meta.level"], engine=engine,
                   output_dir=tmp_path / "out", on_report=seen.append)
    greedy = [1.0, 0.0, None, 1.0, 0.0]
    assert rep["n"] == 4 and rep["accuracy"] == pytest.approx(2 / 4)
    assert rep["unscored_frac"] == pytest.approx(1 / 5)
    assert rep["error_rates"]["sample_parse_error"] == pytest.approx(1 / 5)
    assert rep["error_counts"] == {"sample_parse_error": 1}
    assert rep["sample_error_rates"]["sample_parse_error"] == pytest.approx(3 / 20)
    assert [it["score"] for it in rep["items"]] == greedy
    assert [it["id"] for it in rep["items"]] == list("abcde")
    # pass@k from the scripted sample outcomes, by enumeration (an unscored sample is a failed try)
    passes = [[json.loads(t)["v"] == a if t.startswith("{") else False for t in s] for _, _, a, _, s in ROWS]
    assert set(rep["pass_at_k"]) == {"1", "2", "4"}
    for k in (1, 2, 4):
        want = sum(_brute_pass_at_k(p, k) for p in passes) / len(passes)
        assert rep["pass_at_k"][str(k)] == pytest.approx(want), k
    # slices: add = items a, b (1, 0); mul = c (unscored), d (1), e (0)
    add, mul = rep["slices"]["topic"]["add"], rep["slices"]["topic"]["mul"]
    assert (add["n"], add["n_scored"], add["accuracy"]) == (2, 2, 0.5)
    assert (mul["n"], mul["n_scored"], mul["accuracy"], mul["unscored_frac"]) == (3, 2, 0.5, pytest.approx(1 / 3))
    assert mul["pass_at_k"]["4"] == pytest.approx(sum(_brute_pass_at_k(p, 4) for p in passes[2:]) / 3)
    assert set(rep["slices"]["meta.level"]) == {"1"}
    # files, and the hook
    assert seen and seen[0] is rep
    saved = load_report(rep["paths"]["json"])
    assert saved["items"][2]["error"] == "sample_parse_error" and saved["items"][0]["sample_scores"] == [1.0, 0.0, 1.0, None]
    md = Path(rep["paths"]["markdown"]).read_text()
    assert "By `topic`" in md and "sample_parse_error" in md and "pass@4" in md
    assert engine.calls[0].temperature == 0 and engine.calls[1].n == 4


def test_run_eval_unknown_slice_field_fails_before_generating(tmp_path):
    data, engine = _data(tmp_path)
    with pytest.raises(RftError, match="did you mean 'topic'"):
        run_eval("scripted", str(data), JSON_GRADER, by=["topci"], engine=engine, write=False)
    assert engine.calls == []


def test_saved_reports_compare_item_by_item(tmp_path):
    data, engine = _data(tmp_path)
    a = run_eval("A", str(data), JSON_GRADER, engine=engine, by=["topic"], output_dir=tmp_path / "a")
    engine.script["q b"] = (_ok("2"), [])  # B fixes item b
    engine.script["q d"] = (_ok("7"), [])  # and breaks item d
    engine.script["q c"] = (_ok("4"), [])  # and item c is now scored
    b = run_eval("B", str(data), JSON_GRADER, engine=engine, output_dir=tmp_path / "b")
    r = compare_reports(load_report(a["paths"]["json"]), load_report(b["paths"]["json"]), resamples=500)
    assert r["paired_by"] == "id" and r["by"] == ["topic"]  # slices follow A's report
    assert [x["id"] for x in r["improved"]] == ["b"] and [x["id"] for x in r["regressed"]] == ["d"]
    assert r["n_scored_pairs"] == 4 and r["mean_difference"] == pytest.approx(0.0)
    assert r["unscored"]["a_only"] == 1
    assert r["slices"]["topic"]["add"]["mean_difference"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def cli():
    from rft.cli.eval_cmds import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def _arith(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "arith.jsonl"
    rows = [(2, 3, "+"), (4, 4, "*"), (7, 1, "+"), (3, 3, "*"), (9, 2, "+"), (5, 0, "*")]
    data.write_text("".join(json.dumps({
        "messages": [{"role": "user", "content": f"Calculate {x} {op} {y}."}], "op": op,
        "answer": str(x + y if op == "+" else x * y)}) + "\n" for x, y, op in rows))
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(EXACT_GRADER))
    return data, grader


def test_cli_eval_and_compare_on_tiny_model(tmp_path, tiny_model_dir, cli):
    data, grader = _arith(tmp_path)
    common = ["--data", data, "--grader", grader, "--extract", r"-?\d+", "--max-new-tokens", "4"]
    r = cli("eval", tiny_model_dir, *common, "--n", "2", "--by", "op", "--output", tmp_path / "ev", "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    rep = json.loads(r.stdout)
    assert rep["n"] == 6 and 0 <= rep["accuracy"] <= 1 and set(rep["pass_at_k"]) == {"1", "2"}
    assert set(rep["slices"]["op"]) == {"+", "*"} and "items" not in rep
    saved = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert len(saved["items"]) == 6 and all(len(it["sample_scores"]) == 2 for it in saved["items"])
    assert (tmp_path / "ev" / "report.md").exists()

    # the same model re-generated against the saved report: greedy decoding is deterministic, so no change
    r = cli("compare", "--a-report", tmp_path / "ev" / "report.json", tiny_model_dir, *common, "--by", "op",
            "--resamples", "500", "--output", tmp_path / "cmp", "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    c = json.loads(r.stdout)
    assert c["n_scored_pairs"] == 6 and c["mean_difference"] == 0.0 and c["regressed"] == [] == c["improved"]
    assert c["mcnemar"]["p_value"] == 1.0 and set(c["slices"]["op"]) == {"+", "*"}
    assert (tmp_path / "cmp" / "comparison.md").exists() and (tmp_path / "cmp" / "b" / "report.json").exists()

    # two saved reports: no model needed; the table output names the report files
    r = cli("compare", "--a-report", tmp_path / "ev" / "report.json", "--b-report", tmp_path / "cmp" / "b" / "report.json",
            "--output", tmp_path / "cmp2")
    assert r.exit_code == 0, (r.output, r.exception)
    assert "McNemar" in r.stdout and (tmp_path / "cmp2" / "comparison.json").exists()


def test_cli_compare_user_errors(tmp_path, cli):
    data, grader = _arith(tmp_path)
    r = cli("compare", "only-one-model", "--data", data, "--grader", grader)
    assert isinstance(r.exception, RftError) and "1 model(s) for 2 side(s)" in str(r.exception)
    bad = tmp_path / "bad.json"
    bad.write_text('{"accuracy": 1}')
    r = cli("compare", "--a-report", bad, "--b-report", bad)
    assert isinstance(r.exception, RftError) and "not an eval report" in str(r.exception)
    r = cli("compare", "--a-report", tmp_path / "missing.json", "m")
    assert isinstance(r.exception, RftError) and "not found" in str(r.exception)
