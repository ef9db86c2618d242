"""OpenAI Chat Completions bodies in and out: validation, batching onto an engine, response shapes.

One path serves the HTTP server (`rft serve`) and batch inference:

- `parse_chat_body(body)` validates a `/v1/chat/completions` request body and returns a `ChatCall` (messages,
  `SamplingParams`, prediction, model, stream). Every mistake raises `ChatRequestError` naming the parameter,
  with the status code and error shape OpenAI uses (`{"error": {"message", "type", "param", "code"}}`).
- `run_chat_calls(engine, calls, model_name=...)` runs many calls: calls with identical sampling parameters go
  to the engine in one `generate` call (one batch); calls carrying a prediction go one by one through the
  engine's predicted-output path (`generate_predicted`). It returns, per call, a `chat.completion` body or the
  `ChatRequestError` for that call, so one bad call never fails its neighbours.
- `completion_body`, `chunk_body`, `usage_body` build the response objects (the server streams chunks).
- `parse_json_body(raw)` turns request bytes into JSON strictly: invalid UTF-8, invalid JSON, NaN / Infinity /
  numbers that overflow a float (1e999), integers too long to convert, and nesting deeper than `MAX_JSON_DEPTH`
  are a 400. `parse_chat_body` itself never raises anything but `ChatRequestError`, whatever Python value it
  is handed (tests/serve/test_fuzz_chat_request.py drives it with generated bodies).

Structured outputs and tools:
- `response_format` `json_schema` / `json_object` constrain decoding (rft.engine.constrain, llguidance): the
  content is JSON that matches the schema unless `max_tokens` cut it (finish_reason "length"). A schema the
  decoder cannot enforce is a 400 naming `response_format.json_schema.schema`.
- `tools` (function tools) reach the chat template (or rft's documented fallback block, rft.engine.tools);
  `<tool_call>` blocks in the output come back as `message.tool_calls` in OpenAI's shape, with
  `finish_reason: "tool_calls"` and the rest of the text (or null) as `content`. `tool_choice`: "auto" (default),
  "none" (tools are not shown to the model), "required" or `{"type": "function", "function": {"name"}}` (decoding
  is constrained to one call of an allowed tool, arguments matching its `parameters` schema).

Simplifications, stated honestly:
- Single turn: `tool` / `function` role messages and assistant `tool_calls` in the input are refused; streaming
  with `tools` is refused (send stream: false); `tool_choice` other than auto/none cannot be combined with a
  JSON response_format. Logprobs, audio, logit_bias, legacy `functions` / `function_call` and
  presence/frequency penalties are refused with a 400 naming the parameter; harmless fields (`user`,
  `metadata`, `store`, `service_tier`, `parallel_tool_calls`, `reasoning_effort`) are accepted and ignored.
  Unknown fields are refused, as OpenAI does.
- `developer` messages are passed to the chat template as `system` (open models' templates know no developer
  role); text content parts are joined into one string.
- Without `max_tokens` / `max_completion_tokens`, completions stop after `DEFAULT_MAX_TOKENS` tokens (OpenAI's
  limit is the context window); a prompt plus `max_tokens` that exceed the model's context is a 400.
- `seed` makes a call reproducible on its own; inside a batch of calls sharing the same parameters the random
  stream is shared, so a seeded call is only reproducible when batched with the same neighbours.

rft's request extension, inference strategies (rft.eval.inference): `"rft": {"strategy": "<spec>", "extract":
"<regex>", "occurrence": "last"|"first"}`, e.g. `{"strategy": "best_of_n:n=8,selector=majority", "extract":
"-?\\d+"}` (majority vote over the answers the regex extracts; without `extract` over the whole texts) or
`{"strategy": "reasoning:budget=128"}` (think within 128 tokens, then answer within max_tokens). The response
has one choice, the strategy's answer; `usage.completion_tokens` counts every token the strategy generated
(all samples, both phases; the thinking is also `completion_tokens_details.reasoning_tokens`), and a top-level
`rft` object carries the strategy, its candidates and selection (votes) or its thinking. `best_of_n` samples at
the strategy's temperature (`temperature=` in the spec, default 1.0) with the request's `seed`. Refused with a
400 naming `rft.strategy`: the `grader` selector (it reads a reference answer, which a request does not have),
and a strategy combined with `stream`, `n` > 1, `prediction` or `tools`. Works the same in `rft serve` and in
local `rft batch` lines (both run `run_chat_calls`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rft.engine import SamplingParams
from rft.engine import constrain
from rft.engine.tools import parse_tool_calls, tool_names, tool_problems
from rft.errors import RftError
from rft.types import Completion

DEFAULT_MAX_TOKENS = 256
MAX_N = 128
MAX_STOP = 4
MAX_JSON_DEPTH = 32  # containers inside containers; a real chat body nests 4 deep (messages/content parts)
MAX_TOKENS_CAP = 2**31 - 1  # max_tokens beyond this cannot fit any context window or tensor index
SEED_RANGE = (-(2**63), 2**63 - 1)  # OpenAI's seed is an int64; torch.Generator accepts this range
ROLES = ("system", "user", "assistant", "developer")
# `rft.extract` is a caller's regex run on the model's output (at most max_tokens tokens). Python's re has no
# timeout, so a pathological pattern can still backtrack for long on one request: the length cap only keeps it
# small; a server open to untrusted callers should not rely on it (stated, not solved).
MAX_EXTRACT_CHARS = 200

# Accepted and ignored: they change nothing about the text a local model produces.
_IGNORED = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "reasoning_effort",
            "prompt_cache_key", "safety_identifier", "verbosity")
_KNOWN = {"messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop",
          "seed", "stream", "stream_options", "prediction", "tools", "tool_choice", "functions",
          "function_call", "logprobs", "top_logprobs", "response_format", "presence_penalty",
          "frequency_penalty", "logit_bias", "audio", "modalities", "web_search_options", "rft", *_IGNORED}


class ChatRequestError(Exception):
    """A request the server refuses, in OpenAI's error shape. `status_code` is the HTTP status (400 invalid
    request, 404 unknown model, 422 unprocessable, 500 server error); `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None, *, status_code: int = 400,
                 code: str | None = None, type: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status_code = status_code
        self.code = code
        self.type = type or ("server_error" if status_code >= 500 else "invalid_request_error")

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"ChatRequestError({self.status_code}, {self.param!r}, {self.message!r})"


@dataclass(frozen=True)
class ChatCall:
    """One validated chat completion request."""

    messages: list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}], ready for a chat template
    params: SamplingParams
    prediction: str | None = None
    model: str | None = None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a final chunk carries the usage
    tools: list | None = None  # function tools shown to the model (None with tool_choice "none")
    response_format: dict | None = None
    strategy: Any = None  # rft.eval.inference.StrategySpec from the `rft` extension (None: plain decoding)
    extraction: Any = None  # rft.config.ExtractionConfig for the strategy's answers


# ------------------------------------------------------------------------------------------ parsing
def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number (non-finite numbers are refused)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e999 parses to inf, which no sampling parameter can mean
        raise ValueError(f"the number {text[:40]} is too large (non-finite numbers are refused)")
    return v


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when containers nest deeper than `limit` (iterative, so a deep value cannot blow the stack)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            continue
        if d > limit:
            return True
        stack.extend((c, d + 1) for c in children)
    return False


def parse_json_body(raw: bytes) -> Any:
    """A request body as JSON, strictly; ChatRequestError (400) for anything else. Empty is null."""
    try:
        text = raw.decode("utf-8") if raw else "null"
    except UnicodeDecodeError as e:
        raise ChatRequestError(f"the request body is not valid UTF-8 (byte {e.start})", None) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ChatRequestError(f"the request body nests too deeply (limit {MAX_JSON_DEPTH} levels)", None) from None
    except ValueError as e:  # JSONDecodeError, a refused constant, an int longer than Python converts
        raise ChatRequestError(f"the request body is not valid JSON: {_short(str(e), 200)}", None) from None
    if json_depth_exceeds(value):
        raise ChatRequestError(f"the request body nests more than {MAX_JSON_DEPTH} levels deep", None)
    return value


def _short(text: str, n: int = 60) -> str:
    """User text echoed in an error message, cut short: a 4 MB key must not come back in the response."""
    return text if len(text) <= n else text[:n] + "..."


def _show(v: Any) -> str:
    """A value for an error message; safe for ints too long for str() and for huge strings."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"an integer of {v.bit_length()} bits"
    return _short(repr(v))


def _bad(param: str | None, message: str) -> ChatRequestError:
    return ChatRequestError(message, param)


def _number(body: dict, key: str, lo: float, hi: float, default: float) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(key, f"'{key}' must be a number, got {type(v).__name__}")
    if not lo <= v <= hi:  # NaN compares False: refused here too
        raise _bad(key, f"'{key}' must be between {lo:g} and {hi:g}, got {_show(v)}")
    return float(v)


def _int(body: dict, key: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(key, f"'{key}' must be an integer, got {type(v).__name__}")
    if v < lo or (hi is not None and v > hi):
        rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise _bad(key, f"'{key}' must be {rng}, got {_show(v)}")
    return v


def _str(s: str, param: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (U+D800 alone, legal in JSON): no tokenizer can encode it
        raise _bad(param, f"'{param}' contains an unpaired surrogate; send valid Unicode text") from None
    return s


def _text(content: Any, param: str) -> str:
    """A message/prediction content: a string or a list of {"type": "text", "text": str} parts."""
    if isinstance(content, str):
        return _str(content, param)
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            p = f"{param}[{j}]"
            if not isinstance(part, dict):
                raise _bad(p, f"'{p}' must be an object like {{\"type\": \"text\", \"text\": \"...\"}}")
            if part.get("type") != "text":
                raise _bad(f"{p}.type",
                           f"'{p}.type' is {_show(part.get('type'))}; only text content parts are supported")
            if not isinstance(part.get("text"), str):
                raise _bad(f"{p}.text", f"'{p}.text' must be a string")
            parts.append(_str(part["text"], f"{p}.text"))
        return "".join(parts)
    raise _bad(param, f"'{param}' must be a string or a list of text parts, got {type(content).__name__}")


def _messages(raw: Any) -> list[dict]:
    if raw is None:
        raise _bad("messages", "'messages' is required")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "'messages' must be a non-empty list of messages")
    out = []
    for i, m in enumerate(raw):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(p, f"'{p}' must be an object with 'role' and 'content'")
        role = m.get("role")
        if role in ("tool", "function"):
            raise _bad(f"{p}.role", f"'{p}.role' is '{role}': tool and function messages are not supported")
        if role not in ROLES:
            raise _bad(f"{p}.role", f"'{p}.role' must be one of {', '.join(ROLES)}, got {_show(role)}")
        if m.get("tool_calls") or m.get("function_call"):
            raise _bad(f"{p}.tool_calls", f"'{p}.tool_calls': tool calls are not supported")
        if m.get("audio"):
            raise _bad(f"{p}.audio", f"'{p}.audio': audio is not supported")
        if "content" not in m or m["content"] is None:
            raise _bad(f"{p}.content", f"'{p}.content' is required")
        # Open models' chat templates know no 'developer' role; OpenAI treats it as the new name for system.
        out.append({"role": "system" if role == "developer" else role, "content": _text(m["content"], f"{p}.content")})
    return out


def _refuse_unsupported(body: dict) -> None:
    unknown = sorted(str(k) for k in body if k not in _KNOWN)  # str: a dict built in Python may have other keys
    if unknown:
        name = _short(unknown[0])
        raise _bad(name, f"Unrecognized request argument supplied: {name}")
    for _, msg in tool_problems(body.get("tools"))[:1]:
        raise _bad("tools", msg)  # the message names the exact field
    if body.get("functions"):
        raise _bad("functions", "'functions' (deprecated) is not supported; use 'tools'")
    if body.get("function_call") not in (None, "none", "auto"):
        raise _bad("function_call", "'function_call': function calling is not supported by this server")
    if body.get("logprobs"):
        raise _bad("logprobs", "'logprobs' is not supported by this server")
    if body.get("top_logprobs"):
        raise _bad("top_logprobs", "'top_logprobs' is not supported by this server")
    for field, msg in constrain.response_format_problems(body.get("response_format"))[:1]:
        raise _bad(field, msg)
    for key in ("presence_penalty", "frequency_penalty"):
        if body.get(key) not in (None, 0, 0.0):
            raise _bad(key, f"'{key}' is not supported by this server (only 0)")
    if body.get("logit_bias"):
        raise _bad("logit_bias", "'logit_bias' is not supported by this server")
    if body.get("audio"):
        raise _bad("audio", "'audio' output is not supported")
    mods = body.get("modalities")
    if mods is not None and mods != ["text"]:
        raise _bad("modalities", "'modalities': only [\"text\"] is supported")
    if body.get("web_search_options") is not None:
        raise _bad("web_search_options", "'web_search_options': web search is not supported")


def parse_chat_body(body: dict) -> ChatCall:
    """Validate a /v1/chat/completions body; raise ChatRequestError naming the first bad parameter."""
    if not isinstance(body, dict):
        raise _bad(None, "the request body must be a JSON object")  # type: ignore[arg-type]
    _refuse_unsupported(body)
    messages = _messages(body.get("messages"))
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "'model' must be a string")
    max_tokens = _int(body, "max_completion_tokens", 1, MAX_TOKENS_CAP)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1, MAX_TOKENS_CAP)
    else:
        _int(body, "max_tokens", 1, MAX_TOKENS_CAP)  # still validated
    n = _int(body, "n", 1, MAX_N) or 1
    temperature = _number(body, "temperature", 0.0, 2.0, 1.0)
    top_p = _number(body, "top_p", 0.0, 1.0, 1.0)
    seed = _int(body, "seed", *SEED_RANGE)
    stop_raw = body.get("stop")
    if stop_raw is None:
        stop: tuple[str, ...] = ()
    elif isinstance(stop_raw, str):
        stop = (_str(stop_raw, "stop"),) if stop_raw else ()
    elif isinstance(stop_raw, list) and all(isinstance(s, str) for s in stop_raw):
        if len(stop_raw) > MAX_STOP:
            raise _bad("stop", f"'stop' takes at most {MAX_STOP} sequences, got {len(stop_raw)}")
        stop = tuple(_str(s, "stop") for s in stop_raw if s)
    else:
        raise _bad("stop", "'stop' must be a string or a list of strings")
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream", "'stream' must be a boolean")
    include_usage = False
    so = body.get("stream_options")
    if so is not None:
        if not stream:
            raise _bad("stream_options", "'stream_options' is only allowed when 'stream' is true")
        if not isinstance(so, dict):
            raise _bad("stream_options", "'stream_options' must be an object")
        extra = sorted(str(k) for k in set(so) - {"include_usage", "include_obfuscation"})
        if extra:
            name = _short(extra[0])
            raise _bad(f"stream_options.{name}", f"Unrecognized argument: stream_options.{name}")
        iu = so.get("include_usage", False)
        if not isinstance(iu, bool):
            raise _bad("stream_options.include_usage", "'stream_options.include_usage' must be a boolean")
        include_usage = iu
    prediction = None
    pred = body.get("prediction")
    if pred is not None:
        if not isinstance(pred, dict) or pred.get("type") != "content":
            raise _bad("prediction.type", "'prediction' must be {\"type\": \"content\", \"content\": ...}")
        if "content" not in pred:
            raise _bad("prediction.content", "'prediction.content' is required")
        prediction = _text(pred["content"], "prediction.content")
        if n > 1:
            raise _bad("n", "predicted outputs do not support n > 1")
    tools, constraint, rf = _tools_and_format(body, stream)
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_tokens or DEFAULT_MAX_TOKENS, stop=stop, seed=seed, constraint=constraint)
    strategy, extraction = _rft_extension(body, n=n, stream=stream, prediction=prediction, tools=tools)
    return ChatCall(messages=messages, params=params, prediction=prediction, model=model, stream=stream,
                    strategy=strategy, extraction=extraction,
                    include_usage=include_usage, tools=tools, response_format=rf)


def _rft_extension(body: dict, *, n: int, stream: bool, prediction, tools):
    """The `rft` request extension (see the module docstring): (StrategySpec or None, ExtractionConfig or None)."""
    ext = body.get("rft")
    if ext is None:
        return None, None
    if not isinstance(ext, dict):
        raise _bad("rft", "'rft' must be an object such as {\"strategy\": \"best_of_n:n=4,selector=majority\"}")
    extra = sorted(str(k) for k in set(ext) - {"strategy", "extract", "occurrence"})
    if extra:
        name = _short(extra[0])
        raise _bad(f"rft.{name}", f"Unrecognized argument: rft.{name} (rft takes strategy, extract, occurrence)")
    from rft.config import ExtractionConfig
    from rft.eval.inference import parse_strategy

    raw = ext.get("strategy")
    if raw is not None and not isinstance(raw, str):
        raise _bad("rft.strategy", "'rft.strategy' must be a string such as \"reasoning:budget=64\"")
    try:
        spec = parse_strategy(raw, param="rft.strategy")
    except RftError as e:
        raise _bad("rft.strategy", _short(e.message.removeprefix("rft.strategy: "), 300)
                   + (f" ({e.hint})" if e.hint else "")) from None
    if spec.uses_reference:
        raise _bad("rft.strategy", f"selector '{spec.selector}' grades samples against a reference answer, which a "
                                   "request does not have; use selector=majority")
    for bad, name in ((stream, "stream"), (n > 1, "n"), (prediction is not None, "prediction"), (bool(tools), "tools")):
        if bad:
            raise _bad("rft.strategy", f"'rft.strategy' cannot be combined with '{name}'")
    pattern = ext.get("extract")
    if pattern is not None:
        import re

        if not isinstance(pattern, str) or len(pattern) > MAX_EXTRACT_CHARS:
            raise _bad("rft.extract", f"'rft.extract' must be a regular expression of at most {MAX_EXTRACT_CHARS} "
                                      "characters")
        try:
            re.compile(pattern)
        except re.error as e:
            raise _bad("rft.extract", f"'rft.extract' is not a valid regular expression: {e}") from None
    occ = ext.get("occurrence", "last")
    if occ not in ("first", "last"):
        raise _bad("rft.occurrence", "'rft.occurrence' must be \"first\" or \"last\"")
    return spec, ExtractionConfig(pattern=pattern, occurrence=occ)


def _tools_and_format(body: dict, stream: bool):
    """(tools shown to the model or None, the decoding constraint or None, the JSON response_format or None)."""
    tools = body.get("tools") or None
    tc = body.get("tool_choice")
    if tc is not None and not (tc in ("none", "auto", "required") or isinstance(tc, dict)):
        raise _bad("tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                                  "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    if tc not in (None, "none", "auto") and not tools:
        raise _bad("tool_choice", "'tool_choice' needs 'tools'")
    if tc == "none":
        tools = None
    if tools and stream:
        raise _bad("stream", "streaming with 'tools' is not supported by this server; send stream: false")
    rf = body.get("response_format")
    try:
        constraint = constrain.from_response_format(rf)
    except RftError as e:
        raise _bad("response_format", _short(str(e), 600)) from None
    if tools and tc not in (None, "auto"):
        if constraint is not None:
            raise _bad("tool_choice", "a forced tool call cannot be combined with a JSON response_format")
        names = tool_names(tools)
        if isinstance(tc, dict):
            fn = tc.get("function") if tc.get("type") == "function" else None
            name = fn.get("name") if isinstance(fn, dict) else None
            if name not in names:
                raise _bad("tool_choice", f"'tool_choice' must name one of the tools ({', '.join(names)})")
            names = [name]
        try:
            constraint = tool_call_constraint([t for t in tools if t["function"]["name"] in names])
        except RftError as e:
            raise _bad("tools", _short(str(e), 600)) from None
    return tools, constraint, (rf if constraint is not None and constraint.kind != "tool_call" else None)


def tool_call_constraint(tools: list) -> constrain.Constraint:
    """Decoding constrained to one `<tool_call>` block calling one of `tools` with arguments that match its
    `parameters` schema (rft.engine.tools' call format)."""
    options = []
    for t in tools:
        fn = t["function"]
        params = fn.get("parameters") or {"type": "object"}
        options.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                        "required": ["name", "arguments"], "additionalProperties": False})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    schema = {**schema, "x-guidance": constrain.JSON_LAYOUT}
    lark = 'start: "<tool_call>\\n" call "\\n</tool_call>"\ncall: %json ' + json.dumps(schema)
    return constrain.from_lark(lark, "tool_call", "tools")


# ---------------------------------------------------------------------------------------- responses
def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def usage_body(completions: list[Completion]) -> dict:
    """OpenAI usage: the prompt counted once, completion tokens summed over the n choices."""
    prompt = completions[0].prompt_tokens if completions else 0
    comp = sum(len(c.token_ids) for c in completions)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": comp,
        "total_tokens": prompt + comp,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {
            "accepted_prediction_tokens": sum(c.accepted_prediction_tokens for c in completions),
            "rejected_prediction_tokens": sum(c.rejected_prediction_tokens for c in completions),
            "reasoning_tokens": 0,
        },
    }


def choice_body(i: int, c: Completion, *, tools: bool = False) -> dict:
    """One choice. With `tools`, tool calls in the text become `message.tool_calls` (finish_reason "tool_calls")."""
    message: dict[str, Any] = {"role": "assistant", "content": c.text}
    finish = c.finish_reason
    if tools:
        content, calls = parse_tool_calls(c.text)
        if calls:
            message = {"role": "assistant", "content": content, "tool_calls": calls}
            finish = "tool_calls"
    return {"index": i, "message": message, "finish_reason": finish, "logprobs": None}


def completion_body(completions: list[Completion], *, model_name: str, id: str | None = None,
                    created: int | None = None, tools: bool = False) -> dict:
    """A `chat.completion` response body for the n completions of one call (`tools`: parse tool calls)."""
    return {
        "id": id or new_id(),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model_name,
        "choices": [choice_body(i, c, tools=tools) for i, c in enumerate(completions)],
        "usage": usage_body(completions),
        "system_fingerprint": None,
    }


def chunk_body(*, id: str, created: int, model_name: str, delta: dict | None = None, index: int = 0,
               finish_reason: str | None = None, usage: dict | None = None, empty_choices: bool = False) -> dict:
    """A `chat.completion.chunk`. With `empty_choices` it is the final usage-only chunk (choices: [])."""
    choices = [] if empty_choices else [
        {"index": index, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": None}]
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model_name,
            "system_fingerprint": None, "choices": choices, "usage": usage}


# -------------------------------------------------------------------------------------------- running
def context_limit(engine) -> int | None:
    """The model's context window in tokens, when the engine exposes a transformers config."""
    cfg = getattr(getattr(engine, "model", None), "config", None)
    v = getattr(cfg, "max_position_embeddings", None)
    return int(v) if isinstance(v, int) and v > 0 else None


def check_call(engine, call: ChatCall) -> None:
    """Per-call checks that need the engine: the chat template accepts the messages, and prompt plus
    max_tokens fit the context window. Raises ChatRequestError."""
    tok = getattr(engine, "tokenizer", None)
    if tok is None:
        return
    # imported here, not at the top: rft.engine.local imports torch, which validating a batch file never needs
    from rft.engine.local import render_prompt

    try:
        n_prompt = len(render_prompt(tok, call.messages, call.tools))
    except Exception as e:  # jinja TemplateError and friends: the template's own message says what's wrong
        raise ChatRequestError(f"the model's chat template rejected these messages: {e}", "messages") from None
    limit = context_limit(engine)
    if limit is not None and n_prompt + call.params.max_new_tokens > limit:
        raise ChatRequestError(
            f"this model's maximum context length is {limit} tokens; the messages use {n_prompt} tokens and "
            f"max_tokens asks for {call.params.max_new_tokens} more. Shorten the messages or lower max_tokens.",
            "messages", code="context_length_exceeded")


def _as_error(e: Exception) -> ChatRequestError:
    if isinstance(e, ChatRequestError):
        return e
    if isinstance(e, (RftError, ValueError)):
        return ChatRequestError(str(e), None, status_code=400)
    return ChatRequestError(f"generation failed: {type(e).__name__}: {e}", None, status_code=500)


def run_chat_calls(engine, calls: list[ChatCall], *, model_name: str) -> list[dict | ChatRequestError]:
    """Run chat calls on an engine; per call a `chat.completion` body or the ChatRequestError it earned.

    Calls with identical SamplingParams share one `engine.generate` call (one batch); calls with a
    prediction run one by one through `engine.generate_predicted`. A batch that fails as a whole is retried
    call by call, so an error lands on the call that caused it.
    """
    results: list[dict | ChatRequestError | None] = [None] * len(calls)
    groups: dict[tuple[SamplingParams, str], list[int]] = {}  # (params, the tools as JSON text)
    predicted: list[int] = []
    strategic: dict[tuple, list[int]] = {}  # (params, strategy, extraction): calls with the `rft` extension
    for i, call in enumerate(calls):
        try:
            check_call(engine, call)
        except ChatRequestError as e:
            results[i] = e
            continue
        if call.strategy is not None:
            strategic.setdefault((call.params, call.strategy, repr(call.extraction)), []).append(i)
        elif call.prediction is not None:
            predicted.append(i)
        else:
            key = json.dumps(call.tools, sort_keys=True) if call.tools else ""
            groups.setdefault((call.params, key), []).append(i)

    created = int(time.time())
    def generate(idx: list[int], params: SamplingParams):
        tools = calls[idx[0]].tools
        if tools:  # only then: engines without tool support keep working for plain calls
            return engine.generate([calls[i].messages for i in idx], params, tools=[tools] * len(idx))
        return engine.generate([calls[i].messages for i in idx], params)

    for (params, _), idx in groups.items():
        try:
            outs = generate(idx, params)
        except Exception as e:
            if len(idx) == 1:
                results[idx[0]] = _as_error(e)
                continue
            outs = []
            for i in idx:  # isolate the failing call
                try:
                    outs.append(generate([i], params)[0])
                except Exception as e1:  # noqa: BLE001
                    outs.append(_as_error(e1))
        for i, comps in zip(idx, outs):
            results[i] = comps if isinstance(comps, ChatRequestError) else \
                completion_body(list(comps), model_name=model_name, created=created, tools=bool(calls[i].tools))

    for idx in strategic.values():
        _run_strategy_calls(engine, calls, idx, results, model_name=model_name, created=created)

    for i in predicted:
        gp = getattr(engine, "generate_predicted", None)
        if gp is None:
            results[i] = ChatRequestError("this engine does not support predicted outputs", "prediction")
            continue
        try:
            comp = gp(calls[i].messages, calls[i].params, calls[i].prediction)
        except Exception as e:  # noqa: BLE001
            results[i] = _as_error(e)
            continue
        results[i] = completion_body([comp], model_name=model_name, created=created)
    return results  # type: ignore[return-value]


def _run_strategy_calls(engine, calls: list[ChatCall], idx: list[int], results: list, *, model_name: str,
                        created: int) -> None:
    """Calls sharing params, strategy and extraction: one `run_strategy` over all of them (the engine batches)."""
    from rft.eval.inference import StrategyContext, run_strategy

    c0 = calls[idx[0]]
    ctx = StrategyContext(max_new_tokens=c0.params.max_new_tokens, extraction=c0.extraction, seed=c0.params.seed,
                          constraint=c0.params.constraint)
    try:
        outs = run_strategy(engine, [calls[i].messages for i in idx], c0.strategy, ctx)
    except Exception as e:  # noqa: BLE001 - every call of the group gets the error
        for i in idx:
            results[i] = _as_error(e)
        return
    for i, o in zip(idx, outs):
        body = completion_body([o.completion], model_name=model_name, created=created)
        u = body["usage"]
        u["completion_tokens"] = o.tokens
        u["total_tokens"] = u["prompt_tokens"] + o.tokens
        u["completion_tokens_details"]["reasoning_tokens"] = o.phase_tokens.get("think", 0)
        body["rft"] = {"strategy": c0.strategy.text(), **o.record()}
        results[i] = body
