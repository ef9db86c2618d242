"""Python-grader throughput: what the sandbox adds per sample, against calling grade() in-process.

What: grades N samples (default 256) with one python grader three ways and prints measured numbers only:
1. in-process: `grade(sample, item)` called directly (no isolation) — the floor;
2. sandbox, sequential: one call at a time through `SandboxPool` (warm workers);
3. sandbox, concurrent: `grade_many` with as many threads as pool workers (how training grades a batch).
The added cost per sample is (sandbox wall time - in-process wall time) / N. Target: at most 20 ms.
Worker start-up is reported separately (it is paid once per worker, not per sample).

Simplified: the grader is a small string-matching function, so the numbers measure the sandbox's overhead
(fork per call, pipes, JSON) rather than grader work.

How to run: `python bench/grader_throughput.py [--n 256] [--workers 2] [--isolation auto|namespaces|basic]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from rft.graders import GraderContext, build, grade_many, make_sample
from rft.graders.sandbox import SandboxLimits, SandboxPool, describe_isolation

SOURCE = '''
import re

def grade(sample, item):
    text = sample["output_text"].strip().lower()
    m = re.search(r"answer:\\s*(-?\\d+)", text)
    return 1.0 if m and m.group(1) == str(item["answer"]) else 0.0
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--isolation", default="auto", choices=["auto", "namespaces", "basic"])
    args = ap.parse_args()

    samples = [make_sample(f"Let me think... answer: {i if i % 3 else i + 1}") for i in range(args.n)]
    items = [{"answer": i} for i in range(args.n)]

    ns: dict = {}
    exec(SOURCE, ns)  # noqa: S102 - the baseline is the grader called in-process, on purpose
    t0 = time.perf_counter()
    baseline = [ns["grade"](s, it) for s, it in zip(samples, items)]
    t_inproc = time.perf_counter() - t0

    pool = SandboxPool(size=args.workers, limits=SandboxLimits(isolation=args.isolation))
    g = build({"type": "python", "source": SOURCE}, context=GraderContext(sandbox_pool=pool))
    t0 = time.perf_counter()
    first = g.grade(samples[0], items[0])  # starts one worker and loads the module
    t_start = time.perf_counter() - t0
    grade_many(g, samples[: args.workers * 2], items[: args.workers * 2], max_workers=args.workers)  # warm every worker

    t0 = time.perf_counter()
    seq = [g.grade(s, it) for s, it in zip(samples, items)]
    t_seq = time.perf_counter() - t0

    t0 = time.perf_counter()
    conc = grade_many(g, samples, items, max_workers=args.workers)
    t_conc = time.perf_counter() - t0

    assert first.score == baseline[0]
    assert [r.score for r in seq] == baseline and [r.score for r in conc] == baseline, "sandbox scores differ from in-process"
    n = args.n
    iso = pool.isolation
    result = {
        "samples": n,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "isolation": describe_isolation(iso),
        "first_call_with_worker_start_ms": round(t_start * 1e3, 1),
        "in_process_ms_per_sample": round(t_inproc / n * 1e3, 4),
        "sandbox_sequential_ms_per_sample": round(t_seq / n * 1e3, 2),
        "sandbox_concurrent_ms_per_sample": round(t_conc / n * 1e3, 2),
        "added_ms_per_sample_sequential": round((t_seq - t_inproc) / n * 1e3, 2),
        "added_ms_per_sample_concurrent": round((t_conc - t_inproc) / n * 1e3, 2),
        "mean_grade_latency_ms": round(sum(r.latency_s for r in seq) / n * 1e3, 2),
    }
    pool.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
