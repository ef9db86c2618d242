"""Tool calls (engine/tools.py): rendering into the prompt (template or fallback block), parsing back into OpenAI's
shape (fuzzed: never raises), and `sample.output_tools` / `sample.output_json` / sample_parse_error for graders."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from rft.config import ExtractionConfig
from rft.engine.tools import OPEN, CLOSE, parse_tool_calls, render_with_tools, tool_block, tool_problems, with_tool_block
from rft.extraction import sample_from_text
from rft.graders import build
from tests.test_engine_constrained import json_char_tokenizer

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
USER = [{"role": "user", "content": "weather in Paris?"}]


def test_parse_one_call_openai_shape():
    text = f'Let me check.\n{OPEN}\n{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}\n{CLOSE}'
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    [c] = calls
    assert c["type"] == "function" and c["id"].startswith("call_")
    assert c["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert json.loads(c["function"]["arguments"]) == {"city": "Paris"}
    assert parse_tool_calls(text) == (content, calls)  # deterministic ids


def test_parse_variants():
    # several blocks, a list inside one block, arguments as a JSON string, an unclosed final block
    text = (f'{OPEN}{{"name": "a", "arguments": "{{\\"x\\": 1}}"}}{CLOSE} and '
            f'{OPEN}[{{"name": "b", "arguments": {{}}}}, {{"name": "c", "parameters": {{"y": [1]}}}}]{CLOSE}'
            f'{OPEN}{{"name": "d", "arguments": {{"z": true}}}}')
    content, calls = parse_tool_calls(text)
    assert [c["function"]["name"] for c in calls] == ["a", "b", "c", "d"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"x": 1}
    assert json.loads(calls[2]["function"]["arguments"]) == {"y": [1]}
    assert content == "and"
    assert len({c["id"] for c in calls}) == 4
    # a bare JSON call is a call; junk in tags or plain text is not
    assert parse_tool_calls('{"name": "f", "arguments": {"a": 1}}')[1][0]["function"]["name"] == "f"
    assert parse_tool_calls(f"{OPEN}not json{CLOSE}") == (f"{OPEN}not json{CLOSE}", [])
    assert parse_tool_calls('{"name": "f"}') == ('{"name": "f"}', [])
    assert parse_tool_calls(f'{OPEN}{{"name": "f", "arguments": 3}}{CLOSE}')[1] == []
    assert parse_tool_calls("") == (None, [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list('<>/tool_cal{}[]":, nme' "argsx1\\") + [OPEN, CLOSE, '"name"', '"arguments"']),
                max_size=80).map("".join))
def test_parser_never_raises_and_calls_are_well_formed(text):
    content, calls = parse_tool_calls(text)
    assert content is None or isinstance(content, str)
    for c in calls:
        assert set(c) == {"id", "type", "function"} and c["type"] == "function"
        assert isinstance(c["function"]["name"], str) and c["function"]["name"]
        assert isinstance(json.loads(c["function"]["arguments"]), dict)


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=10))
def test_parser_on_arbitrary_json_in_tags(obj):
    parse_tool_calls(f"{OPEN}{json.dumps(obj)}{CLOSE}")
    parse_tool_calls(json.dumps(obj))


def test_tool_problems():
    assert tool_problems(TOOLS) == [] and tool_problems(None) == []
    assert tool_problems({})[0][0] == "tools"
    assert tool_problems([{"type": "function"}])[0][0] == "tools[0].function"
    assert tool_problems([{"type": "function", "function": {"name": "a b"}}])[0][0] == "tools[0].function.name"
    assert tool_problems([{"type": "function", "function": {"name": "a", "parameters": []}}])[0][0] == \
        "tools[0].function.parameters"


def test_fallback_block_when_the_template_ignores_tools():
    tok = json_char_tokenizer()  # its template knows nothing of tools
    ids = render_with_tools(tok, USER, TOOLS)
    text = tok.decode(ids)
    assert "get_weather" in text and OPEN in text and text.index("get_weather") < text.index("weather in Paris?")
    # an existing system message gets the block appended instead
    msgs = with_tool_block([{"role": "system", "content": "Be brief."}, *USER], TOOLS)
    assert len(msgs) == 2 and msgs[0]["content"].startswith("Be brief.") and tool_block(TOOLS) in msgs[0]["content"]


def test_template_with_native_tool_support_is_used():
    tok = json_char_tokenizer()
    tok.chat_template = ("{% if tools %}TOOLS{% for t in tools %} {{ t.function.name }}{% endfor %}\n{% endif %}"
                         "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: ")
    text = tok.decode(render_with_tools(tok, USER, TOOLS))
    assert text.startswith("TOOLS get_weather") and "<tools>" not in text


def test_sample_output_tools_and_graders():
    text = f'{OPEN}\n{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}\n{CLOSE}'
    s = sample_from_text(text, ExtractionConfig(), tools=TOOLS)
    g = build({"type": "string_check", "name": "n", "input": "{{sample.output_tools[0].function.name}}",
               "reference": "get_weather", "operation": "eq"})
    assert g.grade(s, {}).score == 1.0
    assert sample_from_text(text, ExtractionConfig())["output_tools"] == []  # no tools offered: not parsed
    g2 = build({"type": "string_check", "name": "n", "input": "{{sample.output_tools[0].function.name}}",
                "reference": "x", "operation": "eq"})
    assert g2.grade(sample_from_text("no call", ExtractionConfig(), tools=TOOLS), {}).error == "invalid_variable_error"


def test_output_json_and_sample_parse_error():
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    g = build({"type": "string_check", "name": "c", "input": "{{sample.output_json.city}}", "reference": "Paris",
               "operation": "eq"})
    ok = sample_from_text('{"city": "Paris"}', ExtractionConfig(), response_format=rf)
    assert ok["output_json"] == {"city": "Paris"} and g.grade(ok, {}).score == 1.0
    cut = sample_from_text('{"city": "Par', ExtractionConfig(), response_format=rf, finish_reason="length")
    r = g.grade(cut, {})
    assert r.score is None and r.error == "sample_parse_error"
    # under a JSON response_format even a grader over output_text flags the unparsable output
    g_text = build({"type": "string_check", "name": "t", "input": "{{sample.output_text}}", "reference": "x",
                    "operation": "eq"})
    assert g_text.grade(cut, {}).error == "sample_parse_error"
    # without a response_format, plain text is graded as text
    assert g_text.grade(sample_from_text("x", ExtractionConfig()), {}).score == 1.0
