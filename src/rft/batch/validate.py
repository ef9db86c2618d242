"""Validate a batch input file (OpenAI Batch API JSONL) before any work starts.

Each non-blank line must be `{"custom_id": str, "method": "POST", "url": "/v1/chat/completions", "body": {...}}`.
Every problem in the file is reported at once, each with its file, line and field: malformed JSON, a missing,
empty or duplicated `custom_id`, an unsupported `method` or `url`, a body the chat endpoint would refuse
(checked with `rft.openai_chat.parse_chat_body` when the model is local; a remote endpoint is the authority on
its own bodies, so for it only the shape of `messages` is checked), streaming, mixed `body.model` values, and
the OpenAI limits (50,000 requests, 200 MB per file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rft.errors import Problem, RftError

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
SUPPORTED_URLS = ("/v1/chat/completions",)
LINE_KEYS = ("custom_id", "method", "url", "body")


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    line: int
    body: dict


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


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


def validate_file(path: str | Path, *, local: bool, max_requests: int = MAX_REQUESTS,
                  max_bytes: int = MAX_BYTES) -> tuple[list[BatchRequest], str | None]:
    """Return the requests and the one model named in the bodies (or None), or raise an RftError that lists
    every problem found."""
    path = Path(path)
    src = str(path)
    if not path.exists():
        raise RftError(f"batch input file not found: {path}")
    problems: list[Problem] = []

    def add(msg: str, line: int | None = None, field: str | None = None) -> None:
        problems.append(Problem(msg, file=src, line=line, field=field))

    size = path.stat().st_size
    if size > max_bytes:
        add(f"the file is {size / 1e6:.1f} MB; a batch file may hold at most {max_bytes / 1e6:.0f} MB "
            "(split it into several batches)")
    requests: list[BatchRequest] = []
    seen: dict[str, int] = {}
    model: str | None = None
    model_line = 0
    n_lines = 0
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            n_lines += 1
            try:
                obj = json.loads(raw, parse_constant=_reject_constant)
            except (ValueError, UnicodeDecodeError) as e:
                add(f"malformed JSON: {e}", i)
                continue
            if not isinstance(obj, dict):
                add("each line must be a JSON object {custom_id, method, url, body}", i)
                continue
            for k in obj:
                if k not in LINE_KEYS:
                    add(f"unknown key; a batch line has only {', '.join(LINE_KEYS)}", i, k)
            cid = obj.get("custom_id")
            if not isinstance(cid, str) or not cid.strip():
                add("'custom_id' must be a non-empty string" if cid is not None else "'custom_id' is required",
                    i, "custom_id")
                cid = None
            elif cid in seen:
                add(f"duplicate custom_id '{cid}' (first on line {seen[cid]}); results are joined by custom_id, "
                    "so each must be unique", i, "custom_id")
                cid = None
            else:
                seen[cid] = i
            if obj.get("method") != "POST":
                add(f"'method' must be \"POST\", got {obj.get('method')!r}", i, "method")
            url = obj.get("url")
            if url not in SUPPORTED_URLS:
                add(f"unsupported url {url!r}; supported: {', '.join(SUPPORTED_URLS)}", i, "url")
            body = obj.get("body")
            if not isinstance(body, dict):
                add("'body' must be a JSON object (the chat completions request)", i, "body")
                continue
            before = len(problems)
            _check_body(body, local, lambda msg, fld: add(msg, i, fld))
            m = body.get("model")
            if isinstance(m, str):
                if model is None:
                    model, model_line = m, i
                elif m != model:
                    add(f"model '{m}' differs from '{model}' on line {model_line}; a batch runs one model",
                        i, "body.model")
            if cid is not None and len(problems) == before:
                requests.append(BatchRequest(cid, i, body))
    if n_lines == 0:
        add("the file has no requests")
    if n_lines > max_requests:
        add(f"the file has {n_lines} requests; a batch may hold at most {max_requests} (split it)")
    if problems:
        raise RftError(f"{src}: {len(problems)} problem(s) in the batch input; nothing was run", problems)
    return requests, model


def load_requests(path: Path) -> list[BatchRequest]:
    """The requests of an already validated input copy (no checks beyond parsing)."""
    out = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            if raw.strip():
                obj = json.loads(raw)
                out.append(BatchRequest(obj["custom_id"], i, obj["body"]))
    return out
