"""Write the review demonstration's data: examples/review/data/{train,validation}.jsonl.

Single-digit `+` and `*` questions asked the way a person asks them ("What is 7 * 8?"), WITHOUT "Answer with just
the number": a small instruct model then often explains, restates the question and writes several numbers, and
the planted-bug grader (`string_check` `like`, "the output contains the answer") rewards an output for every
number in it that happens to contain the answer ("8" is in "18" and in "3 + 5 = 8"). The fixed grader takes only
the last number. Each row carries reference fields the graders and `rft explain` use as slices:
answer, a, b, op, answer_digits ("1" or "2": a one-digit answer is hit by chance far more often) and form (the
question's wording).

Training and validation questions never overlap (a op b and b op a land on the same side).

    python examples/review/make_data.py [--train 400] [--validation 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

FORMS = {
    "what_is": "What is {a} {op} {b}?",
    "calculate": "Calculate {a} {op} {b}.",
    "equation": "{a} {op} {b} = ?",
}


def row(a: int, op: str, b: int, form: str) -> dict:
    ans = a + b if op == "+" else a * b
    return {"messages": [{"role": "user", "content": FORMS[form].format(a=a, op=op, b=b)}],
            "answer": str(ans), "a": a, "b": b, "op": op, "answer_digits": str(len(str(ans))), "form": form}


def partition(seed: int) -> tuple[list, list]:
    groups = []
    for op in ("+", "*"):
        for a in range(10):
            for b in range(a, 10):
                groups.append([(a, op, b)] if a == b else [(a, op, b), (b, op, a)])
    random.Random(seed).shuffle(groups)
    train, val = [], []
    for g in groups:
        (train if len(train) < 100 else val).extend(g)
    return train, val


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--validation", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data"))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    train_t, val_t = partition(args.seed)
    train = [row(*rng.choice(train_t), rng.choice(list(FORMS))) for _ in range(args.train)]
    val_pool = [row(a, op, b, f) for (a, op, b) in val_t for f in FORMS]
    rng.shuffle(val_pool)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("validation", val_pool[:args.validation])):
        with open(out / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"{out / (name + '.jsonl')}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
