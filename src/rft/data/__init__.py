"""Datasets: JSONL and Parquet files in the OpenAI RFT format, the local Hugging Face cache and built-in
generators, with fingerprints.

What: `load_dataset(ref)` takes a JSONL or Parquet file path, a `file-...` id (an uploaded file, looked up in
`rft.files`' store), an `hf:<name>[:<config>][@<split>]` reference (read from the local Hugging Face cache only,
`rft.data.hf_cache`) or a `builtin:` reference and returns a `Dataset` (rows, source line or row of each row,
sha256 of the canonical rows: the same rows give the same fingerprint whatever format they came in).
`validate_file` reports every problem in a data file with its line (row) and field; `validate_fine_tune_file`
checks an upload with `purpose=fine-tune`, which may also hold supervised or preference rows;
`builtin_catalog` lists the built-in datasets with a one-line description each (`rft data list`).
`reasoning_gym_score` lets graders score reasoning-gym rows with the task's own scorer.
Simplified: everything is held in memory (the RFT limit is 50,000 rows); uploads are JSONL.
How to run: `python -c "from rft.data import load_dataset; d = load_dataset('builtin:arithmetic'); print(len(d), d.sha256)"`.
"""

from __future__ import annotations

from rft.data.builtin import (
    BUILTINS,
    BuiltinRequest,
    builtin_catalog,
    list_builtins,
    load_builtin,
    normalize_split,
    register_builtin,
)
from rft.data.dataset import Dataset, canonical_row, fingerprint
from rft.data.jsonl import MAX_ROWS, ValidationReport, data_file, load_jsonl, validate_fine_tune_file
from rft.data.hf_cache import is_hf_ref
from rft.data.sources import check_data_ref, data_format, load_file, validate_file

# Registers builtin:reasoning_gym/<task> with rft.data.builtin. Importing any rft.data module runs this package
# first, so the family is registered before anything can ask for it (builtin.py itself imports no task module).
from rft.data.reasoning_gym_tasks import reasoning_gym_score
from rft.errors import RftError

__all__ = [
    "BUILTINS",
    "BuiltinRequest",
    "Dataset",
    "builtin_catalog",
    "data_format",
    "is_hf_ref",
    "load_file",
    "MAX_ROWS",
    "ValidationReport",
    "canonical_row",
    "check_data_ref",
    "data_file",
    "fingerprint",
    "list_builtins",
    "load_builtin",
    "load_dataset",
    "load_jsonl",
    "reasoning_gym_score",
    "register_builtin",
    "validate_file",
    "validate_fine_tune_file",
]


def load_dataset(ref: str, *, split: str = "train", n: int | None = None, seed: int | None = None) -> Dataset:
    """Load a JSONL or Parquet file (a path or a `file-...` id), a split of a dataset in the local Hugging Face
    cache (`hf:...`), or generate a `builtin:` dataset.

    For builtins, `split` ("train" | "validation", aliases "val", "test"), `n` and `seed` choose what is
    generated, and query options in the reference (`builtin:arithmetic?n=200&seed=3`) override them.
    For `hf:` references without `@split`, `split` names the split read ("train" or "validation"; "val" and
    "test" mean "validation" as they do for builtins; write `@test` for a split named test).
    For files, `n` keeps the first n rows, and `split` and `seed` are ignored: a file is already one split, and
    callers pass the job's seed to every loader alike.
    """
    ref = str(ref)
    if ref.startswith("builtin:"):
        return load_builtin(ref, split=split, n=n, seed=seed)
    split = normalize_split(split)  # a typo'd split is an error even where it doesn't matter
    if n is not None and n < 1:
        raise RftError(f"{ref}: n must be at least 1, got {n}")
    ds = load_file(ref, split=split)
    if n is None or n >= len(ds):
        return ds
    rows = ds.rows[:n]
    return Dataset(
        name=ds.name, rows=rows, sha256=fingerprint(rows), source=ds.source, line_numbers=ds.line_numbers[:n]
    )
