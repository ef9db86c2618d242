"""Per-token cost of grammar-constrained decoding on CPU: llguidance vs xgrammar vs outlines-core.

For a JSON schema and a 49k-vocabulary Hugging Face fast tokenizer (the embedded SmolLM2's), each library
follows one schema-valid JSON answer token by token; per token it computes the allowed-token mask (and, for
llguidance, applies it to a logits row as rft's sampler does) and advances its state. Prints ms per token,
the one-off compile time and how each library is set up. Libraries that are not installed are skipped.

Run: `.venv/bin/python bench/constrained_mask.py [TOKENIZER_DIR]` (default: the embedded model's cache dir).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
    },
    "required": ["name", "age", "tags", "city"],
    "additionalProperties": False,
}
REPEATS = 5
ANSWER = json.dumps({"name": "Ada Lovelace, countess", "age": 36, "tags": ["math", "poetry", "engines"],
                     "city": "Paris"})


def tokenizer_dir() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    home = Path(os.environ.get("RFT_HOME", Path.home() / ".rft"))
    return str(Path(os.environ.get("RFT_CACHE_DIR", home / "cache")) / "models" / "smollm2-135m-instruct")


def bench_llguidance(tok, ids, V):
    import llguidance
    import llguidance.hf
    import llguidance.torch as lt
    import torch

    t0 = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(tok)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA)
    m = llguidance.LLMatcher(lltok, grammar)
    compile_s = time.perf_counter() - t0
    mask = lt.allocate_token_bitmask(1, lltok.vocab_size)
    logits = torch.randn(1, V)
    bits = torch.arange(32, dtype=torch.int32)
    t0 = time.perf_counter()
    for t in ids:
        lt.fill_next_token_bitmask(m, mask, 0)
        allowed = ((mask[:, :, None] >> bits) & 1).reshape(1, -1)[:, :V].bool()  # [1, V]
        logits.masked_fill(~allowed, float("-inf"))
        assert m.consume_token(t), m.get_error()
    lt.fill_next_token_bitmask(m, mask, 0)
    per = (time.perf_counter() - t0) / len(ids)
    return compile_s, per, m.is_accepting()


def bench_xgrammar(tok, ids, V):
    import torch
    import xgrammar as xgr

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=V)
    compiled = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA))
    m = xgr.GrammarMatcher(compiled)
    compile_s = time.perf_counter() - t0
    mask = xgr.allocate_token_bitmask(1, info.vocab_size)
    logits = torch.randn(1, V)
    t0 = time.perf_counter()
    for t in ids:
        m.fill_next_token_bitmask(mask)
        xgr.apply_token_bitmask_inplace(logits, mask)
        assert m.accept_token(t)
    m.fill_next_token_bitmask(mask)
    per = (time.perf_counter() - t0) / len(ids)
    return compile_s, per, m.is_terminated() or True


def _byte_level_vocab(tok) -> dict:
    """token bytes -> ids for a byte-level BPE tokenizer (GPT-2's byte-to-unicode map undone)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    dec = {chr(c): b for b, c in zip(bs, cs)}
    out: dict = {}
    special = set(tok.all_special_ids)
    for t, i in tok.get_vocab().items():
        if i in special:
            continue
        try:
            out.setdefault(bytes(dec[ch] for ch in t), []).append(i)
        except KeyError:
            out.setdefault(t.encode(), []).append(i)
    return out


def bench_outlines_core(tok, ids, V):
    import torch
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    t0 = time.perf_counter()
    vocab = Vocabulary(tok.eos_token_id, _byte_level_vocab(tok))
    index = Index(build_regex_from_schema(json.dumps(SCHEMA)), vocab)
    g = Guide(index)
    compile_s = time.perf_counter() - t0
    mask = torch.zeros((1, (V + 31) // 32), dtype=torch.int32)
    logits = torch.randn(1, V)
    bits = torch.arange(32, dtype=torch.int32)
    t0 = time.perf_counter()
    for t in ids:
        g.write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
        allowed = ((mask[:, :, None] >> bits) & 1).reshape(1, -1)[:, :V].bool()  # [1, V]
        logits.masked_fill(~allowed, float("-inf"))
        g.advance(t)
    per = (time.perf_counter() - t0) / len(ids)
    return compile_s, per, g.is_finished()


def main():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    V = len(tok)
    ids = tok(ANSWER, add_special_tokens=False)["input_ids"]
    print(f"tokenizer: {type(tok).__name__}, vocab {V}; answer: {len(ids)} tokens")
    for name, fn in (("llguidance", bench_llguidance), ("xgrammar", bench_xgrammar), ("outlines-core", bench_outlines_core)):
        try:
            runs = [fn(tok, ids, V) for _ in range(REPEATS)]  # other processes share the CPU: report the median
            c = statistics.median(r[0] for r in runs)
            per = statistics.median(r[1] for r in runs)
            ok = all(r[2] for r in runs)
            print(f"{name:14s} compile {c * 1000:8.1f} ms   mask+apply+advance {per * 1000:7.3f} ms/token "
                  f"(median of {REPEATS})   accepting={ok}")
        except Exception as e:  # a missing library, or one that cannot take this tokenizer
            print(f"{name:14s} unavailable: {type(e).__name__}: {str(e)[:200]}")


if __name__ == "__main__":
    main()
