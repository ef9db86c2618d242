"""Evaluation with the job's response_format: constrained decoding gives parseable, gradeable JSON on a tiny random
model; without it the same model's output is a sample_parse_error. Rows' tools reach the engine."""

from __future__ import annotations

import torch

from rft.data.dataset import Dataset
from rft.eval.runner import evaluate
from rft.graders import build
from tests.test_engine_constrained import RF, tiny_json_model

GRADER = {"type": "string_check", "name": "unit", "input": "{{sample.output_json.unit}}", "reference": "{{item.unit}}",
          "operation": "eq"}


def _dataset(rows):
    return Dataset(name="mem", rows=tuple(rows), sha256="0" * 64, source="mem",
                   line_numbers=tuple(range(1, len(rows) + 1)))


def test_eval_uses_response_format():
    from rft.engine.local import LocalEngine

    model, tok = tiny_json_model(seed=4)
    eng = LocalEngine(model, tok, compute_dtype=torch.float32)
    rows = [{"messages": [{"role": "user", "content": f"item {i}"}], "unit": "cm" if i % 2 else "kg"} for i in range(4)]
    ds = _dataset(rows)
    g = build(GRADER)
    con = evaluate(eng, ds, g, model_name="tiny", max_new_tokens=120, response_format=RF, samples=2)
    assert con.unscored_frac == 0.0 and con.accuracy.n == 4
    assert all(it["error"] is None for it in con.items)
    assert all(e is None for it in con.items for e in it["sample_errors"])
    free = evaluate(eng, ds, g, model_name="tiny", max_new_tokens=40, response_format=None)
    assert free.unscored_frac == 1.0  # the random model's free text is not JSON ...
    flagged = evaluate(eng, ds, g, model_name="tiny", max_new_tokens=3, response_format=RF)
    assert {it["error"] for it in flagged.items} == {"sample_parse_error"}  # ... and cut JSON is a parse error


class _ToolsEngine:
    def __init__(self):
        self.calls = []

    def generate(self, prompts, params, tools=None):
        from rft.types import Completion

        self.calls.append(tools)
        text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
        return [[Completion(text=text, token_ids=(1,), logprobs=(0.0,), finish_reason="stop")] * params.n for _ in prompts]


def test_eval_passes_rows_tools_and_grades_output_tools():
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    rows = [{"messages": [{"role": "user", "content": "w?"}], "tools": tools, "tool": "get_weather"}]
    eng = _ToolsEngine()
    g = build({"type": "string_check", "name": "t", "input": "{{sample.output_tools[0].function.name}}",
               "reference": "{{item.tool}}", "operation": "eq"})
    rep = evaluate(eng, _dataset(rows), g, model_name="fake")
    assert eng.calls == [[tools]] and rep.accuracy.mean == 1.0
