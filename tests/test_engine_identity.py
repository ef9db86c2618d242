"""Engine outputs recorded bit for bit, to prove a refactor of the engine changes nothing.

What it records (`collect`): on the tiny random Llama of tests/conftest.py (stock and with re-drawn larger
weights) and on a random Llama of SmolLM2-135M's shape: greedy tokens, seeded sampled tokens (temperature,
top-k, top-p, n > 1), stop strings, log-probs, predicted-output verify (greedy and sampled, with the prediction
counts), streaming deltas, and the decoder's raw prefill / decode / verify logits; in fp32 and bf16, on the fast
decoder with the C kernels (C GEMM and oneDNN products), without them (as RFT_CPU_KERNELS=0), and on the
transformers fallback; batch 1 and batch 4 (the batch-4 prompts share a system prompt, so the shared-prefix
prefill runs too).

Run it around a change (one intra-op thread, so kernel choice does not depend on the machine's load):
    .venv/bin/python tests/test_engine_identity.py record /tmp/engine_before.pt    # before the change
    .venv/bin/python tests/test_engine_identity.py compare /tmp/engine_before.pt   # after: torch.equal everywhere
`--no-smol` skips the 135M-shape model (the slowest part). Under pytest only the determinism check below runs.
Simplified: the cases that need the C kernels or the C GEMM are skipped where the machine lacks them, so
compare on the machine that recorded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

from rft.engine import SamplingParams
from rft.engine import cpu_kernels
from rft.engine.fast_llama import FastDecoder
from rft.engine.local import LocalEngine, render_prompt
from rft.engine.sampling import sample_next



def char_tokenizer():
    """tests/conftest.py's character tokenizer, loaded by path: this file also runs as a script, and under pytest
    the module name `conftest` may be another directory's."""
    spec = importlib.util.spec_from_file_location("_rft_tests_conftest", Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.char_tokenizer()

SYSTEM = {"role": "system", "content": "You are a careful assistant. Answer briefly."}
PROMPTS = [[SYSTEM, {"role": "user", "content": c}] for c in ("Hi", "What is 2 + 3?", "Count: one two three", "ok")]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=14)
SAMPLED = SamplingParams(n=2, temperature=0.8, top_p=0.9, top_k=20, max_new_tokens=12, seed=7)
PLAIN = SamplingParams(temperature=1.0, max_new_tokens=12, seed=3)


def tiny_model(varied: bool):
    """tests/conftest.py's tiny Llama (seed 0); `varied` re-draws its matrices at scale 0.25 (seed 1), as
    tests/test_engine_predicted.py does, so greedy output varies instead of repeating one character."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    if varied:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.25)
    return model, tok


def smol_model():
    """A random Llama of SmolLM2-135M's shape (30 layers, 9 heads / 3 KV heads, E 576, I 1536, V 49152)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rope_theta=100000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def backends(dtype):
    """(name, LocalEngine kwargs, env RFT_CPU_KERNELS, FastDecoder kwargs or None for the engine's default)."""
    out = [("fast", {"fast": True}, "1", None), ("fast_nokern", {"fast": True}, "0", None)]
    os.environ["RFT_CPU_KERNELS"] = "1"  # load() answers None while it is "0"
    kern = cpu_kernels.load()
    if dtype == torch.bfloat16 and kern is not None and kern.has_gemm:
        out.append(("fast_cgemm", {"fast": True}, "1", {"gemm": True}))  # the default only on CPUs without AMX
        out.append(("fast_onednn", {"fast": True}, "1", {"gemm": False}))
    out.append(("hf", {"fast": False}, "1", None))
    return out


def _engine(model, tok, dtype, kw, env, dec_kw):
    os.environ["RFT_CPU_KERNELS"] = env
    eng = LocalEngine(model, tok, compute_dtype=dtype, **kw)
    if dec_kw is not None:
        eng.decoder = FastDecoder(model, dtype, **dec_kw)
    return eng


def _completions(groups):
    return [[(c.text, c.token_ids, c.logprobs, c.finish_reason, c.prompt_tokens, c.accepted_prediction_tokens,
              c.rejected_prediction_tokens) for c in g] for g in groups]


def engine_cases(model, tok, dtype, kw, env, dec_kw) -> dict:
    eng = _engine(model, tok, dtype, kw, env, dec_kw)
    ids = [render_prompt(tok, p) for p in PROMPTS]
    out = {}
    for bname, prompts in (("b1", ids[:1]), ("b4", ids)):
        out[f"{bname}/greedy"] = _completions(eng.generate_ids(prompts, GREEDY))
        out[f"{bname}/sampled"] = _completions(eng.generate_ids(prompts, SAMPLED))
        out[f"{bname}/plain"] = _completions(eng.generate_ids(prompts, PLAIN))
    greedy = [g[0] for g in out["b4/greedy"]]  # per prompt: (text, token_ids, ...)
    stop_char = next((ch for ch in max((g[0] for g in greedy), key=len)[2:] if ch.isalpha()), "e")
    out["b4/stop"] = _completions(eng.generate_ids(ids, SamplingParams(n=2, temperature=1.0, max_new_tokens=12,
                                                                        seed=5, stop=(stop_char,))))
    # predicted outputs: an exact prediction, an edited one, and sampling with a prediction
    for i in (0, 2):
        exact = list(greedy[i][1])
        edited = exact[:3] + [7, 9] + exact[5:]
        for name, pred, params in (("exact", exact, GREEDY), ("edited", edited, GREEDY), ("sampled", edited, PLAIN)):
            c = eng.generate_ids_predicted(ids[i], params, pred)
            out[f"predicted{i}/{name}"] = _completions([[c]])
    out["stream"] = [(d, None if c is None else _completions([[c]])) for d, c in
                     eng.stream(PROMPTS[2], GREEDY, prediction=tok.decode(edited, skip_special_tokens=True))]
    return out


def decoder_cases(dec, prompts: list[list[int]], seed: int = 0) -> dict:
    """Raw logits of prefill (left-padded batch), decode steps fed by seeded samples, and verify + rewind."""
    B, L = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.zeros((B, L), dtype=torch.long)  # [B, L]
    attn = torch.zeros((B, L), dtype=torch.long)  # [B, L]
    for i, p in enumerate(prompts):
        input_ids[i, L - len(p) :] = torch.tensor(p)
        attn[i, L - len(p) :] = 1
    gen = torch.Generator().manual_seed(seed)
    out = {}
    logits, state = dec.prefill(input_ids, attn, 12)  # [B, V]
    out["prefill"] = logits
    steps, toks = [], []
    for _ in range(4):
        tok, lp = sample_next(logits, PLAIN, gen)  # [B], [B]
        toks.append(tok)
        steps.append(lp)
        logits = dec.decode(tok, state)  # [B, V]
        steps.append(logits)
    out["decode"] = steps
    out["sampled"] = torch.stack(toks)
    draft = torch.stack(toks, 1)  # [B, 4]
    out["verify"] = dec.verify(draft, state)  # [B, 4, V]
    dec.rewind(state, 3)
    out["after_rewind"] = dec.decode(draft[:, 0], state)  # [B, V]
    return out


def collect(smol: bool = True) -> dict:
    torch.set_num_threads(1)
    res = {}
    for mname, varied in (("tiny", False), ("varied", True)):
        model, tok = tiny_model(varied)
        for dtype in (torch.float32, torch.bfloat16):
            for bname, kw, env, dec_kw in backends(dtype):
                res[f"{mname}/{dtype}/{bname}"] = engine_cases(model, tok, dtype, kw, env, dec_kw)
                if kw["fast"]:
                    eng = _engine(model, tok, dtype, kw, env, dec_kw)
                    ids = [render_prompt(tok, p) for p in PROMPTS]
                    res[f"{mname}/{dtype}/{bname}/decoder"] = decoder_cases(eng.decoder, ids)
    if smol:
        model = smol_model()
        g = torch.Generator().manual_seed(2)
        prompts = [torch.randint(0, 49152, (n,), generator=g).tolist() for n in (24, 17, 24, 9)]
        for dtype in (torch.float32, torch.bfloat16):
            for bname, _kw, env, dec_kw in backends(dtype)[:-1]:  # the fast decoder's variants
                os.environ["RFT_CPU_KERNELS"] = env
                dec = FastDecoder(model, dtype, **(dec_kw or {}))
                res[f"smol/{dtype}/{bname}/b1"] = decoder_cases(dec, prompts[:1], seed=1)
                res[f"smol/{dtype}/{bname}/b4"] = decoder_cases(dec, prompts, seed=1)
    os.environ.pop("RFT_CPU_KERNELS", None)
    return res


def diff(a, b, path: str = "") -> list[str]:
    """Every place where a and b differ (tensors by torch.equal, dtype and shape included)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if ok else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: missing on one side" for k in sorted(set(a) ^ set(b), key=str)]
        for k in a.keys() & b.keys():
            out += diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [x for i, (u, v) in enumerate(zip(a, b)) for x in diff(u, v, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_fresh_engines_reproduce_each_other():
    """Two engines built afresh give identical outputs: the premise of comparing a recording bit for bit."""
    torch.set_num_threads(1)
    model, tok = tiny_model(varied=True)
    for dtype in (torch.float32, torch.bfloat16):
        for _name, kw, env, dec_kw in backends(dtype)[:2]:
            a = engine_cases(model, tok, dtype, kw, env, dec_kw)
            b = engine_cases(model, tok, dtype, kw, env, dec_kw)
            assert diff(a, b) == []
    os.environ.pop("RFT_CPU_KERNELS", None)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("record", "compare"):
        print(__doc__)
        return 2
    res = collect(smol="--no-smol" not in argv)
    if argv[0] == "record":
        torch.save(res, argv[1])
        print(f"recorded {len(res)} case groups to {argv[1]}")
        return 0
    ref = torch.load(argv[1], weights_only=False)
    bad = diff(ref, res)
    print(f"compared {len(ref)} case groups: {'IDENTICAL' if not bad else f'{len(bad)} differences'}")
    for line in bad[:50]:
        print("  DIFF", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
