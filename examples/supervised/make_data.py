"""Write OpenAI-format supervised files for the quickstart's task (exact-format arithmetic answers).

    python examples/supervised/make_data.py            # -> examples/supervised/train.jsonl, val.jsonl
    rft train examples/supervised/job.yaml

train.jsonl: the first N training questions of builtin:arithmetic, each a chat ending with the assistant's
answer, just the number ({"messages": [user, assistant], "answer": ...}). val.jsonl: the 200 held-out
validation questions in the same format (the quickstart's validation set: their (a, op, b) triples never
appear in training), so the job reports both the graded accuracy and the validation loss. The `answer` field
is the reference the job's grader reads as {{item.answer}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rft.data import load_dataset

HERE = Path(__file__).parent


def sft_row(row: dict) -> dict:
    return {"messages": row["messages"] + [{"role": "assistant", "content": row["answer"]}], "answer": row["answer"]}


def main(n_train: int = 256) -> None:
    train = load_dataset("builtin:arithmetic", split="train").rows[:n_train]
    val = load_dataset("builtin:arithmetic", split="validation").rows
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        (HERE / name).write_text("".join(json.dumps(sft_row(r)) + "\n" for r in rows))
        print(f"wrote {len(rows)} rows to {HERE / name}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
