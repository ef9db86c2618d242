"""The `Dataset` value every loader returns, and its fingerprint.

What: a frozen bundle of rows plus where they came from (`source`, `line_numbers`) and a content hash
(`sha256`) that lineage records, so a run can say exactly which data it trained on.
Simplified: rows are plain dicts held in memory (the RFT limit is 50,000 rows, so streaming is not needed).
How to run: `python -c "from rft.data import load_dataset; print(load_dataset('builtin:arithmetic').sha256)"`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator

from rft.errors import Problem


def canonical_row(row: dict[str, Any]) -> str:
    """One row as canonical JSON: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(rows: Any) -> str:
    """sha256 hex of the canonical rows joined with newlines.

    Reformatting a file (whitespace, key order, `\\u00e9` vs `é`) keeps the fingerprint; any change of content,
    row order or row count changes it.
    """
    text = "\n".join(canonical_row(r) for r in rows)
    # surrogatepass: JSON may legally hold a lone "\ud800" escape, which plain UTF-8 refuses to encode.
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Dataset:
    """Rows ready for training or evaluation.

    `name` is the reference the user gave (a path or `builtin:arithmetic`), `source` the absolute file path or
    the fully resolved builtin spec, `line_numbers[i]` the 1-based source line of `rows[i]` (for builtins,
    i + 1), so any later stage can point at the line a problem came from.
    """

    name: str
    rows: tuple[dict[str, Any], ...]
    sha256: str
    source: str
    line_numbers: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def problem(self, i: int, message: str, field: str | None = None) -> Problem:
        """A `Problem` pointing at row i's source line (for graders' reference checks and the like)."""
        return Problem(message, file=self.source, line=self.line_numbers[i], field=field)
