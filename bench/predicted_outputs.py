"""Predicted outputs: latency of a request with and without a prediction, side by side in one run.

On the embedded model (`smollm2-135m-instruct`, loaded with `rft.engine.load_engine`, so bf16 where the CPU is
fast at it) it asks for a ~150-token answer greedily, then sends the same request again
  - with no prediction through the predicted path (the overhead of the path itself),
  - with the previous answer as the prediction (exact),
  - with that answer edited in one place (a word in the middle replaced),
and prints for each: whether the output tokens are identical to decoding without a prediction, the median
latency over `--repeats` runs, the speedup over plain decoding, and accepted / rejected prediction tokens.
The issue's target: at least 2x lower latency with the exact prediction.

    .venv/bin/python bench/predicted_outputs.py [--repeats 3] [--max-new-tokens 200] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rft.engine import load_engine
from rft.engine import SamplingParams
from rft.engine.local import render_prompt

PROMPT = [{"role": "user", "content": (
    "Rewrite this Python function with a list comprehension, add type hints and a docstring, "
    "then explain the change in five short bullet points.\n\n"
    "```python\n"
    "def evens(xs):\n"
    "    out = []\n"
    "    for x in xs:\n"
    "        if x % 2 == 0:\n"
    "            out.append(x)\n"
    "    return out\n"
    "```")}]


def edit_one_place(text: str) -> str:
    """Replace the word nearest the middle of `text` with a different one."""
    words = text.split(" ")
    mid = len(words) // 2
    for j in sorted(range(len(words)), key=lambda i: abs(i - mid)):
        w = words[j]
        if w.isalpha() and len(w) >= 4:
            words[j] = "banana" if w.lower() != "banana" else "apple"
            return " ".join(words)
    return text[: len(text) // 2] + " banana " + text[len(text) // 2 :]


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto")
    args = ap.parse_args()
    dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    eng = load_engine("smollm2-135m-instruct", compute_dtype=dtype)
    print(f"engine: backend={eng.backend} compute_dtype={eng.compute_dtype} threads={torch.get_num_threads()}")
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    prompt_ids = render_prompt(eng.tokenizer, PROMPT)

    eng.generate_ids([prompt_ids], params)  # warm-up (oneDNN kernels, allocator)
    base_s, ref = timed(lambda: eng.generate_ids([prompt_ids], params)[0][0], args.repeats)
    print(f"answer: {len(ref.token_ids)} tokens, finish={ref.finish_reason}, prompt {len(prompt_ids)} tokens")
    print("-" * 100)
    print(ref.text)
    print("-" * 100)
    edited = edit_one_place(ref.text)
    # warm-up of the verify path: its first call probes which products must run row by row (one-time cost)
    eng.generate_ids_predicted(prompt_ids, params, eng.prediction_ids(ref.text))
    probe = getattr(eng.decoder, "_row_invariant", None)
    if getattr(eng.decoder, "gemm", False):
        print("verify: C kernels and GEMM, every product on all rows at once (row-invariant by construction)")
    elif probe:  # which weight products verify runs on all rows at once (the rest row by row, as decode)
        R = eng.decoder.PROBE_ROWS
        notes = {k: "all m" if len(v) == R - 1 else ("none" if not v else f"m in {sorted(v)}") for k, v in probe[1].items()}
        print(f"verify: batched weight products (bit-identical to decode): {notes}")
    cases = [("no prediction (predicted path)", ""), ("exact prediction", ref.text), ("edited in one place", edited)]
    print(f"prediction: {len(eng.prediction_ids(ref.text))} tokens; edited: {len(eng.prediction_ids(edited))} tokens")
    rows = [("plain decoding (generate_ids)", True, base_s, 1.0, "-", "-")]
    for name, pred in cases:
        pred_ids = eng.prediction_ids(pred)
        s, c = timed(lambda: eng.generate_ids_predicted(prompt_ids, params, pred_ids), args.repeats)
        same = c.token_ids == ref.token_ids and c.text == ref.text
        rows.append((name, same, s, base_s / s, c.accepted_prediction_tokens, c.rejected_prediction_tokens))
    print(f"{'request':34} {'identical':>9} {'median s':>9} {'speedup':>8} {'accepted':>9} {'rejected':>9}")
    for name, same, s, sp, acc, rej in rows:
        print(f"{name:34} {str(same):>9} {s:9.3f} {sp:7.2f}x {acc!s:>9} {rej!s:>9}")
    exact_speedup = rows[2][3]
    verdict = "met" if exact_speedup >= 2 else "NOT met"
    print(f"\nexact-prediction speedup {exact_speedup:.2f}x (target >= 2x): {verdict}")
    if not all(r[1] for r in rows):
        print("note: an output differed from plain decoding; in bf16 the multi-token verify forward can round a "
              "near-tie differently from single-token decode steps (rerun with --dtype fp32 to check exactness)")


if __name__ == "__main__":
    main()
