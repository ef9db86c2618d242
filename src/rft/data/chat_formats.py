"""OpenAI's supervised and DPO training files: line-numbered validation, loading, and the evaluation view.

What:
    supervised  {"messages": [system?, user, assistant, ...], "tools"?: [...], <reference fields>...}
                the last message is the assistant's; every assistant message is a training target unless it
                carries "weight": 0 (OpenAI's 0/1 weight); at least one must be trained
    dpo         {"input": {"messages": [...], "tools"?: [...]}, "preferred_output": [{"role": "assistant",
                "content": ...}], "non_preferred_output": [...], <reference fields>...}
                one assistant message per output; the input does not end with an assistant message

`load_chat_dataset(ref, kind)` returns a `Dataset` or raises one RftError listing every problem (file, line, field);
`validate_chat_file(ref, kind)` reports them. `eval_view(ds, kind)` is the evaluation form of the same rows for a
grader: `messages` is the prompt (supervised: the messages before the last assistant message; dpo: the input's
messages), `tools` the row's tools, and every other top-level field is kept as a reference field the grader
reads as `{{item.<field>}}` (as in reinforcement datasets); OpenAI's own keys (`input`, `preferred_output`,
`non_preferred_output`, `parallel_tool_calls`) are dropped. A job with a grader may also name a validation file
of reinforcement rows (prompts with reference fields, e.g. `builtin:arithmetic`): they are graded as they are,
and such a file has no validation loss.

Simplified: assistant `tool_calls` are not trained (an assistant message is a target through its text
content only); files are JSONL or Parquet (`builtin:` and `hf:` datasets are reinforcement rows).
How to run: `python -c "from rft.data.chat_formats import validate_chat_file as v; print(v('sft.jsonl', 'supervised'))"`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rft.data.dataset import Dataset, fingerprint
from rft.data.jsonl import ValidationReport, _check_messages, _check_tools, _scan, _type_name, data_file
from rft.data.parquet import is_parquet, scan_parquet
from rft.errors import RftError

KINDS = ("supervised", "dpo")
_DPO_KEYS = ("input", "preferred_output", "non_preferred_output", "parallel_tool_calls")


def message_text(content: Any) -> str:
    """A message's text: the string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _trained(m: Any) -> bool:
    return isinstance(m, dict) and m.get("role") == "assistant" and m.get("weight", 1) != 0


def check_supervised_row(row: Any, add) -> None:
    """One supervised row; `add(message, field)` per problem."""
    if not isinstance(row, dict):
        add(f"each line must be a JSON object with a 'messages' field, got {_type_name(row)}", None)
        return
    if "tools" in row:
        _check_tools(row["tools"], add)
    if "messages" not in row:
        add("missing required field 'messages' (a list of {role, content} objects ending with the assistant's "
            "answer)", "messages")
        return
    msgs = row["messages"]
    if not _check_messages(msgs, "messages", add):
        return
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            continue
        if "weight" in m:
            if m.get("role") != "assistant":
                add("only assistant messages take a 'weight'", f"messages[{i}].weight")
            elif m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
                add(f"weight must be 0 or 1, got {m['weight']!r}", f"messages[{i}].weight")
        if _trained(m) and not message_text(m.get("content")):
            add("a trained assistant message needs text content (set \"weight\": 0 to keep it as context only)",
                f"messages[{i}].content")
    last = msgs[-1]
    if isinstance(last, dict) and last.get("role") != "assistant":
        add(f"the last message must be the assistant's answer (role 'assistant'), got role {last.get('role')!r}",
            f"messages[{len(msgs) - 1}].role")
    elif not any(_trained(m) for m in msgs):
        add("every assistant message has weight 0: nothing to train on", "messages")
    if not any(isinstance(m, dict) and m.get("role") != "assistant" for m in msgs):
        add("there is no prompt: add a user message before the assistant's answer", "messages")


def _check_output(value: Any, where: str, add) -> None:
    if not isinstance(value, list) or len(value) != 1:
        add("must be an array of exactly one assistant message, e.g. [{\"role\": \"assistant\", \"content\": "
            "\"...\"}]", where)
        return
    if not _check_messages(value, where, add):
        return
    m = value[0]
    if isinstance(m, dict):
        if m.get("role") != "assistant":
            add(f"the output message must have role 'assistant', got {m.get('role')!r}", f"{where}[0].role")
        elif not message_text(m.get("content")):
            add("the output needs text content", f"{where}[0].content")


def check_dpo_row(row: Any, add) -> None:
    """One DPO (preference) row; `add(message, field)` per problem."""
    if not isinstance(row, dict):
        add(f"each line must be a JSON object with 'input', 'preferred_output' and 'non_preferred_output', "
            f"got {_type_name(row)}", None)
        return
    inp = row.get("input")
    if "input" not in row:
        add("missing required field 'input' ({\"messages\": [...]}: the prompt)", "input")
    elif not isinstance(inp, dict):
        add(f"'input' must be an object with 'messages', got {_type_name(inp)}", "input")
    elif "messages" not in inp:
        add("missing required field 'messages' (the prompt)", "input.messages")
    else:
        if "tools" in inp:
            _check_tools(inp["tools"], lambda msg, f: add(msg, f"input.{f}" if f else "input"))
        if _check_messages(inp["messages"], "input.messages", add):
            last = inp["messages"][-1]
            if isinstance(last, dict) and last.get("role") == "assistant":
                add("the input must not end with an assistant message (the outputs are the assistant's turn)",
                    f"input.messages[{len(inp['messages']) - 1}].role")
    for k in ("preferred_output", "non_preferred_output"):
        if k not in row:
            add(f"missing required field '{k}' (a preference row has both outputs)", k)
        else:
            _check_output(row[k], k, add)


CHECKS = {"supervised": check_supervised_row, "dpo": check_dpo_row}


def _scan_chat(ref: str | os.PathLike, kind: str):
    if kind not in CHECKS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    text = str(ref)
    if text.startswith(("builtin:", "hf:")):
        raise RftError(f"{text}: a {kind} training file must be a JSONL or Parquet file in OpenAI's {kind} format "
                       f"(built-in and hf: datasets are reinforcement rows)",
                       hint="write one with `rft pairs JOB.yaml -o pairs.jsonl` (dpo) or see examples/supervised/")
    path, name = data_file(ref)
    scan = scan_parquet if is_parquet(path) else _scan
    rows, numbers, problems, n_rows = scan(path, name=name, check=CHECKS[kind])
    return rows, numbers, problems, n_rows, name, path


def validate_chat_file(ref: str | os.PathLike, kind: str) -> ValidationReport:
    """Every problem of a supervised or dpo data file (file, line, field), without raising for bad data."""
    rows, _, problems, n_rows, _, _ = _scan_chat(ref, kind)
    return ValidationReport(path=str(ref), n_rows=n_rows, problems=problems,
                            sha256=None if problems else fingerprint(rows))


def load_chat_dataset(ref: str | os.PathLike, kind: str) -> Dataset:
    """The rows of a supervised or dpo data file, or one RftError listing every problem."""
    rows, numbers, problems, _, name, path = _scan_chat(ref, kind)
    if problems:
        hint = None
        if "not found" in problems[0].message and problems[0].line is None:
            hint = f"relative paths are resolved from the current directory, {Path.cwd()}"
        raise RftError(f"{name}: {len(problems)} problem(s) in the {kind} data file", problems=problems, hint=hint)
    return Dataset(name=str(ref), rows=tuple(rows), sha256=fingerprint(rows), source=str(Path(path).resolve()),
                   line_numbers=tuple(numbers))


def is_prompt_row(row: dict, kind: str) -> bool:
    """A reinforcement-format row (a prompt with reference fields, no target): a supervised or dpo job with a
    grader may use such a validation file (e.g. builtin:arithmetic); it is graded, and has no validation loss."""
    if kind == "dpo":
        return "input" not in row
    msgs = row.get("messages") or []
    return not any(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs[-1:])


def prompt_messages(row: dict, kind: str) -> list[dict]:
    """The prompt of a row: supervised, the messages before the last assistant message; dpo, the input's."""
    if kind == "dpo":
        return list(row["input"]["messages"])
    msgs = row["messages"]
    last = max(i for i, m in enumerate(msgs) if m.get("role") == "assistant")
    return [{k: v for k, v in m.items() if k != "weight"} for m in msgs[:last]]


def row_tools(row: dict, kind: str) -> list | None:
    return (row.get("input") or {}).get("tools") if kind == "dpo" else row.get("tools")


def eval_row(row: dict, kind: str) -> dict:
    """The evaluation form of one row (see the module docstring); a prompt row is already in that form."""
    if is_prompt_row(row, kind):
        return row
    out = {k: v for k, v in row.items() if k not in _DPO_KEYS and k not in ("messages", "tools")}
    out["messages"] = prompt_messages(row, kind)
    tools = row_tools(row, kind)
    if tools:
        out["tools"] = tools
    return out


def eval_view(ds: Dataset, kind: str) -> Dataset:
    """The dataset in evaluation form: prompts plus reference fields, the same line numbers."""
    rows = tuple(eval_row(r, kind) for r in ds.rows)
    return Dataset(name=ds.name, rows=rows, sha256=fingerprint(rows), source=ds.source, line_numbers=ds.line_numbers)
