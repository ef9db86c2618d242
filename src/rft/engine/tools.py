"""Tool (function) calling, single turn: OpenAI tool definitions into the prompt, tool calls out of the text.

    ids = render_with_tools(tokenizer, messages, tools)    # the chat template's own tool support, or the fallback
    content, calls = parse_tool_calls(text)                 # calls in OpenAI's shape (below)
    tool_problems(tools, where) -> [(field, message)]       # shape checks for rows and chat requests

Rendering: `tools` (OpenAI's `[{"type": "function", "function": {"name", "description", "parameters"}}]`) go
to the tokenizer's chat template (`apply_chat_template(..., tools=tools)`). Many small models' templates (the
embedded SmolLM2's among them) ignore `tools`; we detect that (the rendering with tools equals the one without)
and then add the documented fallback system block `tool_block(tools)` ourselves: appended to the first system
message, or as a new first system message. The block lists the tools as JSON inside `<tools></tools>` and asks
for calls in the Hermes format, which SmolLM2 and Qwen models have seen in training:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Parsing (`parse_tool_calls`) accepts one or more `<tool_call>...</tool_call>` blocks (a final block may lack its
closing tag: the completion may have stopped there), each holding a JSON object `{"name", "arguments"}` (or a
list of them); `arguments` may be an object or a JSON string; `parameters` is accepted for `arguments`. A text
that is nothing but such a JSON object also counts. Calls come out in OpenAI's shape,
`{"id": "call_...", "type": "function", "function": {"name": str, "arguments": "<JSON text>"}}`, with ids derived
from the call's position and content (deterministic, so graders and tests are reproducible). Anything that is not
a well-formed call is left in the content and is not a call; the parser never raises (fuzzed in
tests/test_tools.py). `content` is the text outside the blocks, stripped (None when empty).

Simplified: single turn (no `tool` role messages, no parallel-call bookkeeping); argument schemas are not
checked against the tool's `parameters` while parsing (a grader can check them).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|\Z)", re.S)
MAX_TOOLS = 128


def tool_problems(tools: Any, where: str = "tools") -> list[tuple[str, str]]:
    """(field, message) for each problem of an OpenAI `tools` list (function tools only)."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        return [(where, f"'{where}' must be an array of tool definitions")]
    if len(tools) > MAX_TOOLS:
        return [(where, f"'{where}' has {len(tools)} tools; at most {MAX_TOOLS} are allowed")]
    out = []
    for i, t in enumerate(tools):
        p = f"{where}[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function":
            out.append((f"{p}.type", f"'{p}' must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"))
            continue
        fn = t.get("function")
        if not isinstance(fn, dict):
            out.append((f"{p}.function", f"'{p}.function' must be an object with a 'name'"))
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", name):
            out.append((f"{p}.function.name", f"'{p}.function.name' must be 1-64 letters, digits, '_' or '-'"))
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            out.append((f"{p}.function.parameters", f"'{p}.function.parameters' must be a JSON Schema object"))
        if "description" in fn and not isinstance(fn["description"], str):
            out.append((f"{p}.function.description", f"'{p}.function.description' must be a string"))
    return out


def tool_names(tools: list | None) -> list[str]:
    return [t["function"]["name"] for t in tools or () if isinstance(t, dict) and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str)]


def tool_block(tools: list) -> str:
    """The fallback system text that describes `tools` and the call format (see the module docstring)."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return ("You are a function calling AI model. You may call one of the functions below to answer the user. "
            "The functions are described as JSON inside <tools></tools>:\n"
            f"<tools>\n{lines}\n</tools>\n"
            "To call a function, answer with a JSON object holding its name and arguments inside "
            "<tool_call></tool_call> tags:\n"
            f"{OPEN}\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n{CLOSE}")


def with_tool_block(messages: list[dict], tools: list) -> list[dict]:
    """`messages` with the fallback tool block in the system message (appended) or as a new first message."""
    block = tool_block(tools)
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        first = dict(messages[0], content=messages[0]["content"].rstrip() + "\n\n" + block)
        return [first, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


def _ids(out) -> list[int]:
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


def template_renders_tools(tokenizer, messages: list[dict], tools: list) -> bool:
    """True when the chat template itself puts `tools` into the prompt."""
    try:
        plain = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        withs = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    except Exception:  # a template that chokes on tools: use the fallback
        return False
    return plain != withs


def render_with_tools(tokenizer, messages: list[dict], tools: list | None) -> list[int]:
    """Chat-template token ids for a prompt offering `tools` (see the module docstring)."""
    if tools and template_renders_tools(tokenizer, messages, tools):
        return _ids(tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True))
    msgs = with_tool_block(messages, tools) if tools else messages
    return _ids(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True))


def _call_id(i: int, name: str, args: str) -> str:
    return "call_" + hashlib.sha256(f"{i}\x00{name}\x00{args}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _as_calls(obj: Any) -> list[tuple[str, str]] | None:
    """(name, arguments JSON text) for a parsed call object or list of them; None if it is not one."""
    objs = obj if isinstance(obj, list) else [obj]
    if not objs:
        return None
    out = []
    for o in objs:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str) or not o["name"]:
            return None
        args = o.get("arguments", o.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except (ValueError, RecursionError):
                return None
        if not isinstance(args, dict):
            return None
        try:
            text = json.dumps(args, ensure_ascii=False)
        except (ValueError, TypeError, RecursionError):
            return None
        out.append((o["name"], text))
    return out


def _loads(s: str) -> Any:
    try:
        return json.loads(s)
    except (ValueError, RecursionError):
        return None


def parse_tool_calls(text: str) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) from a completion's text (see the module docstring). Never raises."""
    if not isinstance(text, str):
        return None, []
    found: list[tuple[str, str]] = []
    kept: list[str] = []
    last = 0
    for m in _BLOCK.finditer(text):
        calls = _as_calls(_loads(m.group(1).strip()))
        if calls is None:
            continue  # not a call: stays in the content
        found.extend(calls)
        kept.append(text[last : m.start()])
        last = m.end()
    kept.append(text[last:])
    content = "".join(kept).strip()
    if not found:
        s = text.strip()
        if s.startswith("{") and s.endswith("}"):
            obj = _loads(s)
            if isinstance(obj, dict) and "arguments" in obj:
                calls = _as_calls(obj)
                if calls:
                    found, content = calls, ""
    tool_calls = [{"id": _call_id(i, n, a), "type": "function", "function": {"name": n, "arguments": a}}
                  for i, (n, a) in enumerate(found)]
    return (content or None), tool_calls
