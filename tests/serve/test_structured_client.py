"""response_format and tools through the official `openai` client on a live loopback server (tiny random model
with a JSON-capable character tokenizer): the random model's content is schema-valid JSON only because decoding
is constrained; a forced tool call comes back as `message.tool_calls` with finish_reason "tool_calls"."""

from __future__ import annotations

import json

import pytest

from tests.livetools import run_live
from tests.test_engine_constrained import RF, SCHEMA, tiny_json_model, valid

openai = pytest.importorskip("openai")

TOKEN = "test-token-0123456789"
USER = [{"role": "user", "content": "measure it"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}}, "required": ["city"],
    "additionalProperties": False}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from rft.serve import create_app

    model, tok = tiny_json_model(seed=2)
    out = tmp_path_factory.mktemp("tiny_json_llama")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    app = create_app(str(out), token=TOKEN)
    with run_live(app) as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key=TOKEN, max_retries=0, timeout=120), str(out)


def test_response_format_json_schema(live):
    client, model = live
    r = client.chat.completions.create(model=model, messages=USER, max_tokens=120, temperature=1.0, n=3, seed=1,
                                       response_format=RF)
    for ch in r.choices:
        assert ch.finish_reason == "stop" and valid(json.loads(ch.message.content)), ch.message.content
    # the same through a stream
    chunks = list(client.chat.completions.create(model=model, messages=USER, max_tokens=120, temperature=1.0,
                                                 seed=2, response_format=RF, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert valid(json.loads(text))
    # json_object
    r = client.chat.completions.create(model=model, messages=USER, max_tokens=60, temperature=0,
                                       response_format={"type": "json_object"})
    c = r.choices[0]
    assert c.finish_reason == "length" or isinstance(json.loads(c.message.content), dict)


def test_response_format_errors(live):
    client, model = live
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=USER, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}})
    assert e.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=USER, response_format={"type": "yaml"})
    assert e.value.body["param"] == "response_format.type"


def test_forced_tool_call(live):
    client, model = live
    r = client.chat.completions.create(model=model, messages=USER, max_tokens=120, temperature=1.0, n=2, seed=3,
                                       tools=TOOLS, tool_choice="required")
    for ch in r.choices:
        assert ch.finish_reason == "tool_calls"
        [call] = ch.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in ("get_weather", "get_time")
        args = json.loads(call.function.arguments)
        assert args == {} if call.function.name == "get_time" else args["city"] in ("Paris", "Oslo")
    r = client.chat.completions.create(model=model, messages=USER, max_tokens=120, temperature=1.0, seed=4,
                                       tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] in ("Paris", "Oslo")


def test_tools_auto_and_none(live):
    client, model = live
    r = client.chat.completions.create(model=model, messages=USER, max_tokens=20, temperature=0, tools=TOOLS)
    ch = r.choices[0]  # a random model rarely calls on its own: plain content then
    assert (ch.finish_reason == "tool_calls") == bool(ch.message.tool_calls)
    r = client.chat.completions.create(model=model, messages=USER, max_tokens=20, temperature=0, tools=TOOLS,
                                       tool_choice="none")
    assert r.choices[0].message.tool_calls is None
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=USER, tools=TOOLS, stream=True)
    assert e.value.body["param"] == "stream"
