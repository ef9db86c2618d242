"""The fused C kernels of the fast decoder (rft/engine/cpu_kernels.c), against PyTorch references.

Each kernel is checked against a float32 PyTorch computation of the same thing; the decoder built on them is
checked against the float32 decoder, and its multi-token `verify` against single-token decoding bit for bit.
On a CPU without AVX512-BF16 the GEMM tests check instead that the decoder falls back to oneDNN products."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from rft.engine import cpu_kernels
from rft.engine.fast_llama import FastDecoder

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def kern():
    k = cpu_kernels.load()
    assert k is not None, "the C kernels did not build here (is a C compiler installed?)"
    return k


def _bf(*shape, scale=1.0, g=None):
    return (torch.randn(*shape, generator=g) * scale).to(torch.bfloat16)


def test_rmsnorm_with_residual_add(kern):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 96, generator=g) * 3
    y = _bf(7, 96, g=g)
    w = _bf(96, g=g)
    out = torch.empty(7, 96, dtype=torch.bfloat16)
    x0 = x.clone()
    kern.add_rmsnorm(x, y, w, out, 1e-5)
    ref_x = x0 + y.float()
    assert torch.equal(x, ref_x)  # the residual stream is updated in place, exactly
    ref = w.float() * ref_x * torch.rsqrt(ref_x.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(out.float(), ref, rtol=8e-3, atol=1e-3)
    out2 = torch.empty_like(out)
    kern.add_rmsnorm(x.clone(), None, w, out2, 1e-5)  # no residual
    ref2 = w.float() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(out2.float(), ref2, rtol=8e-3, atol=1e-3)


def test_silu_mul(kern):
    g = torch.Generator().manual_seed(1)
    gu = _bf(5, 2 * 40, scale=4, g=g)
    out = torch.empty(5, 40, dtype=torch.bfloat16)
    kern.silu_mul(gu, out)
    a, u = gu.float().chunk(2, -1)
    torch.testing.assert_close(out.float(), F.silu(a) * u, rtol=8e-3, atol=1e-4)


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


def _attention_reference(qkv, cos, sin, kc, vc, valid, t, H, K, scale):
    """float32 reference: returns (out [b, m, H*D], new keys [b, K, m, D], new values)."""
    b, m, _ = qkv.shape
    D = kc.shape[-1]
    G = H // K
    q = qkv[..., : H * D].float().view(b, m, H, D).transpose(1, 2)  # [b, H, m, D]
    k = qkv[..., H * D : (H + K) * D].float().view(b, m, K, D).transpose(1, 2)
    v = qkv[..., (H + K) * D :].float().view(b, m, K, D).transpose(1, 2)
    c, s = cos[:, None], sin[:, None]  # [b, 1, m, D]
    q, k = _rope(q, c, s), _rope(k, c, s)
    keys = kc.float().clone()
    vals = vc.float().clone()
    keys[:, :, t : t + m] = k.to(torch.bfloat16).float()  # the cache stores bf16
    vals[:, :, t : t + m] = v.to(torch.bfloat16).float()
    keys, vals = keys.repeat_interleave(G, 1), vals.repeat_interleave(G, 1)  # [b, H, T, D]
    S = t + m
    scores = (q * scale) @ keys[:, :, :S].transpose(-1, -2)  # [b, H, m, S]
    causal = torch.arange(S)[None, :] <= (t + torch.arange(m))[:, None]  # [m, S]
    allowed = causal[None, None] & valid[:, None, None, :S]  # [b, 1, m, S]
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, -1).nan_to_num(0.0)  # a query with no key -> zeros
    out = (probs @ vals[:, :, :S]).transpose(1, 2).reshape(b, m, H * D)
    return out, k, v


@pytest.mark.parametrize("D", [64, 24])  # the vectorised path (D % 16 == 0) and the plain one
@pytest.mark.parametrize("m", [1, 5])
def test_attention_matches_reference(kern, D, m):
    g = torch.Generator().manual_seed(D + m)
    b, H, K, T, t = 4, 6, 2, 24, 9
    qkv = _bf(b, m, (H + 2 * K) * D, g=g)
    pos = torch.arange(t, t + m)[None].expand(b, m)
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    ang = pos[..., None].float() * inv  # [b, m, D/2]
    emb = torch.cat([ang, ang], -1)
    cos, sin = emb.cos().contiguous(), emb.sin().contiguous()
    kc, vc = _bf(b, K, T, D, g=g), _bf(b, K, T, D, g=g)
    valid = torch.zeros(b, T, dtype=torch.bool)
    valid[:, : t + m] = True
    valid[1, :4] = False  # left padding
    valid[2, 3] = False  # a hole
    kc0, vc0 = kc.clone(), vc.clone()
    out = torch.empty(b, m, H * D, dtype=torch.bfloat16)
    kern.attention(qkv, cos, sin, kc, vc, valid, t, H, K, D**-0.5, out)
    ref, k_new, v_new = _attention_reference(qkv, cos, sin, kc0, vc0, valid, t, H, K, D**-0.5)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(kc[:, :, t : t + m].float(), k_new, rtol=8e-3, atol=1e-2)  # rotated, rounded keys
    assert torch.equal(vc[:, :, t : t + m], qkv[..., (H + K) * D :].view(b, m, K, D).transpose(1, 2))
    assert torch.equal(kc[:, :, :t], kc0[:, :, :t]) and torch.equal(kc[:, :, t + m :], kc0[:, :, t + m :])


def test_attention_query_without_keys_gets_zeros_and_threads_agree(kern):
    g = torch.Generator().manual_seed(5)
    b, H, K, D, T, t, m = 3, 4, 2, 32, 40, 20, 3
    qkv = _bf(b, m, (H + 2 * K) * D, g=g)
    cos, sin = torch.ones(b, m, D), torch.zeros(b, m, D)
    kc, vc = _bf(b, K, T, D, g=g), _bf(b, K, T, D, g=g)
    valid = torch.ones(b, T, dtype=torch.bool)
    valid[0, : t + m] = False  # row 0: nothing to attend to at all
    outs = []
    for threads in (1, 2):
        out = torch.full((b, m, H * D), 7.0, dtype=torch.bfloat16)
        kern.attention(qkv, cos, sin, kc.clone(), vc.clone(), valid, t, H, K, 0.1, out,
                       kern.workspace(H, K, D, t + m, threads))
        outs.append(out)
    assert torch.equal(outs[0][0], torch.zeros_like(outs[0][0]))
    assert torch.equal(outs[0], outs[1])  # work split over threads changes nothing


def test_gemm_matches_reference_and_is_row_invariant(kern):
    g = torch.Generator().manual_seed(2)
    N, K = 48, 70
    w = _bf(N, K, scale=0.2, g=g)
    bias = torch.randn(N, generator=g)
    packed = kern.pack(w)
    if not kern.has_gemm:  # a CPU without AVX512-BF16: the product refuses, the decoder uses oneDNN
        with pytest.raises(RuntimeError, match="AVX512-BF16"):
            kern.gemm(_bf(2, K), packed, N)
        return
    for M in (1, 3, 16, 17, 40):
        x = _bf(M, K, g=g)
        ref = x.float() @ w.float().t() + bias
        y32 = kern.gemm(x, packed, N, bias, out_dtype=torch.float32)
        torch.testing.assert_close(y32, ref, rtol=1e-4, atol=1e-4)
        y16 = kern.gemm(x, packed, N, bias)
        assert torch.equal(y16, y32.to(torch.bfloat16))  # bf16 output = fp32 result rounded to nearest even
        rows = torch.cat([kern.gemm(x[i : i + 1], packed, N, bias) for i in range(M)])
        assert torch.equal(rows, y16)  # each row bit for bit as if computed alone
    with pytest.raises(ValueError, match="rows % 16"):
        kern.pack(_bf(20, K))


def test_no_compiler_or_disabled_means_pytorch_path(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(cpu_kernels, "_lib", False)
    monkeypatch.setenv("RFT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with caplog.at_level(logging.WARNING, logger="rft.engine.cpu_kernels"):
        assert cpu_kernels.load() is None
    assert "no C compiler" in caplog.text
    monkeypatch.setattr(cpu_kernels, "_lib", False)
    monkeypatch.delenv("CC")
    monkeypatch.setenv("RFT_CPU_KERNELS", "0")
    assert cpu_kernels.load() is None
    monkeypatch.setenv("RFT_CPU_KERNELS", "1")
    k = cpu_kernels.load()  # builds into the fresh cache directory
    assert k is not None and k.path.parent == tmp_path / "kernels" and k.path.exists()


def test_compile_error_is_reported(monkeypatch, tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(cpu_kernels, "_SRC", bad)
    with pytest.raises(RuntimeError, match="failed"):
        cpu_kernels.build(tmp_path)
    assert not list((tmp_path / "kernels").glob("*.so")) and not list((tmp_path / "kernels").glob(".build-*"))


# -- the decoder on the kernels ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model80():
    """A random 2-layer Llama whose every product has 16k output columns (vocab 80), so the C GEMM serves it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=80, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(8.0)  # larger logits: argmax comparisons mean something
    return m


def _decode_run(dec, ids, attn, toks):
    logits, st = dec.prefill(ids, attn, len(toks) + 2)
    out = [logits]
    for t in toks:
        out.append(dec.decode(torch.full((ids.shape[0],), t), st))
    return torch.stack(out, 1)  # [B, 1 + n, V]


@pytest.mark.parametrize("gemm", [True, False])
def test_decoder_on_kernels_tracks_fp32(model80, gemm):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 80, (3, 12), generator=g)
    attn = torch.ones_like(ids)
    attn[1, :4] = 0  # left padding
    toks = torch.randint(0, 80, (10,), generator=g).tolist()
    dk = FastDecoder(model80, torch.bfloat16, gemm=gemm)
    assert dk.kern is not None
    ref = _decode_run(FastDecoder(model80, torch.float32), ids, attn, toks)
    got = _decode_run(dk, ids, attn, toks)
    plain = _decode_run(FastDecoder(model80, torch.bfloat16, kernels=False), ids, attn, toks)
    err_k = (got - ref).abs().mean().item()
    err_t = (plain - ref).abs().mean().item()
    scale = ref.abs().mean().item()
    assert err_k < 0.02 * scale, (err_k, scale)
    assert err_k < 1.5 * err_t  # at least as close to fp32 as the PyTorch bf16 path
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("gemm", [True, False])
def test_verify_on_kernels_equals_single_steps_bit_for_bit(model80, gemm):
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dec = FastDecoder(model80, torch.bfloat16, gemm=gemm)
        ids = torch.randint(0, 80, (2, 9), generator=torch.Generator().manual_seed(4))
        attn = torch.ones_like(ids)
        toks = [5, 17, 30, 8, 41, 12, 7, 7, 60, 3]
        _, s1 = dec.prefill(ids, attn, 16)
        singles = torch.stack([dec.decode(torch.tensor([t, t]), s1) for t in toks], 1)  # [2, 10, V]
        _, s2 = dec.prefill(ids, attn, 16)
        multi = torch.cat([dec.verify(torch.tensor([toks[:3]] * 2), s2), dec.verify(torch.tensor([toks[3:]] * 2), s2)], 1)
        assert torch.equal(multi, singles)
        assert s1.t == s2.t and torch.equal(s1.cache.k[:, :, :, : s1.t], s2.cache.k[:, :, :, : s2.t])
    finally:
        torch.set_num_threads(n)


def test_decoder_uses_gemm_where_the_cpu_has_it(model80, kern, monkeypatch):
    """The C GEMM by default on an AVX512-BF16 CPU without AMX; with AMX tiles oneDNN's products are faster
    (bench/README.md), so they stay in oneDNN; RFT_CPU_GEMM=1 / 0 forces either."""
    from rft.engine.fast_llama import cpu_has_amx

    monkeypatch.delenv("RFT_CPU_GEMM", raising=False)
    dec = FastDecoder(model80, torch.bfloat16)
    assert dec.gemm == (kern.has_gemm and not cpu_has_amx())
    monkeypatch.setenv("RFT_CPU_GEMM", "1")
    assert FastDecoder(model80, torch.bfloat16).gemm == kern.has_gemm
    monkeypatch.setenv("RFT_CPU_GEMM", "0")
    assert FastDecoder(model80, torch.bfloat16).gemm is False
    dec = FastDecoder(model80, torch.bfloat16, gemm=True)
    if dec.gemm:
        assert "head_vnni" in dec.packed and "wqkv_vnni" in dec.layers[0]
    else:  # a CPU without AVX512-BF16: the glue runs in C, the products in oneDNN
        assert dec.kern is not None and "head_vnni" not in dec.packed


def test_sync_repacks_after_a_weight_update(model80):
    dec = FastDecoder(model80, torch.bfloat16)
    ids = torch.randint(0, 80, (1, 6), generator=torch.Generator().manual_seed(6))
    before, _ = dec.prefill(ids, torch.ones_like(ids), 2)
    with torch.no_grad():
        model80.model.layers[0].mlp.down_proj.weight.mul_(-1.0)
    try:
        dec.sync()
        after, _ = dec.prefill(ids, torch.ones_like(ids), 2)
        fresh, _ = FastDecoder(model80, torch.bfloat16).prefill(ids, torch.ones_like(ids), 2)
        assert not torch.equal(before, after)
        assert torch.equal(after, fresh)
    finally:
        with torch.no_grad():
            model80.model.layers[0].mlp.down_proj.weight.mul_(-1.0)
