"""Generation throughput: rft's engine against transformers' `generate`, side by side in one run.

For batch sizes 1, 16 and 64 (prompts from builtin:arithmetic, `--new-tokens` sampled tokens each, EOS
ignored so both generate the same number of tokens), prints tokens per second for:
  - transformers `model.generate` in fp32 and bf16 (its best dtype is reported),
  - rft's LocalEngine in fp32 and bf16 (bf16 on CPU runs the fast decoder's C kernels), and in bf16 on
    the fast decoder's PyTorch path (`RFT_CPU_KERNELS=0`, what rft did before the kernels),
and the ratio rft(best) / transformers(best). It also checks that greedy outputs at temperature 0 in fp32 are
identical between the two (token ids), which is the correctness bar for the fast decoder.

    .venv/bin/python bench/rollout.py [--new-tokens 32] [--batches 1,16,64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from rft.data import load_dataset
from rft.engine import SamplingParams
from rft.engine.local import LocalEngine, render_prompt
from rft.models import load, resolve


def hf_generate(model, tok, prompt_ids: list[list[int]], new_tokens: int, greedy: bool,
                fixed_length: bool = False) -> tuple[float, list[list[int]]]:
    L = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), L), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompt_ids):
        ids[i, L - len(p):] = torch.tensor(p)
        mask[i, L - len(p):] = 1
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens if fixed_length else None,
                             do_sample=not greedy, temperature=None if greedy else 1.0, top_p=None, top_k=None,
                             pad_token_id=tok.pad_token_id)
    dt = time.perf_counter() - t0
    return dt, [row[L:].tolist() for row in out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    resolved = resolve("smollm2-135m-instruct")
    base, tok = load(resolved, dtype=torch.float32)
    ds = load_dataset("builtin:arithmetic", split="validation")
    prompts_all = [render_prompt(tok, r["messages"]) for r in ds.rows]

    # Correctness: greedy fp32 token ids identical to transformers (EOS allowed, 24 tokens, 32 prompts).
    eng32 = LocalEngine(base, tok, compute_dtype=torch.float32)
    got = eng32.generate_ids(prompts_all[:32], SamplingParams(temperature=0.0, max_new_tokens=24))
    same = 0
    for p, g in zip(prompts_all[:32], got):
        _, ref = hf_generate(base, tok, [p], 24, greedy=True)
        r = ref[0]
        if tok.eos_token_id in r:
            r = r[: r.index(tok.eos_token_id) + 1]
        same += list(g[0].token_ids) == r
    print(f"greedy fp32 token ids identical to transformers.generate: {same}/32")

    import copy

    hf_models = {"fp32": base, "bf16": copy.deepcopy(base).to(torch.bfloat16)}
    engines = {"fp32": eng32, "bf16": LocalEngine(base, tok, compute_dtype=torch.bfloat16)}
    os.environ["RFT_CPU_KERNELS"] = "0"  # read when a decoder is built: this one runs on PyTorch ops
    engines["bf16_torch"] = LocalEngine(base, tok, compute_dtype=torch.bfloat16)
    del os.environ["RFT_CPU_KERNELS"]
    print(f"C kernels: bf16 engine {engines['bf16'].decoder.kern is not None} (GEMM {engines['bf16'].decoder.gemm}), "
          f"comparison engine {engines['bf16_torch'].decoder.kern is not None}")
    # Generate exactly new_tokens per sequence in both: no EOS stop for the engine either (an id past the vocab).
    for e in engines.values():
        e.eos = {-1}
    print(f"\n{'batch':>5} | {'HF fp32':>9} {'HF bf16':>9} | {'rft fp32':>9} {'rft bf16':>9} | {'no kernels':>10} | "
          f"tokens/s; rft best / HF best; kernels / no kernels")
    for B in [int(x) for x in args.batches.split(",")]:
        prompts = prompts_all[:B]
        res = {}
        for name, m in hf_models.items():
            best = 0.0
            for _ in range(args.repeats):
                dt, outs = hf_generate(m, tok, prompts, args.new_tokens, greedy=False, fixed_length=True)
                best = max(best, sum(len(o) for o in outs) / dt)
            res[f"hf_{name}"] = best
        for name, e in engines.items():
            best = 0.0
            for r in range(args.repeats):
                outs = e.generate_ids(prompts, SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens, seed=r))
                best = max(best, e.last_stats.completion_tokens / e.last_stats.seconds)
            res[f"rft_{name}"] = best
        hf_best = max(res["hf_fp32"], res["hf_bf16"])
        rft_best = max(res["rft_fp32"], res["rft_bf16"])
        print(f"{B:>5} | {res['hf_fp32']:>9.1f} {res['hf_bf16']:>9.1f} | {res['rft_fp32']:>9.1f} {res['rft_bf16']:>9.1f} | "
              f"{res['rft_bf16_torch']:>10.1f} | x{rft_best / hf_best:.2f}; x{res['rft_bf16'] / res['rft_bf16_torch']:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
