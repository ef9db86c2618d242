"""A scripted stand-in for a careful human reviewer of examples/review/job.yaml's samples.

THIS IS NOT A PERSON. It plays one for the demonstration so that it can be re-run: it judges each sample by the
arithmetic, as a careful person reading the question would. It takes the question's operands and operator, works
out the result, and passes a completion only when the completion commits to that result: its last number is
the result and it names no other candidate (every number in it is an operand or the result). "7 * 8 = 56" passes;
"56" passes; "54, 55, 56, 57" fails (it lists candidates); "7 * 8 = 54" fails.

It judges the review queue that `rft review JOB --queue -n 30 --json` prints (30 items drawn by the grader's
score, high advantages, grader errors, late steps and regressed validation items) and writes one verdict per line
to VERDICTS.jsonl ({"item_key", "verdict": "pass" | "fail", "note"}), which `rft review JOB --verdicts FILE`
stores. It stores nothing itself.

    rft review JOB -n 30 --queue --json > queue.json
    python examples/review/reviewer.py queue.json --out verdicts.jsonl
    rft review JOB --verdicts verdicts.jsonl --by "scripted-reviewer"
"""

from __future__ import annotations

import argparse
import json
import re
import sys

QUESTION = re.compile(r"(-?\d+)\s*([+*x-])\s*(-?\d+)")
NUMBER = re.compile(r"-?\d+")


def judge(prompt: str, completion: str, reference: dict | None = None) -> tuple[bool, str]:
    """(passes, why) by the arithmetic of the question."""
    ref = reference or {}
    if all(k in ref for k in ("a", "b", "op")):
        a, op, b = int(ref["a"]), str(ref["op"]), int(ref["b"])
    else:
        m = QUESTION.search(prompt or "")
        if not m:
            return False, "cannot read the question"
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    result = a + b if op == "+" else a * b if op in ("*", "x") else a - b
    nums = [int(x) for x in NUMBER.findall(completion or "")]
    if not nums:
        return False, f"no number given (the answer is {result})"
    if nums[-1] != result:
        return False, f"ends with {nums[-1]}, but {a} {op} {b} = {result}"
    others = sorted({n for n in nums if n not in (a, b, result)})
    if others:
        return False, f"lists other candidates {others[:6]} besides {result}: hedging, not an answer"
    return True, f"{a} {op} {b} = {result}, stated"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("queue", help="the JSON of `rft review JOB --queue --json`")
    ap.add_argument("--out", default="verdicts.jsonl")
    args = ap.parse_args(argv)

    with open(args.queue) as f:
        queue = json.load(f)
    lines, agree = [], 0
    for it in queue["items"]:
        ok, why = judge(it.get("prompt") or "", it.get("completion") or "", it.get("reference"))
        g = it.get("grader_score")
        agree += int(g is not None and (g >= 0.5) == ok)
        lines.append({"item_key": it["key"], "verdict": "pass" if ok else "fail", "note": why})
    with open(args.out, "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in lines)
    print(f"{len(lines)} verdicts written to {args.out} (strata: {queue.get('strata')}); "
          f"the grader agreed on {agree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
