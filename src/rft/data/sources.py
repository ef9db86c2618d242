"""Every place rft takes data names it the same way; this module turns a data reference into checked rows.

What: a data reference is a JSONL file path, a Parquet file path (`.parquet`/`.pq`, or any file that starts
with Parquet's magic bytes), a `file-...` id (an uploaded file, read from `rft.files`' store), an `hf:` reference
to the local Hugging Face cache (`rft.data.hf_cache`) or a `builtin:` dataset (`rft.data.builtin`, handled by
`rft.data.load_dataset`). `load_file(ref, split)` returns a `Dataset` or raises one RftError listing every problem
(file, row or line, field); `validate_file(ref)` reports the problems without raising for bad data;
`check_data_ref(ref, what)` is the cheap check made before a job is recorded (the file exists and is within the
size limit; an `hf:` dataset is in the cache).
Simplified: the format is chosen from the reference (the `hf:` prefix, the file's suffix or magic bytes), never
from a flag; uploaded files are JSONL (OpenAI's upload format) unless their bytes say Parquet.
How to run: `python -c "from rft.data import validate_file; print(validate_file('train.parquet'))"`.
"""

from __future__ import annotations

import os
from pathlib import Path

from rft.data.dataset import Dataset, fingerprint
from rft.data.hf_cache import is_hf_ref, locate, scan_hf
from rft.data.jsonl import MAX_FILE_BYTES, ValidationReport, _scan, data_file
from rft.data.parquet import is_parquet, scan_parquet
from rft.errors import RftError
from rft.userinput import check_input_path


def data_format(ref: str | os.PathLike) -> str:
    """"builtin", "hf", "parquet" or "jsonl"."""
    text = str(ref)
    if text.startswith("builtin:"):
        return "builtin"
    if is_hf_ref(text):
        return "hf"
    path, _ = data_file(ref)
    return "parquet" if is_parquet(path) else "jsonl"


def _scan_ref(ref: str | os.PathLike, split: str):
    """(rows, numbers, problems, n_rows, name used in problems, source for the Dataset)."""
    if is_hf_ref(str(ref)):
        rows, numbers, problems, n_rows, found = scan_hf(str(ref), split)
        return rows, numbers, problems, n_rows, found.ref, found.ref
    path, name = data_file(ref)
    scan = scan_parquet if is_parquet(path) else _scan
    rows, numbers, problems, n_rows = scan(path, name=name)
    return rows, numbers, problems, n_rows, name, str(Path(path).resolve())


def validate_file(ref: str | os.PathLike, *, split: str = "train") -> ValidationReport:
    """Check a data file (JSONL, Parquet, a `file-...` id, an `hf:` reference) and report every problem found
    (file, line or row, field, what was expected). `split` picks the split of an `hf:` reference without one."""
    rows, _, problems, n_rows, _, _ = _scan_ref(ref, split)
    return ValidationReport(path=str(ref), n_rows=n_rows, problems=problems,
                            sha256=None if problems else fingerprint(rows))


def load_file(ref: str | os.PathLike, *, split: str = "train") -> Dataset:
    """Load a data file (see `validate_file`), or raise one RftError listing all its problems. Parquet and
    `hf:` problems give the 1-based row number where JSONL problems give the line."""
    rows, numbers, problems, _, name, source = _scan_ref(ref, split)
    if problems:
        hint = None
        if "not found" in problems[0].message and problems[0].line is None:
            hint = f"relative paths are resolved from the current directory, {Path.cwd()}"
        rowwise = " (numbers after the file name are row numbers, from 1)" if data_format(ref) in ("parquet", "hf") \
            else ""
        raise RftError(f"{name}: {len(problems)} problem(s) in the data file{rowwise}", problems=problems, hint=hint)
    return Dataset(name=str(ref), rows=tuple(rows), sha256=fingerprint(rows), source=source,
                   line_numbers=tuple(numbers))


def check_data_ref(ref: str, what: str, *, split: str = "train") -> None:
    """RftError unless `ref` names readable data: a path or stored `file-...` id within the dataset size limit,
    or an `hf:` dataset whose split (its `@split`, else `split`) is in the local cache; `builtin:` references
    pass. For checks made before a job is recorded."""
    text = str(ref)
    if text.startswith("builtin:"):
        return
    if is_hf_ref(text):
        locate(text, split)
        return
    path, _ = data_file(ref)
    check_input_path(path, what, max_bytes=MAX_FILE_BYTES)
