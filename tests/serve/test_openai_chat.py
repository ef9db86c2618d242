"""rft.openai_chat: body validation, batching onto an engine, response shapes."""

from __future__ import annotations

import pytest

from rft.engine import SamplingParams
from rft.openai_chat import DEFAULT_MAX_TOKENS, ChatRequestError, parse_chat_body, run_chat_calls

USER = [{"role": "user", "content": "hi"}]


def test_parse_defaults_follow_openai():
    call = parse_chat_body({"model": "m", "messages": USER})
    assert call.params == SamplingParams(n=1, temperature=1.0, top_p=1.0, max_new_tokens=DEFAULT_MAX_TOKENS,
                                         stop=(), seed=None)
    assert (call.model, call.stream, call.prediction, call.include_usage) == ("m", False, None, False)
    assert call.messages == USER


def test_parse_maps_fields():
    call = parse_chat_body({
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
                     {"role": "user", "content": "q", "name": "ann"},
                     {"role": "assistant", "content": "a"},
                     {"role": "user", "content": "q2"}],
        "max_tokens": 7, "max_completion_tokens": 9, "temperature": 0, "top_p": 0.5, "n": 3, "stop": "\n",
        "seed": 11, "stream": True, "stream_options": {"include_usage": True},
        "user": "ignored", "metadata": {"a": "b"}, "response_format": {"type": "text"}, "tool_choice": "none",
    })
    # developer -> system, text parts joined, extra message keys dropped
    assert call.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},
                             {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}]
    # max_completion_tokens (the current name) wins over the deprecated max_tokens
    assert call.params == SamplingParams(n=3, temperature=0.0, top_p=0.5, max_new_tokens=9, stop=("\n",), seed=11)
    assert call.stream and call.include_usage
    assert parse_chat_body({"messages": USER, "stop": ["a", "b"]}).params.stop == ("a", "b")
    pred = parse_chat_body({"messages": USER, "prediction": {"type": "content", "content": [{"type": "text", "text": "x"}]}})
    assert pred.prediction == "x"


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f g"}}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "stream": True}, "stream"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function",
      "function": {"name": "g"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}},
     "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format.json_schema.name"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"n": 0}, "n"),
    ({"n": True}, "n"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": 3}, "stop"),
    ({"seed": "x"}, "seed"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"prediction": {"type": "content", "content": "x"}, "n": 2}, "n"),
    ({"prediction": {"type": "other", "content": "x"}}, "prediction.type"),
    ({"model": 3}, "model"),
])
def test_parse_refuses_with_param(extra, param):
    with pytest.raises(ChatRequestError) as ei:
        parse_chat_body({"messages": USER, **extra})
    e = ei.value
    assert (e.status_code, e.param) == (400, param)
    assert e.to_dict() == {"error": {"message": e.message, "type": "invalid_request_error", "param": param,
                                     "code": None}}


@pytest.mark.parametrize("messages, param", [
    (None, "messages"),
    ([], "messages"),
    ("hi", "messages"),
    ([{"role": "tool", "content": "x", "tool_call_id": "1"}], "messages[0].role"),
    ([{"role": "robot", "content": "x"}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
     "messages[1].content[0].type"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}], "messages[0].tool_calls"),
])
def test_parse_refuses_bad_messages(messages, param):
    with pytest.raises(ChatRequestError) as ei:
        parse_chat_body({"messages": messages})
    assert ei.value.param == param and ei.value.status_code == 400


def _calls(*bodies):
    return [parse_chat_body({"messages": USER, **b}) for b in bodies]


def test_run_batches_identical_params_and_predictions_one_by_one(scripted):
    eng = scripted()
    calls = [parse_chat_body({"messages": [{"role": "user", "content": c}], "max_tokens": m, **extra})
             for c, m, extra in [("a", 20, {}), ("b", 5, {}), ("c", 20, {}),
                                 ("d", 20, {"prediction": {"type": "content", "content": "fake:d"}}),
                                 ("e", 20, {"n": 2})]]
    res = run_chat_calls(eng, calls, model_name="served")
    # one generate per distinct SamplingParams: {a, c}, {b}, {e}; the prediction went its own way
    batches = sorted(sorted(m[-1]["content"] for m in prompts) for prompts, _ in eng.generate_calls)
    assert batches == [["a", "c"], ["b"], ["e"]]
    assert [(m[-1]["content"], p) for m, _, p in eng.predicted_calls] == [("d", "fake:d")]
    # results come back in call order
    assert [r["choices"][0]["message"]["content"] for r in res] == ["fake:a", "fake:", "fake:c", "fake:d", "fake:e"]
    a, b, _, d, e = res
    assert a["object"] == "chat.completion" and a["model"] == "served" and a["id"].startswith("chatcmpl-")
    assert a["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "fake:a"},
                             "finish_reason": "stop", "logprobs": None}]
    assert b["choices"][0]["finish_reason"] == "length"
    assert a["usage"]["prompt_tokens"] == 1 and a["usage"]["completion_tokens"] == 6 and a["usage"]["total_tokens"] == 7
    assert d["usage"]["completion_tokens_details"] == {"accepted_prediction_tokens": 6,
                                                       "rejected_prediction_tokens": 0, "reasoning_tokens": 0}
    # n=2: two choices, the prompt counted once and the completions summed
    assert [c["index"] for c in e["choices"]] == [0, 1]
    assert e["usage"]["prompt_tokens"] == 1 and e["usage"]["completion_tokens"] == 12


def test_run_isolates_a_failing_call(scripted):
    eng = scripted()
    calls = [parse_chat_body({"messages": [{"role": "user", "content": c}]}) for c in ("ok", "boom", "fine")]
    res = run_chat_calls(eng, calls, model_name="m")
    assert res[0]["choices"][0]["message"]["content"] == "fake:ok"
    assert isinstance(res[1], ChatRequestError) and res[1].status_code == 400 and "scripted failure" in res[1].message
    assert res[2]["choices"][0]["message"]["content"] == "fake:fine"


def test_run_without_predicted_path_is_a_400(scripted):
    class NoPrediction:
        def generate(self, prompts, params):
            return scripted().generate(prompts, params)

    [res] = run_chat_calls(NoPrediction(), _calls({"prediction": {"type": "content", "content": "x"}}), model_name="m")
    assert isinstance(res, ChatRequestError) and res.param == "prediction"


def test_run_on_a_real_tiny_model(tiny_model_dir):
    from rft.engine import load_engine

    eng = load_engine(str(tiny_model_dir))
    calls = _calls({"max_tokens": 6, "temperature": 0}, {"max_tokens": 600}, {"max_tokens": 6, "temperature": 0})
    ok, too_long, ok2 = run_chat_calls(eng, calls, model_name="tiny")
    direct = eng.generate([USER], SamplingParams(temperature=0, max_new_tokens=6))[0][0]
    assert ok["choices"][0]["message"]["content"] == direct.text == ok2["choices"][0]["message"]["content"]
    assert ok["usage"]["completion_tokens"] == len(direct.token_ids)
    assert ok["usage"]["prompt_tokens"] == direct.prompt_tokens > 0
    # the tiny model's context is 512 tokens: prompt + 600 does not fit, and only that call fails
    assert isinstance(too_long, ChatRequestError) and too_long.code == "context_length_exceeded"
    assert "512" in too_long.message
