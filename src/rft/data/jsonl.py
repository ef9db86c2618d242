"""Load and validate JSONL data files in the OpenAI reinforcement fine-tuning format.

What: each non-blank line is one JSON object with `messages` (the prompt, ending with a user message) and any
other fields, which graders see as `{{item.<field>}}`. `validate_file` reports every problem in the file, each
with its file, 1-based line and field (`messages[2].role`); `load_jsonl` returns a `Dataset` or raises one
`RftError` listing them all.
Hostile files get one problem each, never an exception: missing, a directory, a name too long (via
`rft.userinput`), larger than `MAX_FILE_BYTES`, binary (a NUL byte), a line over `MAX_LINE_BYTES`, non-UTF-8,
invalid JSON, non-finite numbers, nesting deeper than `rft.userinput.MAX_DEPTH` (also where it would hit Python's
recursion limit), a value that is not an object.
Simplified: content parts are checked for shape (objects with a string `type`, and a string `text` for text
parts), not against every part type OpenAI knows; `tools` is only checked to be a list.
A `file-...` id (an upload, `rft files upload` or `POST /v1/files`) is read from `rft.files`' store wherever a
path is taken; problems then name it as `file-... (its filename)`.
How to run: `python -c "from rft.data import validate_file; print(validate_file('data.jsonl'))"`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft.data.dataset import Dataset, fingerprint
from rft.errors import Problem, RftError
from rft.files import is_file_id, resolve_content
from rft.userinput import (MAX_DEPTH, check_depth, check_input_path, finite_float, no_duplicate_keys, read_user_bytes,
                           reject_json_constant)

MAX_ROWS = 50_000
MAX_LINE_BYTES = 16 * 1024 * 1024  # one row; real rows are kilobytes, so a bigger line is a wrong file
MAX_FILE_BYTES = 512 * 1024 * 1024  # OpenAI's upload limit for a fine-tuning file; the file is held in memory
ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass
class ValidationReport:
    """Result of `validate_file`. `sha256` is the fingerprint of the rows, or None when there are problems."""

    path: str
    n_rows: int
    problems: list[Problem] = field(default_factory=list)
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(v), "null" if v is None else type(v).__name__
    )


def _check_content(content: Any, where: str, add) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        add(f"content must be a string or a list of content parts, got {_type_name(content)}", where)
        return
    for j, part in enumerate(content):
        pw = f"{where}[{j}]"
        if not isinstance(part, dict):
            add(f"a content part must be an object like {{\"type\": \"text\", \"text\": \"...\"}}, got {_type_name(part)}", pw)
        elif not isinstance(part.get("type"), str):
            add("a content part needs a string 'type' (e.g. \"text\")", f"{pw}.type")
        elif part["type"] == "text" and not isinstance(part.get("text"), str):
            add("a text content part needs a string 'text'", f"{pw}.text")


def _check_messages(msgs: Any, where: str, add) -> bool:
    """Check a `messages` array (each message's role and content); False when it is not a non-empty array."""
    if not isinstance(msgs, list):
        add(f"'messages' must be an array, got {_type_name(msgs)}", where)
        return False
    if not msgs:
        add("'messages' is empty; it needs at least one user message", where)
        return False
    for i, m in enumerate(msgs):
        w = f"{where}[{i}]"
        if not isinstance(m, dict):
            add(f"each message must be an object with 'role' and 'content', got {_type_name(m)}", w)
            continue
        role = m.get("role")
        if "role" not in m:
            add(f"missing 'role' (one of {', '.join(ROLES)})", f"{w}.role")
        elif role not in ROLES:
            add(f"invalid role {json.dumps(role)}; expected one of {', '.join(ROLES)}", f"{w}.role")
        if "content" not in m or m["content"] is None:
            # An assistant turn that only calls tools may leave content out (OpenAI chat format).
            if not (role == "assistant" and m.get("tool_calls")):
                add("missing 'content' (a string or a list of content parts)", f"{w}.content")
        else:
            _check_content(m["content"], f"{w}.content", add)
    return True


def _check_tools(tools: Any, add) -> None:
    """OpenAI function tools: [{"type": "function", "function": {"name", "description"?, "parameters"?}}] (the same
    rules as rft.engine.tools.tool_problems, which chat requests use)."""
    if not isinstance(tools, list):
        add(f"'tools' must be an array of tool definitions, got {_type_name(tools)}", "tools")
        return
    for i, t in enumerate(tools):
        w = f"tools[{i}]"
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict):
            add('must be {"type": "function", "function": {"name": ..., "parameters": {...}}}', w)
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", name):
            add("must be 1-64 letters, digits, '_' or '-'", f"{w}.function.name")
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            add("must be a JSON Schema object", f"{w}.function.parameters")


def check_row(row: Any, add) -> None:
    """Check one parsed line; call `add(message, field)` for each problem. Shared with builtin row tests."""
    if not isinstance(row, dict):
        add(f"each line must be a JSON object with a 'messages' field, got {_type_name(row)}", None)
        return
    if "tools" in row:
        _check_tools(row["tools"], add)
    if "messages" not in row:
        add("missing required field 'messages' (a list of {role, content} objects ending with a user message)", "messages")
        return
    msgs = row["messages"]
    if not _check_messages(msgs, "messages", add):
        return
    last = msgs[-1]
    if isinstance(last, dict) and last.get("role") in ROLES and last.get("role") != "user":
        add(
            f"the last message must have role 'user' (the model answers it), got '{last['role']}'",
            f"messages[{len(msgs) - 1}].role",
        )


def fine_tune_row_kind(row: Any) -> str:
    """Which of OpenAI's fine-tuning formats a row is written in: "preference" (DPO: `input`,
    `preferred_output`, `non_preferred_output`), "supervised" (`messages` ending with an assistant message) or
    "reinforcement" (everything else, checked as an RFT row)."""
    if isinstance(row, dict) and "preferred_output" in row and "input" in row:
        return "preference"
    msgs = row.get("messages") if isinstance(row, dict) else None
    if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
        return "supervised"
    return "reinforcement"


def _check_outputs(value: Any, where: str, add) -> None:
    if not isinstance(value, list) or not value:
        add("must be a non-empty array of assistant messages", where)
        return
    _check_messages(value, where, add)
    for i, m in enumerate(value):
        if isinstance(m, dict) and m.get("role") != "assistant":
            add("an output message must have role 'assistant'", f"{where}[{i}].role")


def check_fine_tune_row(row: Any, add) -> None:
    """Check a row of a `purpose=fine-tune` upload in whichever format it is written (`fine_tune_row_kind`)."""
    kind = fine_tune_row_kind(row)
    if kind == "reinforcement":
        check_row(row, add)
        return
    if "tools" in row and not isinstance(row["tools"], list):
        add(f"'tools' must be an array of tool definitions, got {_type_name(row['tools'])}", "tools")
    if kind == "supervised":
        _check_messages(row["messages"], "messages", add)
        return
    inp = row["input"]
    if not isinstance(inp, dict) or "messages" not in inp:
        add("'input' must be an object with 'messages' (the prompt)", "input")
    else:
        _check_messages(inp["messages"], "input.messages", add)
    for k in ("preferred_output", "non_preferred_output"):
        if k not in row:
            add(f"missing required field '{k}' (a preference row has both outputs)", k)
        else:
            _check_outputs(row[k], k, add)


_BAD = object()  # _parse_line's "already reported" (None is a real value: the JSON line `null`)


def _parse_line(text: str, add) -> Any:
    """One line's JSON value, or _BAD after `add`ing the problem: nothing escapes."""
    try:
        row = json.loads(text, object_pairs_hook=no_duplicate_keys, parse_constant=reject_json_constant,
                         parse_float=finite_float)
    except json.JSONDecodeError as e:
        add(f"invalid JSON: {e.msg} (column {e.colno})", None)
        return _BAD
    except RecursionError:  # e.g. 100000 '[': the parser recurses once per level
        add(f"invalid JSON: nested more than {MAX_DEPTH} levels deep", None)
        return _BAD
    except ValueError as e:  # duplicate keys, NaN/Infinity, out-of-range numbers, integers over 4300 digits
        add(f"invalid JSON: {e}", None)
        return _BAD
    try:
        check_depth(row, "", "row")  # later stages (fingerprint, templates) recurse over the row
    except RftError:
        add(f"the row nests more than {MAX_DEPTH} levels deep", None)
        return _BAD
    return row


def _scan(path: str | os.PathLike, *, name: str | None = None, check=check_row,
          ) -> tuple[list[dict], list[int], list[Problem], int]:
    """Parse and check the whole file: (rows, line_numbers, problems, n_rows). Never raises for bad data.
    `name` is how problems name the file (default: the path); `check(row, add)` checks one parsed row."""
    name = str(path) if name is None else name
    problems: list[Problem] = []
    try:
        data = read_user_bytes(path, "dataset", max_bytes=MAX_FILE_BYTES)
    except RftError as e:
        # userinput names the file first (a long name cut short with "..."); the Problem has its own file field
        head, sep, rest = e.message.partition(": ")
        named = sep and (head == name or (head.endswith("...") and name.startswith(head[:-3])))
        return [], [], [Problem(rest if named else e.message, file=name)], 0
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark, as some Windows editors write
    nul = data.find(b"\x00")
    if nul >= 0:
        # A binary file (an archive, a Parquet or pickle file) would give one problem per "line"; say it once.
        line = data.count(b"\n", 0, nul) + 1
        return [], [], [Problem("the file looks binary (a NUL byte); expected UTF-8 JSONL text, one JSON object per "
                                "line", file=name, line=line)], 0

    rows: list[dict] = []
    line_numbers: list[int] = []
    n_rows = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):

        def add(message: str, fld: str | None, _line: int = lineno) -> None:
            problems.append(Problem(message, file=name, line=_line, field=fld))

        if len(raw) > MAX_LINE_BYTES:
            n_rows += 1
            add(f"the line is {len(raw):,} bytes; the limit is {MAX_LINE_BYTES:,} bytes per row", None)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            n_rows += 1
            add(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save the file as UTF-8", None)
            continue
        if not text.strip():
            continue  # blank lines are allowed
        n_rows += 1
        if n_rows == MAX_ROWS + 1:
            add(f"too many rows: the limit is {MAX_ROWS:,}; split the file or sample it", None)
        row = _parse_line(text, add)
        if row is _BAD:
            continue
        before = len(problems)
        check(row, add)
        if len(problems) == before:
            rows.append(row)
            line_numbers.append(lineno)
    if n_rows == 0:
        problems.append(Problem("the file has no rows (it is empty or has only blank lines)", file=name))
    return rows, line_numbers, problems, n_rows


def data_file(ref: str | os.PathLike) -> tuple[Path | str, str]:
    """(path to read, name for messages) for a data reference: a `file-...` id is looked up in the file store
    (`rft.files`; an unknown id is an RftError naming it and `rft files list`), anything else is a path."""
    if is_file_id(str(ref)):
        return resolve_content(str(ref))
    return ref, str(ref)


def check_data_ref(ref: str, what: str) -> None:
    """RftError unless `ref` names a readable data file (a path, or a stored `file-...` id) within the dataset
    size limit; `builtin:` references pass. For checks made before a job is recorded (`rft train`)."""
    if str(ref).startswith("builtin:"):
        return
    path, _ = data_file(ref)
    check_input_path(path, what, max_bytes=MAX_FILE_BYTES)


def validate_file(path: str | os.PathLike) -> ValidationReport:
    """Check a JSONL data file (a path or a `file-...` id) and report every problem found (file, line, field,
    what was expected)."""
    src, name = data_file(path)
    rows, _, problems, n_rows = _scan(src, name=name)
    return ValidationReport(
        path=str(path), n_rows=n_rows, problems=problems, sha256=None if problems else fingerprint(rows)
    )


def validate_fine_tune_file(path: str | os.PathLike, name: str | None = None) -> ValidationReport:
    """Check a file uploaded with `purpose=fine-tune`: every row in one of OpenAI's fine-tuning formats
    (reinforcement rows as `validate_file` checks them, supervised chat rows ending with an assistant message,
    preference rows), all rows in the same format."""
    first: list[str] = []  # the format of the first valid row

    def check(row, add):
        bad: list[str] = []

        def add_bad(message, fld):
            bad.append(message)
            add(message, fld)

        check_fine_tune_row(row, add_bad)
        if bad:
            return
        kind = fine_tune_row_kind(row)
        if not first:
            first.append(kind)
        elif kind != first[0]:
            add(f"this is a {kind} row but the file's first row is a {first[0]} row; a file holds one format", None)

    rows, _, problems, n_rows = _scan(path, name=name, check=check)
    return ValidationReport(
        path=str(name or path), n_rows=n_rows, problems=problems, sha256=None if problems else fingerprint(rows)
    )


def load_jsonl(path: str | os.PathLike) -> Dataset:
    """Load a JSONL data file (a path or a `file-...` id), or raise one `RftError` listing all its problems."""
    src, name = data_file(path)
    rows, line_numbers, problems, _ = _scan(src, name=name)
    if problems:
        hint = None
        if "not found" in problems[0].message and problems[0].line is None:
            hint = f"relative paths are resolved from the current directory, {Path.cwd()}"
        raise RftError(f"{name}: {len(problems)} problem(s) in the data file", problems=problems, hint=hint)
    return Dataset(
        name=str(path),
        rows=tuple(rows),
        sha256=fingerprint(rows),
        source=str(Path(src).resolve()),
        line_numbers=tuple(line_numbers),
    )
