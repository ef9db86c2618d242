"""Write OpenAI-format DPO files for the quickstart's task (exact-format arithmetic answers).

    python examples/dpo/make_data.py                   # -> examples/dpo/train.jsonl (256 pairs)
    rft train examples/dpo/job.yaml

Each row prefers the bare number ("56") to the worked form the base model tends to write ("7 * 8 = 56"); both
are right, only the format differs, which is what the job's exact-format grader measures. The `answer` field is
kept as the reference the grader reads. Pairs ranked by a grader instead of written by hand:

    rft pairs examples/dpo/pairs_job.yaml -o examples/dpo/train.jsonl --samples 8

(the base model's own samples, best vs worst by the exact-format grader; prompts whose samples all score the
same give no pair). The job validates on builtin:arithmetic's 200 held-out questions, graded as they are.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rft.data import load_dataset

HERE = Path(__file__).parent


def dpo_row(row: dict) -> dict:
    worked = f"{row['a']} {row['op']} {row['b']} = {row['answer']}"
    return {"input": {"messages": row["messages"]},
            "preferred_output": [{"role": "assistant", "content": row["answer"]}],
            "non_preferred_output": [{"role": "assistant", "content": worked}],
            "answer": row["answer"]}


def main(n_train: int = 256) -> None:
    rows = load_dataset("builtin:arithmetic", split="train").rows[:n_train]
    (HERE / "train.jsonl").write_text("".join(json.dumps(dpo_row(r)) + "\n" for r in rows))
    print(f"wrote {len(rows)} pairs to {HERE / 'train.jsonl'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
