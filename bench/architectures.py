"""The architecture matrix: every family rft claims, on randomly initialised models (nothing downloaded).

For each family (llama, qwen2, qwen3, mistral, phi3, gemma2, gemma3_text, qwen2_moe; `rft.engine.archs`) prints:
  - the engine rft picks and why (`archs.engine_for`);
  - greedy identity: rft's engine vs `transformers` `generate` in fp32, 8 prompts of mixed lengths in one
    left-padded batch, 32 new tokens (sliding windows set to 16 where the family has them, so they are exceeded);
  - log-prob max abs error: `rft.train.policy.completion_logprobs` (the training forward) against a plain full
    forward over prompt + completion, fp32, 16 sampled completions;
  - 3-step training ok: `setup_training` + three `train_step`s change the parameters (rewards forced to 0, 1, 2,
    ... per group so every step updates: a random model earns no reward);
  - rollout tokens/s at batch 16 (16 prompts, 64 new tokens each, EOS ignored so both sides make the same
    tokens, best of `--repeats`) for transformers `generate` and rft's engine, in fp32 and in bf16, and the
    ratio rft / transformers per dtype.
Model sizes: the correctness columns run on the shape the tests use (2 layers, hidden 64); the throughput
columns on `--hidden` (default 384) x `--layers` (default 4), heads of 64 (2 kv heads), MLP 3x hidden (MoE: 4
experts of 1.5x hidden, top 2, plus a shared expert), a 4096-token vocabulary (a character tokenizer padded
with filler tokens). Absolute numbers depend on the machine and its load; compare the ratios of one run.

    nice -n 10 .venv/bin/python bench/architectures.py [--hidden 384] [--layers 4] [--repeats 2] [--only llama,qwen3]
"""

from __future__ import annotations

import argparse
import string
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from rft import algo
from rft.config import parse_job
from rft.data import load_dataset
from rft.engine import SamplingParams, archs
from rft.engine.local import LocalEngine, render_prompt
from rft.train.policy import build_batch, completion_logprobs
from rft.train.setup import setup_training
from rft.train.step import train_step

WORDS = ["Say red", "What is 2+2?", "Hi", "Name three colours, please", "Count to five", "ok",
         "Tell me about the sea and the sky", "Why?", "Spell cat", "Add 17 and 25", "Good morning to you",
         "Repeat after me: blue", "List two fruits", "Yes or no?", "What day is it today?", "Go"]


def tokenizer(vocab: int):
    """A character-level tokenizer with a ChatML template, padded with filler tokens to `vocab` entries."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_letters + string.digits + " .,?!+*-=:\n'")
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    words = specials + chars
    words += [f"<f{i}>" for i in range(vocab - len(words))]
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>")
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


def build(mt: str, tok, *, hidden: int, layers: int, heads: int, kv: int, window: int | None):
    cfg = archs.random_config(mt, vocab_size=len(tok), hidden=hidden, layers=layers, heads=heads, kv_heads=kv,
                              intermediate=3 * hidden, window=window, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():  # biases and norms start at 0 / 1: randomise them so skipping one would show
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.5)
    return model


def hf_generate(model, tok, prompts: list[list[int]], new: int, fixed: bool) -> tuple[float, list[list[int]]]:
    L = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (L - len(p)) + p for p in prompts])  # [B, L]
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])  # [B, L]
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                             min_new_tokens=new if fixed else None, pad_token_id=tok.pad_token_id)  # [B, L+new]
    dt = time.perf_counter() - t0
    rows = []
    for r in out[:, L:].tolist():
        rows.append(r if fixed or tok.eos_token_id not in r else r[: r.index(tok.eos_token_id) + 1])
    return dt, rows


def greedy_identity(model, tok, prompts) -> bool:
    eng = LocalEngine(model, tok, compute_dtype=torch.float32)
    ours = [list(c[0].token_ids) for c in eng.generate_ids(prompts, SamplingParams(temperature=0, max_new_tokens=32))]
    return ours == hf_generate(model, tok, prompts, 32, fixed=False)[1]


def logprob_error(model, tok, prompts) -> float:
    eng = LocalEngine(model, tok, compute_dtype=torch.float32)
    G = 2
    outs = eng.generate_ids(prompts, SamplingParams(n=G, temperature=1.0, max_new_tokens=16, seed=0))
    comps = [(list(c.token_ids), list(c.logprobs)) for g in outs for c in g]
    batch = build_batch(prompts, comps, torch.zeros(len(comps)), tok.pad_token_id, G)
    with torch.no_grad():
        logp, _ = completion_logprobs(model, batch, temperature=1.0, compute_dtype=torch.float32)  # [B, Lc]
        err = 0.0
        for i, (ids, _) in enumerate(comps):
            p = prompts[i // G]
            logits = model(input_ids=torch.tensor([p + ids])).logits[0, len(p) - 1 : -1].float()  # [n, V]
            ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None])[:, 0]  # [n]
            err = max(err, (logp[i, : len(ids)] - ref).abs().max().item())
    return err


def three_steps(model, tok) -> bool:
    real = algo.compute_advantages
    algo.compute_advantages = lambda name, r: real(name, torch.arange(r.numel(), dtype=torch.float32).view_as(r))
    try:
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
            job = parse_job({
                "model": d, "training_file": "builtin:arithmetic", "seed": 0,
                "method": {"type": "reinforcement", "reinforcement": {
                    "grader": {"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
                               "reference": "e", "operation": "like"},
                    "hyperparameters": {"batch_size": 2}}},
                "rft": {"sampling": {"n": 2, "max_new_tokens": 6}, "train": {"max_steps": 3, "dtype": "float32"},
                        "algorithm": {"beta": 0.0}, "learnability": {"enabled": False}}})
            parts = setup_training(job)
            try:
                before = {n: p.detach().clone() for n, p in parts.model.named_parameters()}
                rows = load_dataset("builtin:arithmetic", n=6).rows
                ok = all(train_step(k, rows[2 * k - 2 : 2 * k], parts).update.updates == 1 for k in (1, 2, 3))
                changed = sum(not torch.equal(before[n], p.detach()) for n, p in parts.model.named_parameters())
                return ok and changed > len(before) // 2
            finally:
                parts.inputs.close()
    finally:
        algo.compute_advantages = real


def throughput(model, tok, prompts, dtype, new: int, repeats: int) -> tuple[float, float]:
    """(transformers tokens/s, rft tokens/s) at batch len(prompts), `new` tokens each, EOS ignored."""
    m = model if dtype == torch.float32 else _cast(model, dtype)
    hf = min(hf_generate(m, tok, prompts, new, fixed=True)[0] for _ in range(repeats))
    eng = LocalEngine(model, tok, compute_dtype=dtype)
    eng.eos = {-1}  # no EOS: every row makes `new` tokens, as on the transformers side
    params = SamplingParams(temperature=0, max_new_tokens=new)
    eng.generate_ids(prompts[:2], SamplingParams(temperature=0, max_new_tokens=2))  # warm-up (kernel build, probe)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = eng.generate_ids(prompts, params)
        best = min(best, time.perf_counter() - t0)
        assert all(len(c[0].token_ids) == new for c in out)
    n = len(prompts) * new
    return n / hf, n / best


def _cast(model, dtype):
    import copy

    return copy.deepcopy(model).to(dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated model types (default: all)")
    args = ap.parse_args()
    families = [f for f in archs.FAMILIES if not args.only or f in args.only.split(",")]
    small_tok, big_tok = tokenizer(96), tokenizer(4096)
    small_prompts = [render_prompt(small_tok, [{"role": "user", "content": w}]) for w in WORDS[:8]]
    big_prompts = [render_prompt(big_tok, [{"role": "user", "content": w}]) for w in WORDS]
    print(f"throughput models: hidden {args.hidden}, {args.layers} layers, {args.hidden // 64} heads of 64 / 2 kv, "
          f"vocab 4096, batch 16, "
          f"{args.new_tokens} new tokens, {torch.get_num_threads()} threads; tokens/s best of {args.repeats}",
          flush=True)
    head = ("| architecture | engine (reason) | greedy identical (fp32) | log-prob max err | 3 steps train | "
            "HF fp32 | rft fp32 | ratio | HF bf16 | rft bf16 | ratio |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for mt in families:
        small = build(mt, small_tok, hidden=64, layers=2, heads=4, kv=2, window=16)
        name, reason = archs.engine_for(small.config)
        same = greedy_identity(small, small_tok, small_prompts)
        err = logprob_error(small, small_tok, small_prompts)
        trained = three_steps(small, small_tok)
        big = build(mt, big_tok, hidden=args.hidden, layers=args.layers, heads=args.hidden // 64, kv=2, window=None)
        hf32, rft32 = throughput(big, big_tok, big_prompts, torch.float32, args.new_tokens, args.repeats)
        hf16, rft16 = throughput(big, big_tok, big_prompts, torch.bfloat16, args.new_tokens, args.repeats)
        print(f"| {mt} | {name} ({reason.split(': ', 1)[1]}) | {'yes' if same else 'NO'} | {err:.1e} | "
              f"{'yes' if trained else 'NO'} | {hf32:.0f} | {rft32:.0f} | {rft32 / hf32:.2f}x | {hf16:.0f} | "
              f"{rft16:.0f} | {rft16 / hf16:.2f}x |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
