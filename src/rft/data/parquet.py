"""Rows from Arrow tables: Parquet data files and the Arrow files of the Hugging Face datasets cache.

What: `scan_parquet(path)` reads a Parquet file whose columns are the fields of a JSONL row (`messages` a list
column of {role, content} structs, any other column a field graders see as `{{item.<column>}}`) and checks each
row exactly as a JSONL row is checked (`rft.data.jsonl.check_row`); `scan_table_batches(batches, name)` does the
same for record batches from any Arrow source (`rft.data.hf_cache` passes the cache's Arrow files). Problems
name the file, the 1-based row number (in the `line` place of a JSONL problem) and the field.
`is_parquet(path)` says whether a path is a Parquet file (its suffix, or the `PAR1` magic bytes).

Conversion: Arrow values become JSON values: structs and maps become objects, lists lists, integers, floats,
strings and booleans stay as they are. Arrow gives every row every column and every struct every field, so a
field a row does not have reads back as null; null values inside objects are therefore dropped (a row written
from JSONL rows with different keys reads back as the same rows, with the same fingerprint). Values JSON has no
form for (NaN and infinite floats, binary, dates, times, decimals) are problems naming the row and field.
Simplified: the whole file is read into memory (at most `rft.data.jsonl.MAX_FILE_BYTES` and `MAX_ROWS` rows,
like JSONL); pyarrow is imported only when a Parquet or Arrow file is read.
How to run: `python -c "from rft.data import load_dataset; print(len(load_dataset('train.parquet')))"`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable

from rft.data.jsonl import MAX_FILE_BYTES, MAX_ROWS, check_row
from rft.errors import Problem, RftError
from rft.userinput import MAX_DEPTH, check_depth, read_user_bytes

PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_MAGIC = b"PAR1"

_BAD = object()


def is_parquet(path: str | os.PathLike) -> bool:
    """True for a `.parquet`/`.pq` name, or a readable file that starts with Parquet's magic bytes."""
    if str(path).lower().endswith(PARQUET_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == PARQUET_MAGIC
    except (OSError, ValueError):  # missing, a directory, an unusable name: the JSONL reader reports it
        return False


def pyarrow_module():
    """pyarrow, or an RftError saying how to install it."""
    try:
        import pyarrow
    except ImportError:
        raise RftError("reading Parquet or Arrow data needs the Python package 'pyarrow'",
                       hint="pip install pyarrow (or convert the data to JSONL)") from None
    return pyarrow


def _type_word(v: Any) -> str:
    return type(v).__name__


def to_json_value(v: Any, where: str, add: Callable[[str, str | None], None]) -> Any:
    """`v` (from `pyarrow ... .to_pylist()`) as a JSON value, or _BAD after `add`ing why not (see module doc)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            add(f"the number {v} is not finite; JSON rows hold finite numbers only", where or None)
            return _BAD
        return v
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if x is None:
                continue  # Arrow's stand-in for a field this row does not have
            key = str(k)
            y = to_json_value(x, f"{where}.{key}" if where else key, add)
            if y is _BAD:
                return _BAD
            out[key] = y
        return out
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, tuple) and len(x) == 2 for x in v) and isinstance(v, list) and \
                all(isinstance(x[0], str) for x in v):
            # a map column: to_pylist gives [(key, value), ...]
            return to_json_value(dict(v), where, add)
        out_l = []
        for i, x in enumerate(v):
            y = to_json_value(x, f"{where}[{i}]", add)
            if y is _BAD:
                return _BAD
            out_l.append(y)
        return out_l
    if isinstance(v, (bytes, bytearray, memoryview)):
        add("a binary value; rows hold text, numbers, booleans, arrays and objects (store text as a string "
            "column)", where or None)
        return _BAD
    add(f"a {_type_word(v)} value, which JSON has no form for; store it as a string or a number", where or None)
    return _BAD


def scan_table_batches(batches: Iterable[Any], name: str, *, check=check_row, first_row: int = 1,
                       ) -> tuple[list[dict], list[int], list[Problem], int]:
    """Check the rows of Arrow record batches: (rows, row numbers, problems, n_rows), like the JSONL scanner.
    Row numbers count from `first_row` (1-based) in the order the batches come."""
    problems: list[Problem] = []
    rows: list[dict] = []
    numbers: list[int] = []
    n_rows = 0
    rowno = first_row - 1
    for batch in batches:
        for raw in batch.to_pylist():
            rowno += 1
            n_rows += 1

            def add(message: str, fld: str | None, _row: int = rowno) -> None:
                problems.append(Problem(message, file=name, line=_row, field=fld))

            if n_rows == MAX_ROWS + 1:
                add(f"too many rows: the limit is {MAX_ROWS:,}; split the file or sample it", None)
            if n_rows > MAX_ROWS:
                continue
            row = to_json_value(raw, "", add)
            if row is _BAD:
                continue
            try:
                check_depth(row, "", "row")
            except RftError:
                add(f"the row nests more than {MAX_DEPTH} levels deep", None)
                continue
            before = len(problems)
            check(row, add)
            if len(problems) == before:
                rows.append(row)
                numbers.append(rowno)
    return rows, numbers, problems, n_rows


def scan_parquet(path: str | os.PathLike, *, name: str | None = None, check=check_row,
                 ) -> tuple[list[dict], list[int], list[Problem], int]:
    """Read and check a Parquet data file: (rows, row numbers, problems, n_rows). Never raises for bad data."""
    name = str(path) if name is None else name
    try:
        data = read_user_bytes(path, "dataset", max_bytes=MAX_FILE_BYTES)
    except RftError as e:
        head, sep, rest = e.message.partition(": ")
        return [], [], [Problem(rest if sep and head == name else e.message, file=name)], 0
    pa = pyarrow_module()
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
        batches = list(pf.iter_batches(batch_size=1024))
    except (pa.ArrowException, OSError, ValueError) as e:
        return [], [], [Problem(f"not a readable Parquet file: {_one_line(e)}", file=name)], 0
    names = set(pf.schema_arrow.names)
    if "messages" not in names:
        cols = ", ".join(sorted(names)) or "(none)"
        return [], [], [Problem(f"no 'messages' column (the prompt: a list of {{role, content}} structs); the "
                                f"columns are {cols}", file=name, field="messages")], pf.metadata.num_rows
    rows, numbers, problems, n_rows = scan_table_batches(batches, name, check=check)
    if n_rows == 0:
        problems.append(Problem("the file has no rows", file=name))
    return rows, numbers, problems, n_rows


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:300] + "..."
