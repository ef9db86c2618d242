"""Writes train.jsonl (60 rows) and validation.jsonl (200 rows) for the sparse-rewards example.

    python examples/sparse/make_data.py

Single-digit `+` and `*` questions that ask for just the number, like builtin:arithmetic, graded with an
exact-match string_check on the whole output. The (a, op, b) triples are split in two halves first (`a op b`
and `b op a` on the same side), so no validation question, commuted or not, is ever trained on.
"""

import json
import random
from pathlib import Path

TEMPLATES = ("What is {a} {op} {b}? Answer with just the number.",
             "Calculate {a} {op} {b}. Answer with just the number.")


def row(a: int, op: str, b: int, t: int) -> dict:
    answer = a + b if op == "+" else a * b
    return {"messages": [{"role": "user", "content": TEMPLATES[t].format(a=a, op=op, b=b)}],
            "answer": str(answer), "a": a, "op": op, "b": b}


def main() -> None:
    groups = [[(a, op, b)] if a == b else [(a, op, b), (b, op, a)]
              for op in ("+", "*") for a in range(10) for b in range(a, 10)]
    random.Random(17).shuffle(groups)
    train, val = [], []
    for g in groups:
        (train if len(train) + len(g) <= 100 else val).extend(g)
    assert not {t for t in train} & {t for t in val}
    rng = random.Random(0)
    train_rows = rng.sample([row(*t, k) for t in train for k in range(2)], 60)  # 30 steps at 2 prompts a step
    val_rows = [row(*t, k) for t in val for k in range(2)]
    rng.shuffle(val_rows)
    here = Path(__file__).parent
    for name, rows in (("train", train_rows), ("validation", val_rows)):
        with open(here / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
