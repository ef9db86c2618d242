"""The recommendation rule against the issue's words ("the cheapest strategy whose accuracy is within the CI of
the best"; grader-selector rows are upper bounds, not deployable) and the cost axis when every price is 0."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rft.strategies.cost import Prices
from rft.strategies.stats import cost_key, pareto_front, recommend


def _row(label, acc, ci, usd, tokens=10.0, ub=False, status="ok"):
    return {"label": label, "status": status, "accuracy": acc, "accuracy_ci95": ci, "usd_per_1k": usd,
            "tokens_per_1k": tokens, "upper_bound": ub}


def test_within_the_ci_is_inclusive_and_upper_bounds_never_count():
    rows = [_row("base", 0.40, [0.30, 0.50], 1.0),
            _row("at_floor", 0.60, [0.50, 0.70], 0.5),  # exactly the best's lower bound: within
            _row("below", 0.5999, [0.50, 0.70], 0.1),  # just below it: not within, although cheapest
            _row("best", 0.70, [0.60, 0.80], 2.0),
            _row("oracle", 0.95, [0.90, 0.99], 0.01, ub=True)]  # most accurate and cheapest, but an upper bound
    rec = recommend(rows)
    assert rec["best"] == "best" and rec["threshold"] == 0.60
    assert rec["within_ci"] == ["at_floor", "best"] and rec["label"] == "at_floor"
    assert "oracle" not in rec["reason"] and "upper-bound rows are excluded" in rec["rule"]


def test_a_row_without_a_token_count_loses_the_usd_tie():
    nan = float("nan")
    rows = [_row("no_tokens", 0.5, [0.4, 0.6], 0.0, tokens=nan), _row("counted", 0.5, [0.4, 0.6], 0.0, tokens=30.0)]
    rec = recommend(rows)
    assert rec["label"] == "counted" and "30 tokens" in rec["reason"]


def test_all_prices_zero_puts_tokens_on_the_cost_axis():
    rows = [_row("base", 0.50, [0.40, 0.60], 0.0, tokens=10_000.0),
            _row("bon", 0.55, [0.45, 0.65], 0.0, tokens=40_000.0),
            _row("worse_and_dearer", 0.45, [0.35, 0.55], 0.0, tokens=50_000.0),
            _row("failed", math.nan, [math.nan, math.nan], math.nan, status="failed")]
    assert cost_key(rows) == "tokens_per_1k"
    assert cost_key([_row("a", 0.5, [0.4, 0.6], 0.0), _row("b", 0.5, [0.4, 0.6], 0.1)]) == "usd_per_1k"
    # in USD every row costs 0 and only the most accurate would be on the front; in tokens base is too
    assert pareto_front([(r["tokens_per_1k"], r["accuracy"]) for r in rows]) == [0, 1]
    assert recommend(rows)["label"] == "base"  # within bon's CI [0.45, ...] and fewest tokens


def test_a_table_with_zero_prices_stores_the_token_front(tmp_path):
    from test_strategies import Scripted, _job

    from rft.strategies.runner import run_strategies

    table = run_strategies(str(_job(tmp_path)), only="reasoning", budgets=[5], latency_items=0,
                           prices=Prices(per_million_generated_tokens=0.0, per_machine_hour=0.0),
                           output_dir=tmp_path / "out", load=lambda ref: Scripted())
    rows = {r["label"]: r for r in table["rows"]}
    assert all(r["usd_per_1k"] == 0 for r in rows.values())
    # base: 0.5 at 1,000 tokens per 1k; reasoning: 1.0 at 3,000. In USD (both 0) base would be dominated;
    # in tokens both are on the front. Reasoning is the best and base (0.5) is below its CI: reasoning is chosen.
    assert table["pareto_front"] == ["base", "reasoning_5"]
    assert table["recommendation"]["label"] == "reasoning_5"
    saved = json.loads(Path(table["paths"]["json"]).read_text())
    assert saved["pareto_front"] == ["base", "reasoning_5"]


def test_answer_spread_flags_one_answer_to_everything_but_not_a_task_whose_answers_are_one():
    from rft.strategies.stats import answer_spread

    refs = ["1"] * 21 + [str(k) for k in range(2, 41)]  # 60 items, the most common reference "1" covers 35%
    const = answer_spread(["1"] * 60, refs)
    assert const == {"top": "1", "top_count": 60, "top_frac": 1.0, "distinct": 1, "n": 60,
                     "reference_top_frac": 0.35, "collapsed": True}
    # 0.8 exactly and 30 points above the references' top: collapsed; one answer fewer: not
    assert answer_spread(["1"] * 8 + ["2", "3"], ["1"] * 5 + ["2"] * 5)["collapsed"] is True
    assert answer_spread(["1"] * 7 + ["2", "3", "4"], ["1"] * 5 + ["2"] * 5)["collapsed"] is False
    # a task whose references are mostly one answer: answering it is right, not collapsed
    assert answer_spread(["yes"] * 20, ["yes"] * 18 + ["no"] * 2)["collapsed"] is False
    # fewer than 10 answered items never count; None and blank answers are not answers
    assert answer_spread(["1"] * 9 + [None, " "], [])["collapsed"] is False
    assert answer_spread([" 1 "] * 10, [])["top"] == "1"


def test_a_collapsed_row_is_neither_best_nor_recommended_and_the_table_says_why():
    from rft.strategies.report import table_markdown

    rows = [_row("base", 0.22, [0.14, 0.30], 0.04), _row("grpo", 0.22, [0.15, 0.29], 0.003),
            _row("sft", 0.35, [0.24, 0.48], 0.002)]
    rows[2]["answers"] = {"top": "1", "top_count": 60, "n": 60, "reference_top_frac": 0.35, "collapsed": True}
    rec = recommend(rows)
    assert rec["best"] == "base" and rec["label"] == "grpo", rec  # sft would have been both
    assert len(rec["excluded"]) == 1 and rec["excluded"][0].startswith("sft answers '1' to 60 of 60 items")
    table = {"id": "t", "job": "j.yaml", "n_items": 60, "validation_file": "v", "model": "m", "grader": "g",
             "wall_seconds": 1.0, "prices": {"per_million_generated_tokens": 0, "per_machine_hour": 0.1},
             "rows": [dict(r, kind="trained", tokens_per_request=2.0, seconds_per_1k=60.0,
                           latency={"p50_s": 0.1, "p95_s": 0.1}) for r in rows], "recommendation": rec, "settings": {}}
    md = table_markdown(table)
    assert "**Collapsed:** sft answers '1' to 60 of 60 items" in md
