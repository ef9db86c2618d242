"""The strategy table's statistics and cost maths against hand-computed values, the price table's errors, the SFT
file builder, the registry functions, and a whole table run on a scripted engine with a step clock (every
timing, token count and cost checked by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from rft.engine import SamplingParams
from rft.errors import RftError
from rft.eval.inference import ANSWER_INSTRUCTION, THINK_INSTRUCTION
from rft.strategies.cost import Prices, inference_cost, load_prices, training_cost
from rft.strategies.runner import TimedEngine, parse_only, run_strategies, sft_rows
from rft.strategies.stats import paired_difference, pareto_front, percentile, recommend
from rft.types import Completion


# ------------------------------------------------------------------------------------------- statistics
def test_percentile_interpolates_between_order_statistics():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)  # pos 2.85: 3 + 0.85 * (4 - 3)
    assert percentile([7.0], 95) == 7.0
    assert math.isnan(percentile([], 50))


def test_pareto_front_keeps_only_undominated_points():
    pts = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (2.0, 0.5), (float("nan"), 0.9), (2.0, 0.7)]
    # (3, .6) is dominated by (2, .7); (2, .5) by (1, .5); NaN is never on the front; equal points both stay
    assert pareto_front(pts) == [0, 1, 5]


def test_paired_difference_reuses_the_paired_bootstrap():
    base = {"items": [{"index": i, "score": s} for i, s in enumerate([1.0, 0.0, 0.0, 1.0])]}
    row = {"items": [{"index": i, "score": s} for i, s in enumerate([1.0, 1.0, 0.0, 1.0])]}
    d = paired_difference(base, row)
    # diffs [0, 1, 0, 0]: mean 0.25. A resample's mean is k/4 with k ~ Binomial(4, 1/4): P(k=0) = 0.316 > 2.5%
    # gives the lower bound 0; P(k>=3) = 0.051 > 2.5% > P(k=4) = 0.004 gives the upper bound 0.75
    assert d["mean"] == 0.25 and d["ci95"] == [0.0, 0.75]
    assert (d["n"], d["improved"], d["regressed"]) == (4, 1, 0)


def _row(label, acc, ci, usd, tokens=10.0, ub=False):
    return {"label": label, "accuracy": acc, "accuracy_ci95": ci, "usd_per_1k": usd, "tokens_per_1k": tokens,
            "upper_bound": ub}


def test_recommend_the_cheapest_within_the_best_ci():
    rows = [_row("base", 0.50, [0.40, 0.60], 1.0), _row("bon8_grader", 0.95, [0.90, 0.98], 8.0, ub=True),
            _row("bon4_majority", 0.66, [0.56, 0.75], 4.0), _row("grpo", 0.70, [0.60, 0.79], 1.0, tokens=12.0),
            _row("sft", 0.61, [0.51, 0.70], 1.0, tokens=11.0), _row("failed", float("nan"), [0, 0], float("nan"))]
    rec = recommend(rows)
    # best deployable: grpo 0.70 (the upper-bound row is excluded); within [0.60, ...]: grpo, bon4, sft;
    # cheapest: grpo and sft both $1.0, sft generates fewer tokens
    assert rec["best"] == "grpo" and rec["threshold"] == 0.60
    assert rec["within_ci"] == ["bon4_majority", "grpo", "sft"] and rec["label"] == "sft"


def test_recommend_ties_go_to_the_row_listed_first_and_none_without_rows():
    rows = [_row("base", 0.5, [0.4, 0.6], 1.0), _row("other", 0.5, [0.4, 0.6], 1.0)]
    assert recommend(rows)["label"] == "base"
    assert recommend([_row("ub", 0.9, [0.8, 1.0], 1.0, ub=True)]) is None


# ------------------------------------------------------------------------------------------- cost
def test_inference_cost_per_1000_requests():
    c = inference_cost(400, 2.0, 8, Prices(per_million_generated_tokens=2.0, per_machine_hour=3.6))
    # 50 tokens / request -> 50,000 per 1k; 0.25 s / request -> 250 s per 1k
    # $ = 50,000 / 1e6 * 2.0 + 250 / 3600 * 3.6 = 0.10 + 0.25
    assert c == {"tokens_per_request": 50.0, "tokens_per_1k": 50_000.0, "seconds_per_1k": 250.0,
                 "usd_per_1k": pytest.approx(0.35)}
    assert training_cost(1800.0, Prices(per_machine_hour=2.0)) == 1.0


def test_price_table_file_and_its_errors(tmp_path):
    p = tmp_path / "prices.yaml"
    p.write_text("per_million_generated_tokens: 0.6\nper_machine_hour: 1.5\n")
    assert load_prices(str(p)) == Prices(per_million_generated_tokens=0.6, per_machine_hour=1.5)
    assert load_prices(None) == Prices()
    p.write_text("per_machine_hour: 1.5\nper_milion_generated_tokens: 3\n")
    with pytest.raises(RftError) as e:
        load_prices(str(p))
    text = str(e.value) + "".join(str(x) for x in e.value.problems)
    assert f"{p}:2" in text and "per_milion_generated_tokens" in text and "per_million_generated_tokens" in text
    p.write_text("per_machine_hour: -1\n")
    with pytest.raises(RftError) as e:
        load_prices(str(p))
    assert f"{p}:1" in "".join(str(x) for x in e.value.problems)


# ------------------------------------------------------------------------------------------- small parts
def test_parse_only():
    assert parse_only("grpo,best_of_n") == ("base", "best_of_n", "grpo")
    assert parse_only(None) == ("base", "reasoning", "best_of_n", "sft", "dpo", "grpo")
    with pytest.raises(RftError, match="did you mean 'best_of_n'"):
        parse_only("best_of")


def test_timed_engine_counts_only_time_inside_generate():
    ticks = iter([10.0, 12.5, 20.0, 21.0])

    class E:
        tokenizer = "tok"

        def generate(self, prompts, params):
            return [[]]

    t = TimedEngine(E(), lambda: next(ticks))
    t.generate([[]], SamplingParams())
    t.generate([[]], SamplingParams())
    assert t.seconds == 3.5 and t.tokenizer == "tok"


def test_timed_engine_cache_serves_identical_calls_and_charges_their_seconds():
    ticks = iter([0.0, 2.0, 5.0, 6.0])
    calls = []

    class E:
        def generate(self, prompts, params):
            calls.append(params)
            return [[len(calls)]]

    cache: dict = {}
    a = TimedEngine(E(), lambda: next(ticks), cache)
    assert a.generate([[{"role": "user", "content": "q"}]], SamplingParams(n=4, seed=1)) == [[1]]
    b = TimedEngine(E(), lambda: next(ticks), cache)
    assert b.generate([[{"role": "user", "content": "q"}]], SamplingParams(n=4, seed=1)) == [[1]]  # cached
    assert b.generate([[{"role": "user", "content": "q"}]], SamplingParams(n=4, seed=2)) == [[2]]  # another seed
    assert (a.seconds, b.seconds, len(calls)) == (2.0, 2.0 + 1.0, 2)  # the cached 2 s, then 6 - 5


def _job(tmp_path: Path, **rft) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}], "answer": a}) + "\n"
                            for i, a in enumerate(["1", "2", "3", "4"])))
    spec = {"model": "scripted", "training_file": str(data), "validation_file": str(data), "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {"grader": {
                "type": "string_check", "name": "exact", "input": "{{sample.extracted}}",
                "reference": "{{item.answer}}", "operation": "eq"}}},
            "rft": {"extraction": {"pattern": "-?\\d+"}, "sampling": {"max_new_tokens": 8}, **rft}}
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_sft_rows_from_the_reference_template(tmp_path):
    from rft.jobcheck import load_job

    rows = [{"messages": [{"role": "user", "content": "q"}], "answer": "7"}]
    job = load_job(_job(tmp_path, train={"reference_output": "{{item.answer}}"}))
    out, why = sft_rows(job, rows)
    assert why is None and out == [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "7"}]}]
    out, why = sft_rows(load_job(_job(tmp_path)), rows)  # {{sample.extracted}} makes no passing output known
    assert out == [] and "reference_output" in why


def test_registry_round_trip():
    from rft.registry import Registry
    from rft.registry.strategies import get_strategy_table, list_strategy_tables, save_strategy_table

    reg = Registry()
    save_strategy_table(reg, {"id": "strat-x", "spec_sha256": "ab", "paths": {"json": "/t.json"}, "rows": [1]})
    assert get_strategy_table(reg, "strat-x")["table"]["rows"] == [1]
    assert [r["id"] for r in list_strategy_tables(reg)] == ["strat-x"]
    with pytest.raises(RftError, match="no strategy table"):
        get_strategy_table(reg, "strat-y")


# ------------------------------------------------------------------------------------------- a whole table
def _c(text: str) -> Completion:
    return Completion(text=text, token_ids=tuple(range(len(text))), logprobs=(0.0,) * len(text), finish_reason="stop")


class Scripted:
    """q0..q3 (answers 1..4). Greedy: right on q0 and q1 only ("1", "2", "0", "0"); samples: q_i gets
    [9, right, 9, right], so majority (a 2-2 tie: the first vote wins) picks the wrong 9
    and the grader selector the right one. Thinking: "tt"; answer phase: right everywhere."""

    def generate(self, prompts, params: SamplingParams):
        out = []
        for p in prompts:
            last = p[-1]["content"]
            if last.endswith(THINK_INSTRUCTION):
                out.append([_c("tt")])
                continue
            q = p[0]["content"].split("\n")[0]
            a = str(int(q[1:]) + 1)
            if last == ANSWER_INSTRUCTION:
                out.append([_c(a)])
            elif params.temperature == 0:
                out.append([_c(a if q in ("q0", "q1") else "0")])
            else:
                out.append([_c(t) for t in ["9", a, "9", a][: params.n]])
        return out


def test_a_whole_table_on_a_scripted_engine_with_a_step_clock(tmp_path):
    t = [0.0]

    def clock():  # every reading advances one second: a generate call measures 1 s, a latency request 1 s
        t[0] += 1.0
        return t[0]

    prices = Prices(per_million_generated_tokens=1000.0, per_machine_hour=3600.0)  # $0.001 a token, $1 a second
    table = run_strategies(str(_job(tmp_path)), only="reasoning,best_of_n", budgets=[5], ns=[4],
                           latency_items=2, prices=prices, output_dir=tmp_path / "out", clock=clock,
                           load=lambda ref: Scripted())
    rows = {r["label"]: r for r in table["rows"]}
    assert list(rows) == ["base", "reasoning_5", "best_of_4/majority", "best_of_4/grader"]
    b, r, m, g = rows["base"], rows["reasoning_5"], rows["best_of_4/majority"], rows["best_of_4/grader"]
    assert [x["accuracy"] for x in (b, r, m, g)] == [0.5, 1.0, 0.0, 1.0]
    # 4 requests in one generate call (1 s): 250 s per 1k; reasoning has two calls: 500 s
    # the grader row draws the same seeded samples as the majority row: served from the cache, charged the same 1 s
    assert (b["seconds_per_1k"], r["seconds_per_1k"], m["seconds_per_1k"], g["seconds_per_1k"]) == \
        (250.0, 500.0, 250.0, 250.0)
    # tokens: base 1 each; reasoning 2 + 1; best-of-4 four 1-token samples
    assert (b["tokens_per_request"], r["tokens_per_request"], m["tokens_per_request"]) == (1.0, 3.0, 4.0)
    assert b["usd_per_1k"] == pytest.approx(1000 * 0.001 + 250.0)  # tokens_per_1k * $0.001 + seconds_per_1k * $1
    assert r["usd_per_1k"] == pytest.approx(3000 * 0.001 + 500.0)
    assert b["latency"] == {"p50_s": 1.0, "p95_s": 1.0, "n": 2}
    assert g["upper_bound"] and not m["upper_bound"]
    assert r["vs_base"]["mean"] == 0.5 and m["vs_base"]["mean"] == -0.5
    # best deployable: reasoning 1.0 with CI [0.51, 1.0]: nothing else is within it
    assert table["recommendation"]["label"] == "reasoning_5"
    assert table["pareto_front"] == ["base", "reasoning_5"]
    for k in ("json", "markdown", "plot"):
        assert Path(table["paths"][k]).exists()
    md = Path(table["paths"]["markdown"]).read_text()
    assert "best_of_4/grader (upper bound)" in md and "reasoning_5" in md
    saved = json.loads(Path(table["paths"]["json"]).read_text())
    assert saved["id"] == table["id"] and len(saved["eval_ids"]) == 4
    from rft.registry import Registry
    from rft.registry.strategies import get_strategy_table

    stored = get_strategy_table(Registry(), table["id"])
    assert stored["table"]["eval_ids"] == table["eval_ids"] and stored["path"] == table["paths"]["json"]
    ev = {e["id"] for e in Registry().eval_reports()}
    assert set(table["eval_ids"]) <= ev


def test_unmeasured_numbers_are_null_in_strict_json(tmp_path):
    table = run_strategies(str(_job(tmp_path)), only="base", latency_items=0, output_dir=tmp_path / "out",
                           load=lambda ref: Scripted())
    assert [r["label"] for r in table["rows"]] == ["base"]
    assert table["rows"][0]["latency"] == {"p50_s": None, "p95_s": None, "n": 0}

    def refuse(c):
        raise AssertionError(f"not strict JSON: {c}")

    json.loads(Path(table["paths"]["json"]).read_text(), parse_constant=refuse)
    assert "| base |" in Path(table["paths"]["markdown"]).read_text()
