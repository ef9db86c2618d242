"""A lean decoder for Llama-family models (llama, qwen2, mistral without sliding window), used by the local
engine for generation.

Why: transformers' generic forward rebuilds attention masks, concatenates its KV cache every step and runs
seven separate projections per layer. At decode batch sizes on a CPU those costs dominate. This decoder
reads the same weights, packs q/k/v and gate/up into single matrices in the compute dtype (bf16 where the
CPU is fast at it) and keeps a preallocated KV cache.

Two implementations of the same forward:
- bf16 on CPU (the default where the CPU has bf16 instructions): prefill, decode and verify run through
  `cpu_kernels` (C, compiled on first use): per layer, three C calls (RMSNorm + residual, rotary + KV write +
  attention, SiLU-gate) between four weight products, which run in the C AVX512-BF16 GEMM (weights packed for
  it at `sync()`; ~1.5x oneDNN at decode sizes) or, on CPUs without AVX512-BF16, in oneDNN. The residual
  stream and all accumulation are float32, so this path tracks the fp32 model more closely than bf16 PyTorch
  ops do. Measured at batch 16: a decode step ~19 ms against ~45 ms for the PyTorch path (bench/README.md).
- PyTorch ops (fp32, CUDA, no C compiler, or `RFT_CPU_KERNELS=0`): decode attention with two small matmuls.

Equivalence: in fp32 it reproduces the transformers forward up to float summation order; a test checks
greedy outputs are identical to `model.generate` on the embedded model.

Predicted outputs: `verify` runs m tokens in one pass against the cache and `rewind` forgets the last n
cached positions (marks them invalid and moves the write index back, so rejected draft tokens' K/V are
overwritten by the next write). `verify` gives bit for bit the logits and K/V of m `decode` steps. On the C
kernels that holds by construction (every row is computed by the same code whatever the row count). On the
PyTorch path attention runs query by query with decode's shapes, and a weight product runs on all m rows at
once only where a probe (on first use) found it row-invariant; in bf16 on AVX512-BF16 that is every product
but the MLP down projection.

Limits: one device, no sliding-window attention, RoPE via the model's own rotary module (so scaled RoPE
variants work), LoRA adapters are merged into the packed copy at `sync()` time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = ("llama", "qwen2", "mistral")


def supports(model) -> bool:
    base = _unwrap(model)
    cfg = base.config
    if getattr(cfg, "model_type", None) not in SUPPORTED_TYPES:
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return cfg.model_type == "qwen2" and not getattr(cfg, "use_sliding_window", False)
    act = getattr(cfg, "hidden_act", "silu")
    return act == "silu" and hasattr(base, "model") and hasattr(base.model, "layers")


def _unwrap(model):
    """The transformers causal LM under a peft wrapper (or the model itself)."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def _vnni_shapes_ok(base) -> bool:
    """The C GEMM packs 16 output columns x pairs of inputs: every product's out dim % 16, in dim even."""
    cfg = base.config
    E, I = cfg.hidden_size, cfg.intermediate_size
    H = cfg.num_attention_heads
    K = getattr(cfg, "num_key_value_heads", None) or H
    D = getattr(cfg, "head_dim", None) or E // H
    outs, ins = [(H + 2 * K) * D, E, 2 * I, E, cfg.vocab_size], [E, H * D, E, I, E]
    return all(n % 16 == 0 for n in outs) and all(k % 2 == 0 for k in ins)


def effective_weight(linear) -> torch.Tensor:
    """Weight of a Linear, with any active LoRA adapter merged in (without modifying the module)."""
    if hasattr(linear, "base_layer") and hasattr(linear, "get_delta_weight"):
        w = linear.base_layer.weight
        if getattr(linear, "merged", False) or getattr(linear, "disable_adapters", False):
            return w
        for name in linear.active_adapters:
            if name in linear.lora_A:
                w = w + linear.get_delta_weight(name)
        return w
    return linear.weight


def effective_bias(linear):
    if hasattr(linear, "base_layer"):
        linear = linear.base_layer
    return linear.bias


class FastDecoder:
    def __init__(self, model, dtype: torch.dtype, kernels: bool | None = None, gemm: bool | None = None):
        """kernels=False: the PyTorch path even where the C kernels would run. gemm=False: with the C kernels,
        keep the weight products in oneDNN (what CPUs without AVX512-BF16 get)."""
        self.src = model
        self.dtype = dtype
        base = _unwrap(model)
        cfg = base.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.n_layers = cfg.num_hidden_layers
        self.rotary = base.model.rotary_emb
        self.device = next(model.parameters()).device
        self.scale = self.head_dim**-0.5
        self._f32_probe = torch.empty((1,), dtype=torch.float32, device=self.device)  # rotary tables in fp32
        # oneDNN pre-packed bf16 weights: 1.2-1.5x faster matmuls at decode batch sizes (measured on AVX512-BF16)
        self.prepack = (dtype == torch.bfloat16 and self.device.type == "cpu" and torch.backends.mkldnn.is_available()
                        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))
        self.layers: list[dict] = []
        # Fused C kernels for bf16 on CPU (norms, rotary, attention, SiLU; see cpu_kernels.py): prefill,
        # decode and verify run through them; without a C compiler the PyTorch path below is used.
        self.kern = None
        if kernels is not False and dtype == torch.bfloat16 and self.device.type == "cpu":
            from rft.engine import cpu_kernels

            self.kern = cpu_kernels.load()
        # ... and, on CPUs with AVX512-BF16, the weight products too (faster than oneDNN at decode sizes)
        self.gemm = bool(gemm is not False and self.kern is not None and self.kern.has_gemm
                         and _vnni_shapes_ok(_unwrap(model)))
        if self.gemm:
            self.prepack = False
        self.packed: dict = {}
        self._row_invariant: tuple[int, dict[str, set[int]]] | None = None  # (threads, probe result), see verify
        self.sync()

    @torch.no_grad()
    def sync(self) -> None:
        """(Re)build the packed compute-dtype weights from the source model's current parameters."""
        base = _unwrap(self.src)
        dt = self.dtype
        first = not self.layers
        for i, layer in enumerate(base.model.layers):
            a, m = layer.self_attn, layer.mlp
            wqkv = torch.cat([effective_weight(a.q_proj), effective_weight(a.k_proj), effective_weight(a.v_proj)], 0)
            biases = [effective_bias(a.q_proj), effective_bias(a.k_proj), effective_bias(a.v_proj)]
            bqkv = torch.cat(biases, 0) if all(b is not None for b in biases) else None
            new = {
                "wqkv": wqkv,
                "bqkv": bqkv,
                "wo": effective_weight(a.o_proj),
                "wgu": torch.cat([effective_weight(m.gate_proj), effective_weight(m.up_proj)], 0),
                "wd": effective_weight(m.down_proj),
                "ln1": layer.input_layernorm.weight,
                "ln2": layer.post_attention_layernorm.weight,
            }
            if first:
                self.layers.append({k: (v.detach().to(dt).contiguous() if v is not None else None) for k, v in new.items()})
            else:
                for k, v in new.items():
                    if v is not None:
                        self.layers[i][k].copy_(v)
        emb = base.model.embed_tokens.weight
        head = base.lm_head.weight
        tied = head.data_ptr() == emb.data_ptr()
        if first:
            self.embed = emb.detach().to(dt).contiguous()
            self.head = self.embed if tied else head.detach().to(dt).contiguous()
            self.norm = base.model.norm.weight.detach().to(dt)
        else:
            self.embed.copy_(emb)
            if not tied:
                self.head.copy_(head)
            self.norm.copy_(base.model.norm.weight)
        prev, self.packed = self.packed, {}
        if self.gemm:
            # the C kernels' own weight layout (16 output columns x pairs of k); oneDNN copies are not needed
            for lw in self.layers:
                for k in ("wqkv", "wo", "wgu", "wd"):
                    lw[k + "_vnni"] = self.kern.pack(lw[k], lw.get(k + "_vnni"))
                lw["bqkv32"] = lw["bqkv"].float() if lw["bqkv"] is not None else None
            self.packed["head_vnni"] = self.kern.pack(self.head, prev.get("head_vnni"))
        elif self.prepack:
            reorder = torch.ops.mkldnn._reorder_linear_weight
            for lw in self.layers:
                for k in ("wqkv", "wo", "wgu", "wd"):
                    lw[k + "_pp"] = reorder(lw[k], 32)
            self.packed["head"] = reorder(self.head, 32)

    # -- building blocks ---------------------------------------------------------------------------
    def _rms(self, x, w):
        dt = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * x32.to(dt)

    @staticmethod
    def _rope(x, cos, sin):
        # x [b, h, L, D], cos/sin [b, 1, L, D]
        half = x.shape[-1] // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin

    def _lin(self, x, w, packed=None, bias=None):
        if packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
        return F.linear(x, w, bias)

    def _qkv(self, lw, h):
        qkv = self._lin(h, lw["wqkv"], lw.get("wqkv_pp"), lw["bqkv"])  # [b, L, (H + 2Hkv) * D]
        b, L, _ = qkv.shape
        D, H, K = self.head_dim, self.n_heads, self.n_kv
        q = qkv[..., : H * D].view(b, L, H, D).transpose(1, 2)  # [b, H, L, D]
        k = qkv[..., H * D : (H + K) * D].view(b, L, K, D).transpose(1, 2)  # [b, K, L, D]
        v = qkv[..., (H + K) * D :].view(b, L, K, D).transpose(1, 2)  # [b, K, L, D]
        return q, k, v

    def _mlp(self, lw, h):
        gu = self._lin(h, lw["wgu"], lw.get("wgu_pp"))  # [b, L, 2I]
        g, u = gu.chunk(2, dim=-1)
        return self._lin(F.silu(g) * u, lw["wd"], lw.get("wd_pp"))

    def _cos_sin(self, pos):
        cos, sin = self.rotary(self.embed[:1], pos)  # [b, L, D]
        return cos.to(self.dtype)[:, None], sin.to(self.dtype)[:, None]

    # -- prefill and decode ------------------------------------------------------------------------
    def _block(self, x, pos, mask, kc, vc, start: int, rows=slice(None)):
        """Run every layer over x [b, L, E] (positions pos [b, L]); write K/V at cache index [start, start+L)
        and attend to cache keys [0, start+L) under mask [b, 1, L, start+L]. Returns the final hidden states."""
        b, L, _ = x.shape
        cos, sin = self._cos_sin(pos)
        G = self.n_heads // self.n_kv
        for i, lw in enumerate(self.layers):
            h = self._rms(x, lw["ln1"])
            q, k, v = self._qkv(lw, h)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            kc[i, rows, :, start : start + L] = k
            vc[i, rows, :, start : start + L] = v
            keys, vals = kc[i, rows, :, : start + L], vc[i, rows, :, : start + L]  # [b, K, S, D]
            if G > 1:
                keys = keys.repeat_interleave(G, dim=1)
                vals = vals.repeat_interleave(G, dim=1)
            o = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, scale=self.scale)  # [b, H, L, D]
            x = x + self._lin(o.transpose(1, 2).reshape(b, L, -1), lw["wo"], lw.get("wo_pp"))
            x = x + self._mlp(lw, self._rms(x, lw["ln2"]))
        return x

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, attn: torch.Tensor, max_new: int, shared_prefix: int = 0):
        """input_ids/attn [B, L] -> (last-position logits [B, V] fp32, state).

        Rows are left-padded. With `shared_prefix = p > 0` the first p columns are identical, unpadded tokens in
        every row (layout [prefix | padding | suffix]): the prefix runs once, for one row, and its K/V are copied
        to the others; padding in the middle is masked and positions skip it, so the result is the same."""
        B, L = input_ids.shape
        T = L + max_new
        dev = self.device
        pos = (attn.cumsum(-1) - 1).clamp(min=0)  # [B, L]
        valid = torch.zeros((B, T), dtype=torch.bool, device=dev)  # [B, T] key is a real token
        valid[:, :L] = attn.bool()
        kc = torch.empty((self.n_layers, B, self.n_kv, T, self.head_dim), dtype=self.dtype, device=dev)
        vc = torch.empty_like(kc)
        p = shared_prefix if 0 < shared_prefix < L else 0
        if self.kern is not None:
            if p:  # the shared prefix once, for row 0; its K/V copied to the other rows
                self._forward_kernels(input_ids[:1, :p], pos[:1, :p], kc, vc, valid, 0, exact=False, last_only=None)
                kc[:, 1:, :, :p] = kc[:, :1, :, :p]
                vc[:, 1:, :, :p] = vc[:, :1, :, :p]
            logits = self._forward_kernels(input_ids[:, p:], pos[:, p:], kc, vc, valid, p, exact=False,
                                           last_only=True)  # [B, V]
            return logits, {"k": kc, "v": vc, "valid": valid, "t": L, "pos": pos[:, -1] + 1}
        if p:
            causal = torch.ones((p, p), dtype=torch.bool, device=dev).tril()[None, None]  # [1, 1, p, p]
            x0 = F.embedding(input_ids[:1, :p], self.embed)  # [1, p, E]
            self._block(x0, pos[:1, :p], causal, kc, vc, 0, rows=slice(0, 1))
            kc[:, 1:, :, :p] = kc[:, :1, :, :p]
            vc[:, 1:, :, :p] = vc[:, :1, :, :p]
        Ls = L - p
        causal = torch.ones((Ls, L), dtype=torch.bool, device=dev).tril(diagonal=p)  # [Ls, L] query j sees keys <= p+j
        mask = causal[None] & valid[:, None, :L]  # [B, Ls, L]
        mask[:, torch.arange(Ls), p + torch.arange(Ls)] = True  # pad queries see themselves (no NaN)
        x = F.embedding(input_ids[:, p:], self.embed)  # [B, Ls, E]
        x = self._block(x, pos[:, p:], mask[:, None], kc, vc, p)
        x = self._rms(x[:, -1], self.norm)  # [B, E]
        logits = self._lin(x, self.head, self.packed.get("head")).float()  # [B, V]
        state = {"k": kc, "v": vc, "valid": valid, "t": L, "pos": pos[:, -1] + 1}
        return logits, state

    @staticmethod
    def repeat(state: dict, n: int) -> dict:
        """Repeat every row n times (n completions share one prefill)."""
        return {
            "k": state["k"].repeat_interleave(n, dim=1),
            "v": state["v"].repeat_interleave(n, dim=1),
            "valid": state["valid"].repeat_interleave(n, dim=0),
            "t": state["t"],
            "pos": state["pos"].repeat_interleave(n, dim=0),
        }

    @staticmethod
    def select(state: dict, rows: torch.Tensor) -> dict:
        """Keep only `rows` (drop finished sequences); compacts the cache up to the filled length."""
        t = state["t"]
        return {
            "k": state["k"][:, rows].contiguous() if t else state["k"][:, rows],
            "v": state["v"][:, rows].contiguous() if t else state["v"][:, rows],
            "valid": state["valid"][rows],
            "t": t,
            "pos": state["pos"][rows],
        }

    @torch.inference_mode()
    def decode(self, tok: torch.Tensor, state: dict) -> torch.Tensor:
        """tok [b] -> logits [b, V] fp32 for the next position; advances the state in place."""
        if self.kern is not None:
            return self._advance_kernels(tok[:, None], state)[:, 0]
        b = tok.shape[0]
        t = state["t"]
        kc, vc, valid = state["k"], state["v"], state["valid"]
        valid[:, t] = True
        pos = state["pos"][:, None]  # [b, 1]
        cos, sin = self._cos_sin(pos)
        x = F.embedding(tok[:, None], self.embed)  # [b, 1, E]
        H, K, D = self.n_heads, self.n_kv, self.head_dim
        G = H // K
        bias = torch.zeros((b, 1, 1, t + 1), dtype=torch.float32, device=self.device)  # [b, 1, 1, T]
        bias.masked_fill_(~valid[:, None, None, : t + 1], float("-inf"))
        for i, lw in enumerate(self.layers):
            h = self._rms(x, lw["ln1"])
            q, k, v = self._qkv(lw, h)  # q [b, H, 1, D], k/v [b, K, 1, D]
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            kc[i, :, :, t : t + 1] = k
            vc[i, :, :, t : t + 1] = v
            keys = kc[i, :, :, : t + 1]  # [b, K, T, D]
            vals = vc[i, :, :, : t + 1]
            qg = q.view(b, K, G, D)  # heads grouped by their kv head (head h uses kv head h // G)
            scores = torch.matmul(qg, keys.transpose(-1, -2)).float() * self.scale  # [b, K, G, T]
            probs = torch.softmax(scores + bias, dim=-1).to(self.dtype)
            o = torch.matmul(probs, vals)  # [b, K, G, D]
            x = x + self._lin(o.reshape(b, 1, H * D), lw["wo"], lw.get("wo_pp"))
            x = x + self._mlp(lw, self._rms(x, lw["ln2"]))
        state["t"] = t + 1
        state["pos"] = state["pos"] + 1
        x = self._rms(x[:, 0], self.norm)
        return self._lin(x, self.head, self.packed.get("head")).float()  # [b, V]

    # -- forward with the fused C kernels ---------------------------------------------------------------
    def _advance_kernels(self, toks: torch.Tensor, state: dict) -> torch.Tensor:
        """decode (m = 1) and verify on the C kernels: toks [b, m] at the next m positions -> logits [b, m, V];
        marks the slots valid and advances the state by m."""
        m, t = toks.shape[1], state["t"]
        state["valid"][:, t : t + m] = True
        pos = state["pos"][:, None] + torch.arange(m, device=self.device)  # [b, m]
        logits = self._forward_kernels(toks, pos, state["k"], state["v"], state["valid"], t)
        state["t"] = t + m
        state["pos"] = state["pos"] + m
        return logits

    @torch.inference_mode()
    def _forward_kernels(self, toks: torch.Tensor, pos: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
                         valid: torch.Tensor, t: int, exact: bool = True, last_only: bool = False):
        """toks/pos [b, m] -> logits fp32 [b, m, V] ([b, V] with `last_only`, None with last_only=None): m
        new tokens per row at cache slots [t, t+m) of cache rows [0, b), attending to the valid slots up to
        their own (`valid` [>=b, T] already marks the new ones). The C kernels run everything between the
        weight products, on a float32 residual stream; the weight products run in the C GEMM (AVX512-BF16)
        or oneDNN. Rows are computed independently of m: with the C GEMM by construction, with oneDNN via
        `_vlin` when `exact` (verify), so m tokens give bit for bit what m one-token calls give. Per-layer
        calls pass raw pointers (ctypes releases the GIL); the tensors are checked here, once."""
        kern, lib = self.kern, self.kern.lib
        b, m = toks.shape
        if not (kc.is_contiguous() and vc.is_contiguous() and valid.is_contiguous()):
            raise ValueError("fast decoder: the KV cache must be contiguous for the C kernels")
        if kc.dtype != torch.bfloat16 or vc.shape != kc.shape or valid.dtype != torch.bool or t + m > kc.shape[3]:
            raise ValueError("fast decoder: the KV cache is not the bf16 layout the C kernels expect")
        cos, sin = self.rotary(self._f32_probe, pos)  # [b, m, D] fp32
        cos, sin = cos.contiguous(), sin.contiguous()
        H, K, D = self.n_heads, self.n_kv, self.head_dim
        E, I = self.embed.shape[1], self.layers[0]["wd"].shape[1]
        rows, eps, dt = b * m, self.eps, self.dtype
        x = F.embedding(toks, self.embed).float()  # [b, m, E] residual stream
        h = torch.empty((b, m, E), dtype=dt)  # normed input of the next weight product
        o = torch.empty((b, m, H * D), dtype=dt)  # attention output
        act = torch.empty((b, m, I), dtype=dt)  # silu(gate) * up
        n_ws = torch.get_num_threads()
        scratch = kern.workspace(H, K, D, t + m, n_ws)
        xp, hp, op, ap = x.data_ptr(), h.data_ptr(), o.data_ptr(), act.data_ptr()
        layer_bytes = kc.stride(0) * kc.element_size()
        kp, vp = kc.data_ptr(), vc.data_ptr()
        cs = (cos.data_ptr(), sin.data_ptr())
        tail = (kc.stride(1), kc.shape[3], valid.data_ptr(), valid.stride(0), b, m, t, H, K, D, self.scale, op,
                scratch.data_ptr(), n_ws)
        if self.gemm:
            gemm = lib.rft_gemm_bf16
            qkv = torch.empty((b, m, (H + 2 * K) * D), dtype=dt)
            y = torch.empty((b, m, E), dtype=dt)
            gu = torch.empty((b, m, 2 * I), dtype=dt)
            qkvp, yp, gup = qkv.data_ptr(), y.data_ptr(), gu.data_ptr()
            NQ = qkv.shape[-1]
        else:
            lin = self._vlin if exact and m > 1 else (lambda z, _name, w, pp=None, bias=None: self._lin(z, w, pp, bias))
        lib.rft_add_rmsnorm(xp, None, self.layers[0]["ln1"].data_ptr(), hp, rows, E, eps)
        n = len(self.layers)
        for i, lw in enumerate(self.layers):
            nxt = (self.layers[i + 1]["ln1"] if i + 1 < n else self.norm).data_ptr()
            kpi, vpi = kp + i * layer_bytes, vp + i * layer_bytes
            if self.gemm:
                b32 = lw["bqkv32"]
                gemm(hp, rows, E, lw["wqkv_vnni"].data_ptr(), NQ, b32.data_ptr() if b32 is not None else None, qkvp, 0)
                lib.rft_attention(qkvp, *cs, kpi, vpi, *tail)
                gemm(op, rows, H * D, lw["wo_vnni"].data_ptr(), E, None, yp, 0)
                lib.rft_add_rmsnorm(xp, yp, lw["ln2"].data_ptr(), hp, rows, E, eps)
                gemm(hp, rows, E, lw["wgu_vnni"].data_ptr(), 2 * I, None, gup, 0)
                lib.rft_silu_mul(gup, ap, rows, I)
                gemm(ap, rows, I, lw["wd_vnni"].data_ptr(), E, None, yp, 0)
                lib.rft_add_rmsnorm(xp, yp, nxt, hp, rows, E, eps)
            else:
                qkv = lin(h, "wqkv", lw["wqkv"], lw.get("wqkv_pp"), lw["bqkv"]).contiguous()  # [b, m, (H+2K)*D]
                lib.rft_attention(qkv.data_ptr(), *cs, kpi, vpi, *tail)
                y = lin(o, "wo", lw["wo"], lw.get("wo_pp")).contiguous()
                lib.rft_add_rmsnorm(xp, y.data_ptr(), lw["ln2"].data_ptr(), hp, rows, E, eps)
                gu = lin(h, "wgu", lw["wgu"], lw.get("wgu_pp")).contiguous()  # [b, m, 2I]
                lib.rft_silu_mul(gu.data_ptr(), ap, rows, I)
                y = lin(act, "wd", lw["wd"], lw.get("wd_pp")).contiguous()
                lib.rft_add_rmsnorm(xp, y.data_ptr(), nxt, hp, rows, E, eps)
        if last_only is None:
            return None
        hl = h[:, -1:].contiguous() if last_only else h  # [b, 1 or m, E]
        if self.gemm:
            V = self.head.shape[0]
            logits = torch.empty((b, hl.shape[1], V), dtype=torch.float32)
            lib.rft_gemm_bf16(hl.data_ptr(), hl.shape[0] * hl.shape[1], E, self.packed["head_vnni"].data_ptr(), V,
                              None, logits.data_ptr(), 1)
        else:
            logits = lin(hl, "head", self.head, self.packed.get("head")).float()
        return logits[:, 0] if last_only else logits  # [b, V] or [b, m, V]

    # -- multi-token verify and rollback (predicted outputs / speculative decoding) -----------------
    # `verify` must give bit for bit what m `decode` calls give: in bf16 a one-ulp difference in a logit or a
    # cached K/V flips greedy near-ties, and the output would no longer be the one decoding without a draft
    # gives. A kernel may round a product of m rows differently from m one-row products (another kernel, other
    # blocking; e.g. torch switches bf16 matmuls to oneDNN above a size threshold), so:
    #  - attention runs one query at a time with exactly decode's shapes (query i sees t+i+1 keys): exact by
    #    construction, since the key count differs per query and no probe could cover every cache length;
    #  - each weight product runs on all m rows at once only if a probe found it row-invariant for m rows
    #    (shapes there do not depend on the cache length, so the probe covers every m up to `PROBE_ROWS`).
    PROBE_ROWS = 33  # 1 + the longest draft the predicted-output loop sends (DraftCursor.k_max)

    def _vlin(self, x, name, w, packed=None, bias=None):
        """`_lin` for x [b, m, E] with rows bit-identical to m one-row calls (what decode computes)."""
        m = x.shape[1]
        if m == 1 or m in self._row_invariant[1].get(name, ()):
            return self._lin(x, w, packed, bias)
        return torch.cat([self._lin(x[:, j : j + 1], w, packed, bias) for j in range(m)], 1)

    @torch.inference_mode()
    def _probe_row_invariant(self) -> dict[str, set[int]]:
        """For each weight product ("wqkv", "wo", "wgu", "wd", "head"): the row counts m <= PROBE_ROWS for which
        one call on m rows equals m one-row calls bit for bit.

        Kernel choice depends on shapes (and the packed layout), not on values, so the probe uses synthetic
        matrices of the same shapes, packed the same way, built so that the summation order shows: every
        output sums two products of +-2^24 that cancel exactly plus many small ones, and the small ones lose
        their low bits when they are added while the running sum is large. Two kernels that group the sum
        differently then disagree in the leading bits of many outputs, not in one rounding in a thousand (as
        they would on ordinary values)."""
        g = torch.Generator(device="cpu").manual_seed(0)
        R = self.PROBE_ROWS
        lw = self.layers[0]
        shapes = {"wqkv": (lw["wqkv"], lw["bqkv"]), "wo": (lw["wo"], None), "wgu": (lw["wgu"], None),
                  "wd": (lw["wd"], None), "head": (self.head, None)}
        big = 2.0**12
        found: dict[str, set[int]] = {}
        for name, (w_real, b_real) in shapes.items():
            N, E = w_real.shape
            hot = torch.randperm(E, generator=g)[:16]  # the features that carry the large values
            w = torch.rand((N, E), generator=g) * 2 - 1  # [N, E]
            w[:, hot] = 0.0
            pair = torch.stack([torch.randperm(16, generator=g)[:2] for _ in range(N)])  # [N, 2] two hot features per output
            rows = torch.arange(N)
            w[rows, hot[pair[:, 0]]] = big
            w[rows, hot[pair[:, 1]]] = -big
            x = torch.rand((1, R, E), generator=g) * 2 - 1  # [1, R, E]
            x[0][:, hot] = big * torch.where(torch.rand((R, 1), generator=g) < 0.5, -1.0, 1.0)  # same sign per row
            w = w.to(self.dtype).to(self.device).contiguous()
            x = x.to(self.dtype).to(self.device)
            bias = torch.zeros_like(b_real) if b_real is not None else None
            packed = None
            if self.prepack:
                packed = torch.ops.mkldnn._reorder_linear_weight(w, 32)
            one = torch.cat([self._lin(x[:, j : j + 1], w, packed, bias) for j in range(R)], 1)  # [1, R, N]
            found[name] = {m for m in range(2, R + 1) if torch.equal(self._lin(x[:, :m], w, packed, bias), one[:, :m])}
        return found

    def _attn_rows(self, q, keys, vals, biases):
        """q [b, H, m, D], keys/vals [b, K, S, D], biases[i] [b, 1, 1, t+i+1] -> [b, m, H*D]: decode's attention
        for each new query in turn, with decode's shapes, layouts and ops."""
        b, H, m, D = q.shape
        K = self.n_kv
        qs = q.transpose(1, 2)  # [b, m, H, D]
        out = []
        for j, bias in enumerate(biases):
            n = bias.shape[-1]
            qg = qs[:, j].reshape(b, K, H // K, D)  # [b, K, G, D], as decode's q.view(b, K, G, D)
            scores = torch.matmul(qg, keys[:, :, :n].transpose(-1, -2)).float() * self.scale  # [b, K, G, n]
            probs = torch.softmax(scores + bias, dim=-1).to(self.dtype)
            out.append(torch.matmul(probs, vals[:, :, :n]).reshape(b, 1, H * D))  # [b, 1, H*D]
        return torch.cat(out, 1)  # [b, m, H*D]

    @torch.inference_mode()
    def verify(self, toks: torch.Tensor, state: dict) -> torch.Tensor:
        """toks [b, m] -> logits [b, m, V] fp32; row i is the distribution of the token after toks[:, :i+1].

        Runs m tokens in one pass at the next m positions, writing their K/V at cache index [t, t+m) and
        advancing the state by m, with bit for bit the results of m `decode` calls (see the note above): the
        weight products, which dominate decode, run on all m rows at once where that is exact. `rewind` drops
        the tail again when only a prefix of the m tokens is kept."""
        if not self.gemm and (self._row_invariant is None or self._row_invariant[0] != torch.get_num_threads()):
            self._row_invariant = (torch.get_num_threads(), self._probe_row_invariant())  # kernels may split by threads
        if self.kern is not None:
            m, t = toks.shape[1], state["t"]
            if t + m > state["k"].shape[3]:
                raise ValueError(f"verify: {m} tokens at position {t} overflow the KV cache "
                                 f"({state['k'].shape[3]} slots)")
            return self._advance_kernels(toks, state)
        b, m = toks.shape
        t = state["t"]
        kc, vc, valid = state["k"], state["v"], state["valid"]
        S = t + m
        if S > kc.shape[3]:
            raise ValueError(f"verify: {m} tokens at position {t} overflow the KV cache ({kc.shape[3]} slots)")
        dev = self.device
        valid[:, t:S] = True
        pos = state["pos"][:, None] + torch.arange(m, device=dev)  # [b, m]
        cos, sin = self._cos_sin(pos)
        x = F.embedding(toks, self.embed)  # [b, m, E]
        H, K, D = self.n_heads, self.n_kv, self.head_dim
        biases = []  # query j sees the first t+j+1 keys, as decode does
        for j in range(m):
            bias = torch.zeros((b, 1, 1, t + j + 1), dtype=torch.float32, device=dev)  # [b, 1, 1, t+j+1]
            biases.append(bias.masked_fill_(~valid[:, None, None, : t + j + 1], float("-inf")))
        for i, lw in enumerate(self.layers):
            h = self._rms(x, lw["ln1"])
            qkv = self._vlin(h, "wqkv", lw["wqkv"], lw.get("wqkv_pp"), lw["bqkv"])  # [b, m, (H + 2K) * D]
            q = qkv[..., : H * D].view(b, m, H, D).transpose(1, 2)  # [b, H, m, D]
            k = qkv[..., H * D : (H + K) * D].view(b, m, K, D).transpose(1, 2)  # [b, K, m, D]
            v = qkv[..., (H + K) * D :].view(b, m, K, D).transpose(1, 2)  # [b, K, m, D]
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            kc[i, :, :, t:S] = k
            vc[i, :, :, t:S] = v
            o = self._attn_rows(q, kc[i, :, :, :S], vc[i, :, :, :S], biases)  # [b, m, H*D]
            x = x + self._vlin(o, "wo", lw["wo"], lw.get("wo_pp"))
            h = self._rms(x, lw["ln2"])
            gu = self._vlin(h, "wgu", lw["wgu"], lw.get("wgu_pp"))  # [b, m, 2I]
            g, u = gu.chunk(2, dim=-1)
            x = x + self._vlin(F.silu(g) * u, "wd", lw["wd"], lw.get("wd_pp"))
        state["t"] = S
        state["pos"] = state["pos"] + m
        x = self._rms(x, self.norm)  # [b, m, E]
        return self._vlin(x, "head", self.head, self.packed.get("head")).float()  # [b, m, V]

    @staticmethod
    @torch.inference_mode()
    def rewind(state: dict, n: int) -> None:
        """Forget the last n cached positions (rejected draft tokens). Their K/V slots stay in memory but are
        marked invalid and are overwritten by the next write; positions move back by n."""
        if n <= 0:
            return
        t = state["t"]
        state["valid"][:, t - n : t] = False
        state["t"] = t - n
        state["pos"] = state["pos"] - n
