"""The static-cache decoder (engine/cuda_decode.py), the local engine's CUDA decode path.

On CPU the decoder runs eagerly (no CUDA graphs) and must give the same greedy tokens as the existing decoders
on tiny random models of each architecture it claims (llama, qwen2 with q/k/v biases, qwen3 with q/k norms,
mistral with a sliding window shorter than the prompts); seeded sampling must draw the same tokens; weight sync
must refresh the engine in place (same buffers, so captured graphs stay valid); slots must not leak one call's
cache into the next. The GPU tests (marked `gpu`, skipped without CUDA) check a CUDA-graph replay against the
eager step and the engine choice on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from rft.engine import SamplingParams
from rft.engine.cuda_decode import PendingCache, Slot, StaticDecoder, supports
from rft.engine.local import LocalEngine, render_prompt
from tests.conftest import char_tokenizer

PROMPTS = [[{"role": "user", "content": c}] for c in ("Hi", "What is 2 + 3? Think it over.", "Count: one two", "ok")]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=20)
CUDA = torch.cuda.is_available()


def _model(kind: str = "llama", **extra):
    """A tiny random model of `kind`, weights re-drawn at scale 0.25 so greedy output varies between tokens."""
    import transformers

    tok = char_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    cls = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
           "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM")}[kind]
    if kind == "qwen3":
        common["head_dim"] = 16
    cfg = getattr(transformers, cls[0])(**{**common, **extra})
    torch.manual_seed(1)
    model = getattr(transformers, cls[1])(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.25)
            elif "bias" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in name:
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.1)
    return model, tok


def _ids(engine, outs):
    return [[list(c.token_ids) for c in group] for group in outs]


@pytest.mark.parametrize("kind,extra", [("llama", {}), ("qwen2", {}), ("qwen3", {}),
                                        ("mistral", {"sliding_window": 12})])
def test_greedy_tokens_identical_to_transformers_path(kind, extra):
    model, tok = _model(kind, **extra)
    assert supports(model)
    ref = LocalEngine(model, tok, fast=False, static=False)  # transformers forward + DynamicCache
    static = LocalEngine(model, tok, static=True)
    assert (ref.backend, static.backend) == ("transformers", "static")
    want = _ids(ref, ref.generate(PROMPTS, GREEDY))
    got = _ids(static, static.generate(PROMPTS, GREEDY))
    assert got == want
    assert len({tuple(x[0]) for x in want}) > 1 and any(len(set(x[0])) > 3 for x in want)  # varied, not one token


def test_greedy_identical_to_model_generate_one_prompt():
    model, tok = _model("llama")
    static = LocalEngine(model, tok, static=True)
    ids = render_prompt(tok, PROMPTS[1])
    x = torch.tensor([ids])
    # attention_mask given: the ChatML prompt holds <|im_end|>, which is also the pad token
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=20, do_sample=False,
                         eos_token_id=None, pad_token_id=tok.pad_token_id)
    static.eos = {-1}
    got = static.generate_ids([ids], GREEDY)[0][0]
    assert list(got.token_ids) == out[0, len(ids):].tolist()


def test_seeded_sampling_draws_the_same_tokens_and_logprobs_as_the_fast_decoder():
    model, tok = _model("llama")
    fast = LocalEngine(model, tok, static=False)
    static = LocalEngine(model, tok, static=True)
    assert fast.backend == "fast"
    for e in (fast, static):
        e.eos = {-1}  # no row finishes early: the fast decoder would compact, drawing randoms for fewer rows
    params = SamplingParams(n=3, temperature=0.9, top_p=0.95, top_k=30, max_new_tokens=16, seed=5)
    a, b = fast.generate(PROMPTS, params), static.generate(PROMPTS, params)
    assert _ids(fast, a) == _ids(static, b)
    la = torch.tensor([c.logprobs for g in a for c in g])
    lb = torch.tensor([c.logprobs for g in b for c in g])
    assert torch.allclose(la, lb, atol=1e-4), (la - lb).abs().max()


def test_cpu_default_is_unchanged():
    model, tok = _model("llama")
    assert LocalEngine(model, tok).backend == "fast"  # the static decoder is chosen only on CUDA (or when asked)
    model2, tok2 = _model("qwen2")
    assert LocalEngine(model2, tok2).backend == "fast"


def test_sync_refreshes_in_place_and_output_follows_the_weights():
    model, tok = _model("llama")
    eng = LocalEngine(model, tok, static=True)
    dec: StaticDecoder = eng.decoder
    before = _ids(eng, eng.generate(PROMPTS[:2], GREEDY))
    ptrs = [t.data_ptr() for lw in dec.layers for t in lw.values() if t is not None] + [dec.embed.data_ptr()]
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # what an optimizer step does: the parameters change in place
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    stale = _ids(eng, eng.generate(PROMPTS[:2], GREEDY))
    assert stale == before  # the engine's copy is not the live parameters
    eng.sync_weights()
    assert [t.data_ptr() for lw in dec.layers for t in lw.values() if t is not None] + [dec.embed.data_ptr()] == ptrs
    fresh = LocalEngine(model, tok, static=True)
    now = _ids(eng, eng.generate(PROMPTS[:2], GREEDY))
    assert now == _ids(fresh, fresh.generate(PROMPTS[:2], GREEDY))
    assert now != before


def test_slots_are_reused_without_leaking_a_previous_call():
    model, tok = _model("llama")
    eng = LocalEngine(model, tok, static=True)
    first = _ids(eng, eng.generate(PROMPTS[:2], GREEDY))
    eng.generate([PROMPTS[2], PROMPTS[0]], SamplingParams(temperature=1.0, max_new_tokens=20, seed=1))
    assert len(eng.decoder.slots) == 1  # same rows and rounded length: one slot, reused
    assert _ids(eng, eng.generate(PROMPTS[:2], GREEDY)) == first


def test_select_and_repeat_keep_each_rows_logits():
    model, tok = _model("llama")
    dec = StaticDecoder(model, torch.float32)
    prompts = [render_prompt(tok, p) for p in PROMPTS[:3]]
    L = max(map(len, prompts))
    ids = torch.full((3, L), tok.pad_token_id)
    attn = torch.zeros((3, L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):], attn[i, L - len(p):] = torch.tensor(p), 1
    logits, st = dec.prefill(ids, attn, 8)  # [3, V]
    assert isinstance(st.cache, PendingCache)
    st = dec.repeat(st, 2)  # 6 rows
    tok0 = logits.argmax(-1).repeat_interleave(2)  # [6]
    l1 = dec.decode(tok0, st)  # [6, V]
    assert isinstance(st.cache, Slot)
    assert torch.allclose(l1[0], l1[1]) and torch.allclose(l1[4], l1[5])
    t1 = l1.argmax(-1)
    full = dec.decode(t1, st)  # [6, V] every row one more step
    # the same two steps, then keep rows 1 and 4 only: their next logits must not change
    logits, st2 = dec.prefill(ids, attn, 8)
    st2 = dec.repeat(st2, 2)
    dec.decode(tok0, st2)
    st2 = dec.select(st2, torch.tensor([1, 4]))
    part = dec.decode(t1[[1, 4]], st2)  # [2, V]
    assert torch.allclose(part, full[[1, 4]], atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_graph_replay_matches_the_eager_step_and_is_the_default_on_cuda():
    model, tok = _model("qwen2")
    model = model.cuda()
    graph = LocalEngine(model, tok, compute_dtype=torch.bfloat16)
    eager = LocalEngine(model, tok, compute_dtype=torch.bfloat16, cuda_graphs=False)
    assert (graph.backend, eager.backend) == ("cuda_graph", "static")
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=24, seed=3)
    assert _ids(graph, graph.generate(PROMPTS, params)) == _ids(eager, eager.generate(PROMPTS, params))
    assert any(s.graph is not None for s in graph.decoder.slots.values())


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_sync_is_device_to_device_and_graphs_follow_the_weights():
    model, tok = _model("llama")
    model = model.cuda()
    eng = LocalEngine(model, tok, compute_dtype=torch.bfloat16)
    eng.generate(PROMPTS[:2], GREEDY)  # captures a graph
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    eng.sync_weights()
    assert all(t.device.type == "cuda" for lw in eng.decoder.layers for t in lw.values() if t is not None)
    fresh = LocalEngine(model, tok, compute_dtype=torch.bfloat16, cuda_graphs=False)
    assert _ids(eng, eng.generate(PROMPTS[:2], GREEDY)) == _ids(fresh, fresh.generate(PROMPTS[:2], GREEDY))


def test_streaming_and_predicted_requests_decode_plainly_on_the_static_decoder():
    model, tok = _model("llama")
    eng = LocalEngine(model, tok, static=True)
    want = eng.generate([PROMPTS[1]], GREEDY)[0][0]
    deltas, done = [], None
    for d, c in eng.stream(PROMPTS[1], GREEDY):
        deltas.append(d)
        done = c or done
    assert done is not None and done.token_ids == want.token_ids and "".join(deltas) == want.text
    pred = eng.generate_predicted(PROMPTS[1], GREEDY, want.text)  # no verify here: decoded token by token
    assert pred.token_ids == want.token_ids
