"""Fuzzing the chat-request parser (`rft.openai_chat.parse_json_body` and `parse_chat_body`) with hypothesis.

Generated bodies: arbitrary JSON-like values, OpenAI-shaped bodies with one field replaced by anything (wrong
kinds, NaN, infinities, integers of thousands of digits, deep nesting, lone surrogates and other odd
unicode), and raw bytes. The only exception that may escape is `ChatRequestError` (the server's 4xx); what is
accepted is a well-formed `ChatCall`; every error renders as an OpenAI-shaped response.

Run: .venv/bin/python -m pytest -q -p no:cacheprovider tests/serve/test_fuzz_chat_request.py
"""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from rft.openai_chat import MAX_JSON_DEPTH, ChatCall, ChatRequestError, parse_chat_body, parse_json_body
from rft.serve.guard import error_response

# Every code point, lone surrogates included (legal in JSON strings as \ud800 escapes, not in UTF-8).
odd_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    ["", "\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "e\u0301", "\U0001f600", "a" * 300, "text", "content",
     "user", "system", "developer", "tool", "assistant", "none", "auto"])
numbers = (st.integers() | st.integers(min_value=-(10**1200), max_value=10**1200)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0, 1, -1, 2**63, -(2**63) - 1, 2**64, 10**400, 1e308, float("nan"), float("inf"),
                              -float("inf"), -0.0, 5e-324, True, False]))
scalars = st.none() | st.booleans() | numbers | odd_text
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(odd_text, inner, max_size=4), max_leaves=20)

KEYS = ["messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed",
        "stream", "stream_options", "prediction", "tools", "tool_choice", "functions", "function_call", "logprobs",
        "top_logprobs", "response_format", "presence_penalty", "frequency_penalty", "logit_bias", "audio",
        "modalities", "web_search_options", "user", "metadata", "store"]


def nested(depth: int, leaf):
    v = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "developer"]) | json_like,
                                 "content": odd_text | st.lists(st.fixed_dictionaries(
                                     {"type": st.sampled_from(["text", "image_url"]) | json_like,
                                      "text": odd_text | json_like}), max_size=3) | json_like})
base_body = st.fixed_dictionaries({"messages": st.lists(message, min_size=1, max_size=3)},
                                  optional={"temperature": numbers, "top_p": numbers, "n": numbers, "seed": numbers,
                                            "max_tokens": numbers, "stop": odd_text | st.lists(odd_text, max_size=6),
                                            "stream": st.booleans() | json_like, "model": odd_text | json_like})
mutated = st.tuples(base_body, st.sampled_from(KEYS + ["bogus", "\ud800"]), json_like
                    | st.integers(0, 200).map(lambda d: nested(d, float("nan")))).map(lambda t: {**t[0], t[1]: t[2]})
bodies = json_like | base_body | mutated | st.integers(0, 100).map(lambda d: {"messages": nested(d, "x")})


def check(body) -> None:
    try:
        call = parse_chat_body(body)
    except ChatRequestError as e:
        assert 400 <= e.status_code < 500 and e.message
        r = error_response(e)  # renders, whatever user text the message quotes
        assert json.loads(r.body)["error"]["message"]
        return
    assert isinstance(call, ChatCall) and call.messages
    for m in call.messages:
        assert m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str)
        m["content"].encode("utf-8")  # a tokenizer can take it
    p = call.params
    assert 1 <= p.n <= 128 and 0 <= p.temperature <= 2 and 0 <= p.top_p <= 1 and p.max_new_tokens >= 1
    assert math.isfinite(p.temperature) and math.isfinite(p.top_p)
    assert p.seed is None or -(2**63) <= p.seed < 2**63
    hash(p)  # calls are grouped by their parameters


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_parse_chat_body_raises_only_its_request_error(body):
    check(body)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | json_like.map(lambda v: json.dumps(v).encode())
       | base_body.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))
       | st.integers(0, 3000).map(lambda d: (b"[" * d + b"]" * d)))
def test_parse_json_body_then_parse_chat_body(raw):
    try:
        value = parse_json_body(raw)
    except ChatRequestError as e:
        assert e.status_code == 400
        return
    # what parses is finite and shallow: NaN, Infinity and 1e999 never get through
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        assert d <= MAX_JSON_DEPTH + 1
        assert not isinstance(v, float) or math.isfinite(v)
        if isinstance(v, dict):
            stack.extend((c, d + 1) for c in v.values())
        elif isinstance(v, list):
            stack.extend((c, d + 1) for c in v)
    check(value)


def test_the_edges_named_in_the_brief():
    for body in [{"messages": [{"role": "user", "content": "hi"}], "temperature": float("nan")},
                 {"messages": [{"role": "user", "content": "hi"}], "seed": 10**5000},
                 {"messages": [{"role": "user", "content": "\ud800"}]},
                 {"messages": [{"role": "user", "content": "hi"}], "\ud800" * 10_000: 1},
                 {"messages": nested(100_000, "x")}]:
        check(body)
    for raw in [b"NaN", b'{"t": Infinity}', b'{"t": -Infinity}', b'{"t": 1e999}', b"9" * 5000,
                b"[" * 100_000, json.dumps(nested(MAX_JSON_DEPTH + 1, 1)).encode(), b"\xff"]:
        try:
            parse_json_body(raw)
        except ChatRequestError as e:
            assert e.status_code == 400
        else:
            raise AssertionError(raw[:40])
    assert parse_json_body(json.dumps(nested(MAX_JSON_DEPTH - 1, 1)).encode()) == nested(MAX_JSON_DEPTH - 1, 1)
