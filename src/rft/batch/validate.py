"""Validate a batch input file (OpenAI Batch API JSONL) before any work starts.

Each non-blank line must be `{"custom_id": str, "method": "POST", "url": "/v1/chat/completions", "body": {...}}`.
Every problem in the file is reported at once, each with its file, line and field: a line that is not UTF-8 or
not strict JSON (no NaN/Infinity, no duplicate keys, at most `rft.userinput.MAX_DEPTH` levels of nesting), a
JSON value of the wrong kind, a line over `MAX_LINE_BYTES`, a number that is not finite (`1e999`), text with a
lone surrogate (no result file could hold it), a missing, empty, over-long or duplicated `custom_id`, an unsupported `method` or `url`, a body the chat endpoint would refuse
(checked with `rft.openai_chat.parse_chat_body` when the model is local; a remote endpoint is the authority on
its own bodies, so for it only the shape of `messages` is checked), streaming, mixed `body.model` values, and
the OpenAI limits (50,000 requests, 200 MB per file). A file with a NUL byte is binary: one error, at once.
Simplified: a malformed line rejects the whole file (as OpenAI's validation does), it never becomes a per-request
failure: a half-broken file is not half run and billed.
How to run: `python -c "from rft.batch.validate import validate_file; validate_file('in.jsonl', local=False)"`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from rft.errors import Problem, RftError
from rft.userinput import check_input_path, parse_json

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
MAX_LINE_BYTES = 8 * 1024 * 1024  # one request; a chat body with a few inline images stays well below this
MAX_ID_CHARS = 512  # a custom_id is echoed in results and error messages
SUPPORTED_URLS = ("/v1/chat/completions",)
LINE_KEYS = ("custom_id", "method", "url", "body")
WHAT = "batch input"


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    line: int
    body: dict


def _bad_value(obj: dict) -> tuple[str | None, str] | None:
    """(dotted field, problem) for the first value no result file could hold: a float that is inf or NaN
    (`1e999` parses to inf) or a string with a lone surrogate (`"\\ud800"` is valid JSON but not UTF-8).
    Iterative, so deep values cannot blow the stack."""
    stack: list[tuple[object, str]] = [(obj, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return path, "numbers must be finite (this one overflows a double)"
        if isinstance(v, str) and not _utf8(v):
            return path, "the text has an unpaired surrogate (like \\ud800); send valid Unicode"
        if isinstance(v, dict):
            for k, c in v.items():
                if not _utf8(k):
                    return path or None, "a key has an unpaired surrogate (like \\ud800); send valid Unicode"
                stack.append((c, f"{path}.{k[:100]}" if path else k[:100]))
        elif isinstance(v, list):
            stack.extend((c, f"{path}[{j}]") for j, c in enumerate(v))
    return None


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_body(body: dict, local: bool, add) -> None:
    if local:
        from rft.openai_chat import ChatRequestError, parse_chat_body

        try:
            parse_chat_body(body)
        except ChatRequestError as e:
            add(e.message, f"body.{e.param}" if e.param else "body")
            return
    else:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            add("'messages' must be a non-empty list of messages", "body.messages")
        else:
            for j, m in enumerate(msgs):
                if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                    add("each message must be an object with a string 'role'", f"body.messages[{j}]")
    if body.get("stream"):
        add("streaming is not available in a batch; remove 'stream'", "body.stream")


def _lines(f, max_line_bytes: int):
    """(line number, bytes or None when the line is longer than the limit), reading at most the limit at once."""
    i = 0
    while True:
        raw = f.readline(max_line_bytes + 1)
        if not raw:
            return
        i += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a block at a time
                raw = f.readline(1 << 20)
            yield i, None
        else:
            yield i, raw


def _decode(raw: bytes, i: int, src: str) -> str:
    """The line as text; RftError for a NUL byte (a binary file: one error is enough), ValueError for bad UTF-8."""
    if b"\x00" in raw:
        raise RftError(f"{src}:{i}: the {WHAT} looks binary (a NUL byte); expected UTF-8 JSON lines; nothing was run")
    if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                         "save the file as UTF-8") from None


def validate_file(path: str | Path, *, local: bool, max_requests: int = MAX_REQUESTS,
                  max_bytes: int = MAX_BYTES, max_line_bytes: int = MAX_LINE_BYTES) -> tuple[list[BatchRequest], str | None]:
    """Return the requests and the one model named in the bodies (or None), or raise an RftError that lists
    every problem found."""
    src = str(path)
    # Missing, a directory, too long a name, no permission: one error before anything is read.
    path = check_input_path(path, WHAT, max_bytes=1 << 62)
    problems: list[Problem] = []

    def add(msg: str, line: int | None = None, field: str | None = None) -> None:
        problems.append(Problem(msg, file=src, line=line, field=field))

    size = path.stat().st_size
    if size > max_bytes:  # at once: reading gigabytes to list more problems helps nobody
        raise RftError(f"{src}: the file is {size / 1e6:.1f} MB; a batch file may hold at most "
                       f"{max_bytes / 1e6:.0f} MB; nothing was run", hint="split it into several batches")
    requests: list[BatchRequest] = []
    seen: dict[str, int] = {}
    model: str | None = None
    model_line = 0
    n_lines = 0
    with open(path, "rb") as f:
        for i, raw in _lines(f, max_line_bytes):
            if raw is None:
                n_lines += 1
                add(f"the line is longer than {max_line_bytes:,} bytes (one request may hold at most that)", i)
                continue
            if not raw.strip():
                continue
            n_lines += 1
            try:
                text = _decode(raw, i, src)
            except ValueError as e:
                add(str(e), i)
                continue
            try:
                obj = parse_json(text, src, "line", line=i, expect=dict)
            except RftError as e:
                # parse_json names the file and line; the Problem carries them as fields instead.
                add(e.message.removeprefix(f"{src}:{i}:").strip(), i)
                continue
            bad = _bad_value(obj)
            if bad:
                add(bad[1], i, bad[0])
                continue
            _check_line(obj, i, local, add, seen)
            body = obj.get("body")
            if not isinstance(body, dict):
                continue
            before = len(problems)
            _check_body(body, local, lambda msg, fld: add(msg, i, fld))
            m = body.get("model")
            if isinstance(m, str):
                if model is None:
                    model, model_line = m, i
                elif m != model:
                    add(f"model '{m[:200]}' differs from '{model[:200]}' on line {model_line}; a batch runs one model",
                        i, "body.model")
            cid = obj.get("custom_id")
            if len(problems) == before and isinstance(cid, str) and seen.get(cid) == i:
                requests.append(BatchRequest(cid, i, body))
    if n_lines == 0:
        add("the file has no requests")
    if n_lines > max_requests:
        add(f"the file has {n_lines} requests; a batch may hold at most {max_requests} (split it)")
    if problems:
        raise RftError(f"{src}: {len(problems)} problem(s) in the batch input; nothing was run", problems)
    return requests, model


def _check_line(obj: dict, i: int, local: bool, add, seen: dict[str, int]) -> None:
    """The envelope of one line: keys, custom_id (recorded in `seen` when valid and new), method, url, body kind."""
    for k in obj:
        if k not in LINE_KEYS:
            add(f"unknown key; a batch line has only {', '.join(LINE_KEYS)}", i, k[:100])
    cid = obj.get("custom_id")
    if cid is None:
        add("'custom_id' is required", i, "custom_id")
    elif not isinstance(cid, str) or not cid.strip():
        add("'custom_id' must be a non-empty string", i, "custom_id")
    elif len(cid) > MAX_ID_CHARS:
        add(f"'custom_id' is {len(cid)} characters; at most {MAX_ID_CHARS}", i, "custom_id")
    elif cid in seen:
        add(f"duplicate custom_id '{cid}' (first on line {seen[cid]}); results are joined by custom_id, "
            "so each must be unique", i, "custom_id")
    else:
        seen[cid] = i
    if obj.get("method") != "POST":
        add(f"'method' must be \"POST\", got {_short(obj.get('method'))}", i, "method")
    url = obj.get("url")
    if url not in SUPPORTED_URLS:
        add(f"unsupported url {_short(url)}; supported: {', '.join(SUPPORTED_URLS)}", i, "url")
    if not isinstance(obj.get("body"), dict):
        add("'body' must be a JSON object (the chat completions request)", i, "body")


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def load_requests(path: Path) -> list[BatchRequest]:
    """The requests of an already validated input copy (no checks beyond parsing)."""
    out = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            if raw.strip():
                obj = json.loads(raw)
                out.append(BatchRequest(obj["custom_id"], i, obj["body"]))
    return out
