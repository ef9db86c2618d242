"""A lean decoder for Llama-family models (llama, qwen2, qwen3, mistral, phi3; `engine/archs.py` decides which
model gets it and says why), used by the local engine for generation.

Why: transformers' generic forward rebuilds attention masks, concatenates its KV cache every step and runs
seven separate projections per layer. At decode batch sizes on a CPU those costs dominate. This decoder
reads the same weights, packs q/k/v and gate/up into single matrices in the compute dtype (bf16 where the
CPU is fast at it) and keeps a preallocated KV cache.

One layer stack, `forward(toks, pos, state)` (after gpt-fast's `forward(idx, input_pos)`): m new tokens per row
are written to the cache at the next m slots and attend to the valid slots up to their own. Prefill is a
forward over the prompt, `verify` a forward over m draft tokens, and `decode` is `verify` of one token.
The layer step inside it has two implementations:
- `_KernelLayers`, bf16 on CPU (the default where the CPU has bf16 instructions): per layer, three C calls of
  `cpu_kernels` (RMSNorm + residual, rotary + KV write + attention, SiLU-gate; compiled on first use) between
  four weight products, which run in the C AVX512-BF16 GEMM (weights packed for it at `sync()`; ~1.5x oneDNN at
  decode sizes on a CPU without AMX) or in oneDNN: on CPUs without AVX512-BF16, and on CPUs with AMX tiles,
  where oneDNN's matmuls beat the C GEMM (measured on the embedded model at batch 16: 405 against 310 tokens/s;
  `RFT_CPU_GEMM=1` / `0` forces one or the other). The residual stream and all accumulation are
  float32, so this path tracks the fp32 model more closely than bf16 PyTorch ops do. Measured at batch 16: a
  decode step ~19 ms against ~45 ms for the PyTorch path (bench/README.md).
- `_TorchLayers`, PyTorch ops (fp32, CUDA, no C compiler, or `RFT_CPU_KERNELS=0`).

Equivalence: in fp32 it reproduces the transformers forward up to float summation order; a test checks
greedy outputs are identical to `model.generate` on the embedded model.

Predicted outputs: `verify` runs m tokens in one pass against the cache and `rewind` forgets the last n
cached positions (marks them invalid and moves the write index back, so rejected draft tokens' K/V are
overwritten by the next write). `verify` gives bit for bit the logits and K/V of m `decode` steps: forward's
`exact` mode computes every row as a one-token step would. On the C kernels that holds by construction (every
row is computed by the same code whatever the row count). On the PyTorch path attention runs query by query
with a one-token step's shapes, and a weight product runs on all m rows at once only where a probe (on first
use) found it row-invariant; in bf16 on AVX512-BF16 that is every product but the MLP down projection.
Prefill is not exact (it attends and multiplies all rows at once), which is fine: nothing compares it to steps.

Architectures: qwen2's q/k/v biases are added in the qkv product; qwen3's per-head q/k RMSNorms run on the
qkv product's output before rotary; phi3's fused `qkv_proj` and `gate_up_proj` are already the packed layout
([q; k; v], [gate; up]) and are copied as they are. Sliding-window layers (mistral, phi3, qwen2 with
use_sliding_window): a query sees the keys fewer than `window` positions back (positions, not cache slots, so
padding never counts; transformers' rule for unpadded rows). A batch whose prompt + new tokens fit in the window
runs as usual; a longer one runs its whole generation on the PyTorch path with windowed masks (the C attention
kernel has no window), decided once at prefill so decode and verify stay bit for bit alike.

Limits: one device, RoPE via the model's own rotary module (so scaled RoPE variants work; partial rotary is
refused in archs.py), LoRA adapters are merged into the packed copy at `sync()` time.
Run its tests: `.venv/bin/python -m pytest -q tests/test_cpu_kernels.py tests/test_engine_predicted.py`.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rft.engine import archs, cpu_kernels
from rft.engine.decoder import DecoderState
from rft.models import quant

SUPPORTED_TYPES = tuple(archs.FAST_TYPES)
log = logging.getLogger("rft.engine")


def supports(model, *, quiet: bool = False) -> bool:
    """Whether the fast decoder runs `model` (the decision and its reason: `archs.engine_for`). Logs the choice
    in one line (the local engine calls this once per engine) unless `quiet`."""
    base = _unwrap(model)
    name, reason = archs.engine_for(base.config)
    if name == archs.FAST and not (hasattr(base, "model") and hasattr(base.model, "layers")):
        name, reason = archs.TRANSFORMERS, f"{reason}; but the module layout is not model.layers"
    if not quiet:
        log.info("engine %s (%s)", name, reason)
    return name == archs.FAST


def _unwrap(model):
    """The transformers causal LM under a peft wrapper (or the model itself)."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def config_dims(cfg) -> tuple[int, int, int, float, int]:
    """(query heads, KV heads, head size, RMSNorm epsilon, layers) from a Llama-family config: what every decoder
    here (this one and `cuda_decode.StaticDecoder`) reads the same way."""
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return n_heads, n_kv, head_dim, cfg.rms_norm_eps, cfg.num_hidden_layers


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """The CPU has AMX bf16 tiles (Linux /proc/cpuinfo flags): oneDNN's bf16 matmuls then beat the C GEMM."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


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
    """Weight of a Linear, with any active LoRA adapter merged in (without modifying the module); an int8 base
    layer (rft.lora.quantize_base) contributes its dequantised weight (`rft.models.quant.dense_weight`)."""
    if hasattr(linear, "base_layer") and hasattr(linear, "get_delta_weight"):
        base = linear.base_layer
        w = quant.dense_weight(base) if quant.is_int8(base) else base.weight
        if getattr(linear, "merged", False) or getattr(linear, "disable_adapters", False):
            return w
        for name in linear.active_adapters:
            if name in linear.lora_A:
                w = w + linear.get_delta_weight(name)
        return w
    return linear.weight


def _layer_weights(layer) -> dict:
    """One decoder layer's weights in the packed layout (fused qkv [q; k; v], fused [gate; up])."""
    a, m = layer.self_attn, layer.mlp
    if hasattr(a, "qkv_proj"):  # phi3: already fused in this order
        wqkv, bqkv = effective_weight(a.qkv_proj), effective_bias(a.qkv_proj)
    else:
        wqkv = torch.cat([effective_weight(a.q_proj), effective_weight(a.k_proj), effective_weight(a.v_proj)], 0)
        biases = [effective_bias(a.q_proj), effective_bias(a.k_proj), effective_bias(a.v_proj)]
        bqkv = torch.cat(biases, 0) if all(b is not None for b in biases) else None
    if hasattr(m, "gate_up_proj"):  # phi3: [gate; up]
        wgu = effective_weight(m.gate_up_proj)
    else:
        wgu = torch.cat([effective_weight(m.gate_proj), effective_weight(m.up_proj)], 0)
    return {
        "wqkv": wqkv,
        "bqkv": bqkv,
        "wo": effective_weight(a.o_proj),
        "wgu": wgu,
        "wd": effective_weight(m.down_proj),
        "ln1": layer.input_layernorm.weight,
        "ln2": layer.post_attention_layernorm.weight,
        "qn": a.q_norm.weight if hasattr(a, "q_norm") else None,  # qwen3: RMSNorm over each head, before rotary
        "kn": a.k_norm.weight if hasattr(a, "k_norm") else None,
    }


def effective_bias(linear):
    if hasattr(linear, "base_layer"):
        linear = linear.base_layer
    return linear.bias


class FastDecoder:
    """The fast decoder (see the module docstring); implements `engine.decoder.Decoder`."""

    exact_verify = True  # verify equals decode steps bit for bit, so predicted outputs can draft

    def __init__(self, model, dtype: torch.dtype, kernels: bool | None = None, gemm: bool | None = None):
        """kernels=False: the PyTorch path even where the C kernels would run. gemm=False: with the C kernels,
        keep the weight products in oneDNN (what CPUs without AVX512-BF16 get)."""
        self.src = model
        self.dtype = dtype
        base = _unwrap(model)
        cfg = base.config
        self.n_heads, self.n_kv, self.head_dim, self.eps, self.n_layers = config_dims(cfg)
        self.rotary = base.model.rotary_emb
        self.windows = archs.layer_windows(cfg)  # per layer: sliding window or None
        self.window = min((w for w in self.windows if w), default=None)
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
            self.kern = cpu_kernels.load()
        # ... and, on CPUs with AVX512-BF16, the weight products too (faster than oneDNN at decode sizes)
        if gemm is None:  # auto: the C GEMM unless oneDNN has AMX tiles to use (or the user says otherwise)
            env = os.environ.get("RFT_CPU_GEMM", "").strip().lower()
            gemm = env in ("1", "true", "yes", "on") if env else not cpu_has_amx()
        self.gemm = bool(gemm and self.kern is not None and self.kern.has_gemm and _vnni_shapes_ok(_unwrap(model)))
        if self.gemm:
            self.prepack = False
        self.packed: dict = {}
        self._row_invariant: tuple[int, dict[str, set[int]]] | None = None  # (threads, probe result), see _product
        self.sync()

    @torch.no_grad()
    def sync(self) -> None:
        """(Re)build the packed compute-dtype weights from the source model's current parameters."""
        base = _unwrap(self.src)
        dt = self.dtype
        first = not self.layers
        for i, layer in enumerate(base.model.layers):
            new = _layer_weights(layer)
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

    def _cos_sin(self, pos):
        cos, sin = self.rotary(self.embed[:1], pos)  # [b, L, D]
        return cos.to(self.dtype)[:, None], sin.to(self.dtype)[:, None]

    # -- the one layer stack -------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, toks: torch.Tensor, pos: torch.Tensor, state: DecoderState, *, exact: bool = True,
                logits: str | None = "all"):
        """toks/pos [b, m] -> logits fp32 [b, m, V] (logits="all"), [b, V] (logits="last", the last position
        only) or None (logits=None: only fill the cache).

        The m new tokens of cache rows [0, b) are written at slots [state.t, state.t + m) and attend to the slots
        `state.valid` marks, up to their own (the caller marks the new ones). The state is not advanced here.
        exact=True (decode, verify): every row comes out bit for bit as a one-token step would compute it (see
        the note on verify below); exact=False (prefill): attention and products run on all m rows at once."""
        m, t = toks.shape[1], state.t
        slots = state.cache.k.shape[3]
        if t + m > slots:
            raise ValueError(f"fast decoder: {m} tokens at position {t} overflow the KV cache ({slots} slots)")
        torch_path = self.kern is None or state.cache.windowed
        if exact and m > 1 and (torch_path or not self.gemm):
            self._probe_if_needed()
        stack = (_TorchLayers if torch_path else _KernelLayers)(self, toks, pos, state, exact)
        for i, lw in enumerate(self.layers):
            stack.layer(i, lw)
        return stack.logits(logits)

    # -- prefill, decode, verify ---------------------------------------------------------------------
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
        # a sequence longer than a sliding window: windowed masks, on the PyTorch path for the whole generation
        windowed = self.window is not None and T > self.window
        state = DecoderState(cache=KVCache(kc, torch.empty_like(kc), windowed), valid=valid, t=0, pos=pos[:, -1] + 1)
        p = shared_prefix if 0 < shared_prefix < L else 0
        if p:  # the shared prefix once, for row 0; its K/V copied to the other rows
            self.forward(input_ids[:1, :p], pos[:1, :p], state, exact=False, logits=None)
            for c in (state.cache.k, state.cache.v):
                c[:, 1:, :, :p] = c[:, :1, :, :p]
            state.t = p
        logits = self.forward(input_ids[:, p:], pos[:, p:], state, exact=False, logits="last")  # [B, V]
        state.t = L
        return logits, state

    @torch.inference_mode()
    def verify(self, toks: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """toks [b, m] -> logits [b, m, V] fp32; row i is the distribution of the token after toks[:, :i+1].

        Runs m tokens in one pass at the next m positions, writing their K/V at cache slots [t, t+m) and
        advancing the state by m, with bit for bit the results of m `decode` calls (see the note below): the
        weight products, which dominate decode, run on all m rows at once where that is exact. `rewind` drops
        the tail again when only a prefix of the m tokens is kept."""
        m, t = toks.shape[1], state.t
        if t + m > state.valid.shape[1]:
            raise ValueError(f"verify: {m} tokens at position {t} overflow the KV cache "
                             f"({state.valid.shape[1]} slots)")
        state.valid[:, t : t + m] = True
        pos = state.pos[:, None] + torch.arange(m, device=self.device)  # [b, m]
        logits = self.forward(toks, pos, state, exact=True)  # [b, m, V]
        state.t = t + m
        state.pos = state.pos + m
        return logits

    def decode(self, tok: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """tok [b] -> logits [b, V] fp32 for the next position; advances the state in place. Verify of one token."""
        return self.verify(tok[:, None], state)[:, 0]

    @staticmethod
    @torch.inference_mode()
    def rewind(state: DecoderState, n: int) -> None:
        """Forget the last n cached positions (rejected draft tokens). Their K/V slots stay in memory but are
        marked invalid and are overwritten by the next write; positions move back by n."""
        if n <= 0:
            return
        t = state.t
        state.valid[:, t - n : t] = False
        state.t = t - n
        state.pos = state.pos - n

    @staticmethod
    def repeat(state: DecoderState, n: int) -> DecoderState:
        """Repeat every row n times (n completions share one prefill)."""
        kv = state.cache
        return DecoderState(cache=KVCache(kv.k.repeat_interleave(n, dim=1), kv.v.repeat_interleave(n, dim=1), kv.windowed),
                            valid=state.valid.repeat_interleave(n, dim=0), t=state.t,
                            pos=state.pos.repeat_interleave(n, dim=0))

    @staticmethod
    def select(state: DecoderState, rows: torch.Tensor) -> DecoderState:
        """Keep only `rows` (drop finished sequences); compacts the cache up to the filled length."""
        kv, t = state.cache, state.t
        k, v = kv.k[:, rows], kv.v[:, rows]  # [n_layers, b, K, T, D]
        if t:  # the C kernels need contiguous caches
            k, v = k.contiguous(), v.contiguous()
        return DecoderState(cache=KVCache(k, v, kv.windowed), valid=state.valid[rows], t=t, pos=state.pos[rows])

    # -- exact multi-row products (verify) -------------------------------------------------------------
    # `verify` must give bit for bit what m `decode` calls give: in bf16 a one-ulp difference in a logit or a
    # cached K/V flips greedy near-ties, and the output would no longer be the one decoding without a draft
    # gives. A kernel may round a product of m rows differently from m one-row products (another kernel, other
    # blocking; e.g. torch switches bf16 matmuls to oneDNN above a size threshold), so:
    #  - attention runs one query at a time with exactly a one-token step's shapes (query i sees t+i+1 keys):
    #    exact by construction, since the key count differs per query and no probe could cover every length;
    #  - each weight product runs on all m rows at once only if a probe found it row-invariant for m rows
    #    (shapes there do not depend on the cache length, so the probe covers every m up to `PROBE_ROWS`).
    PROBE_ROWS = 33  # 1 + the longest draft the predicted-output loop sends (DraftCursor.k_max)

    def _product(self, x, name, w, packed=None, bias=None, *, exact: bool):
        """`_lin` for x [b, m, E]; with `exact`, rows bit-identical to m one-row calls (what decode computes)."""
        m = x.shape[1]
        if not exact or m == 1 or m in self._row_invariant[1].get(name, ()):
            return self._lin(x, w, packed, bias)
        return torch.cat([self._lin(x[:, j : j + 1], w, packed, bias) for j in range(m)], 1)

    def _probe_if_needed(self) -> None:
        if self._row_invariant is None or self._row_invariant[0] != torch.get_num_threads():
            self._row_invariant = (torch.get_num_threads(), self._probe_row_invariant())  # kernels may split by threads

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
        """q [b, H, m, D], keys/vals [b, K, S, D], biases[i] [b, 1, 1, t+i+1] -> [b, m, H*D]: a one-token step's
        attention for each new query in turn, with its shapes, layouts and ops."""
        b, H, m, D = q.shape
        K = self.n_kv
        qs = q.transpose(1, 2)  # [b, m, H, D]
        out = []
        for j, bias in enumerate(biases):
            n = bias.shape[-1]
            qg = qs[:, j].reshape(b, K, H // K, D)  # [b, K, G, D] heads grouped by their kv head (h uses h // G)
            scores = torch.matmul(qg, keys[:, :, :n].transpose(-1, -2)).float() * self.scale  # [b, K, G, n]
            probs = torch.softmax(scores + bias, dim=-1).to(self.dtype)
            out.append(torch.matmul(probs, vals[:, :, :n]).reshape(b, 1, H * D))  # [b, 1, H*D]
        return torch.cat(out, 1)  # [b, m, H*D]


@dataclass(eq=False)
class KVCache:
    """The fast decoder's preallocated K/V: slot j of row r holds that row's token j (`DecoderState.valid`)."""

    k: torch.Tensor  # [n_layers, b, K, T, D]
    v: torch.Tensor  # [n_layers, b, K, T, D]
    windowed: bool = False  # the sequence exceeds a sliding window: every forward takes the PyTorch path


class _TorchLayers:
    """The layer step in PyTorch ops, for one forward of toks/pos [b, m] (see `FastDecoder.forward`). The
    residual stream stays in the compute dtype."""

    def __init__(self, dec: FastDecoder, toks, pos, state: DecoderState, exact: bool):
        self.dec, self.exact = dec, exact
        b, m = toks.shape
        t = state.t
        S = t + m
        self.b, self.m, self.t, self.S = b, m, t, S
        self.kc, self.vc = state.cache.k, state.cache.v  # [n_layers, >=b, K, T, D]
        self.cos, self.sin = dec._cos_sin(pos)  # [b, 1, m, D]
        self.x = F.embedding(toks, dec.embed)  # [b, m, E] residual stream
        self.valid, self.pos = state.valid[:b], pos  # [b, T], [b, m]
        # windowed masks only for a sequence marked at prefill (shorter ones never reach a window)
        self.windowed = bool(state.cache.windowed)
        self.masks: dict[int | None, object] = {}  # window -> biases (exact) or mask, built on first use

    def _masks(self, window: int | None):
        """Exact: per query j a bias [b, 1, 1, t+j+1] over the first t+j+1 slots (a one-token step's shapes);
        else one bool mask [b, 1, m, S]. Keys: valid slots up to the query's own, and with a window only those
        fewer than `window` positions back (positions count real tokens only: cumsum of valid)."""
        if window in self.masks:
            return self.masks[window]
        b, m, t, S = self.b, self.m, self.t, self.S
        valid, dev = self.valid, self.dec.device
        kpos = valid[:, :S].long().cumsum(-1) - 1  # [b, S] position of each valid slot
        if self.exact:  # query j sees the first t+j+1 slots, as the one-token step at slot t+j does
            out = []
            for j in range(m):
                see = valid[:, : t + j + 1]  # [b, t+j+1]
                if window is not None:
                    see = see & (self.pos[:, j : j + 1] - kpos[:, : t + j + 1] < window)
                bias = torch.zeros((b, 1, 1, t + j + 1), dtype=torch.float32, device=dev)  # [b, 1, 1, t+j+1]
                out.append(bias.masked_fill_(~see[:, None, None], float("-inf")))
        else:
            causal = torch.ones((m, S), dtype=torch.bool, device=dev).tril(diagonal=t)  # [m, S] query j sees slots <= t+j
            mask = causal[None] & valid[:, None, :S]  # [b, m, S]
            if window is not None:
                mask &= (self.pos[:, :, None] - kpos[:, None, :]) < window  # [b, m, S]
            mask[:, torch.arange(m), t + torch.arange(m)] = True  # pad queries see themselves (no NaN)
            out = mask[:, None]  # [b, 1, m, S]
        self.masks[window] = out
        return out

    def layer(self, i: int, lw: dict) -> None:
        dec, b, m, t, S, exact = self.dec, self.b, self.m, self.t, self.S, self.exact
        H, K, D = dec.n_heads, dec.n_kv, dec.head_dim
        h = dec._rms(self.x, lw["ln1"])  # [b, m, E]
        qkv = dec._product(h, "wqkv", lw["wqkv"], lw.get("wqkv_pp"), lw["bqkv"], exact=exact)  # [b, m, (H + 2K) * D]
        q = qkv[..., : H * D].view(b, m, H, D)  # [b, m, H, D]
        k = qkv[..., H * D : (H + K) * D].view(b, m, K, D)  # [b, m, K, D]
        v = qkv[..., (H + K) * D :].view(b, m, K, D).transpose(1, 2)  # [b, K, m, D]
        if lw["qn"] is not None:  # qwen3: RMSNorm over each head's D features
            q, k = dec._rms(q, lw["qn"]), dec._rms(k, lw["kn"])
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [b, H, m, D], [b, K, m, D]
        q, k = dec._rope(q, self.cos, self.sin), dec._rope(k, self.cos, self.sin)
        window = dec.windows[i] if self.windowed else None
        self.kc[i, :b, :, t:S] = k
        self.vc[i, :b, :, t:S] = v
        keys, vals = self.kc[i, :b, :, :S], self.vc[i, :b, :, :S]  # [b, K, S, D]
        if exact:
            o = dec._attn_rows(q, keys, vals, self._masks(window))  # [b, m, H*D]
        else:
            if H > K:
                keys = keys.repeat_interleave(H // K, dim=1)  # [b, H, S, D]
                vals = vals.repeat_interleave(H // K, dim=1)
            o = F.scaled_dot_product_attention(q, keys, vals, attn_mask=self._masks(window), scale=dec.scale)  # [b, H, m, D]
            o = o.transpose(1, 2).reshape(b, m, -1)  # [b, m, H*D]
        self.x = self.x + dec._product(o, "wo", lw["wo"], lw.get("wo_pp"), exact=exact)
        h = dec._rms(self.x, lw["ln2"])
        gu = dec._product(h, "wgu", lw["wgu"], lw.get("wgu_pp"), exact=exact)  # [b, m, 2I]
        g, u = gu.chunk(2, dim=-1)
        self.x = self.x + dec._product(F.silu(g) * u, "wd", lw["wd"], lw.get("wd_pp"), exact=exact)

    def logits(self, which: str | None):
        dec = self.dec
        if which is None:
            return None
        if which == "last":
            x = dec._rms(self.x[:, -1], dec.norm)  # [b, E]
            return dec._lin(x, dec.head, dec.packed.get("head")).float()  # [b, V]
        x = dec._rms(self.x, dec.norm)  # [b, m, E]
        return dec._product(x, "head", dec.head, dec.packed.get("head"), exact=self.exact).float()  # [b, m, V]


class _KernelLayers:
    """The layer step on the fused C kernels, for one forward of toks/pos [b, m] (see `FastDecoder.forward`).

    The C kernels run everything between the weight products, on a float32 residual stream; the weight products
    run in the C GEMM (AVX512-BF16) or oneDNN. Rows are computed independently of m: with the C GEMM by
    construction, with oneDNN via `_product(exact=True)`. Each layer ends with the next layer's input norm
    (fused with the residual add). Per-layer calls pass raw pointers (ctypes releases the GIL); the tensors
    are checked here, once."""

    def __init__(self, dec: FastDecoder, toks, pos, state: DecoderState, exact: bool):
        kc, vc, valid = state.cache.k, state.cache.v, state.valid
        if not (kc.is_contiguous() and vc.is_contiguous() and valid.is_contiguous()):
            raise ValueError("fast decoder: the KV cache must be contiguous for the C kernels")
        b, m = toks.shape
        t = state.t
        if kc.dtype != torch.bfloat16 or vc.shape != kc.shape or valid.dtype != torch.bool or t + m > kc.shape[3]:
            raise ValueError("fast decoder: the KV cache is not the bf16 layout the C kernels expect")
        self.dec, self.exact, self.lib = dec, exact, dec.kern.lib
        cos, sin = dec.rotary(dec._f32_probe, pos)  # [b, m, D] fp32
        cos, sin = cos.contiguous(), sin.contiguous()
        H, K, D = dec.n_heads, dec.n_kv, dec.head_dim
        E, I = dec.embed.shape[1], dec.layers[0]["wd"].shape[1]
        self.rows, self.E, self.I, self.H, self.K, self.D = b * m, E, I, H, K, D
        dt = dec.dtype
        self.x = F.embedding(toks, dec.embed).float()  # [b, m, E] residual stream
        self.h = torch.empty((b, m, E), dtype=dt)  # normed input of the next weight product
        self.o = torch.empty((b, m, H * D), dtype=dt)  # attention output
        self.act = torch.empty((b, m, I), dtype=dt)  # silu(gate) * up
        n_ws = torch.get_num_threads()
        self.scratch = dec.kern.workspace(H, K, D, t + m, n_ws)
        self.cos, self.sin = cos, sin  # kept alive: the C calls read them through raw pointers
        self.xp, self.hp, self.op, self.ap = self.x.data_ptr(), self.h.data_ptr(), self.o.data_ptr(), self.act.data_ptr()
        self.layer_bytes = kc.stride(0) * kc.element_size()
        self.kp, self.vp = kc.data_ptr(), vc.data_ptr()
        self.cs = (cos.data_ptr(), sin.data_ptr())
        self.tail = (kc.stride(1), kc.shape[3], valid.data_ptr(), valid.stride(0), b, m, t, H, K, D, dec.scale,
                     self.op, self.scratch.data_ptr(), n_ws)
        if dec.gemm:
            self.qkv = torch.empty((b, m, (H + 2 * K) * D), dtype=dt)  # [b, m, (H+2K)*D]
            self.y = torch.empty((b, m, E), dtype=dt)  # [b, m, E] a product's output
            self.gu = torch.empty((b, m, 2 * I), dtype=dt)  # [b, m, 2I]
        self.lib.rft_add_rmsnorm(self.xp, None, dec.layers[0]["ln1"].data_ptr(), self.hp, self.rows, E, dec.eps)

    def layer(self, i: int, lw: dict) -> None:
        dec, lib, rows, E, I, eps = self.dec, self.lib, self.rows, self.E, self.I, self.dec.eps
        layers = dec.layers
        nxt = (layers[i + 1]["ln1"] if i + 1 < len(layers) else dec.norm).data_ptr()
        kpi, vpi = self.kp + i * self.layer_bytes, self.vp + i * self.layer_bytes
        hp, op, ap, xp = self.hp, self.op, self.ap, self.xp
        if dec.gemm:
            gemm = lib.rft_gemm_bf16
            qkvp, yp, gup = self.qkv.data_ptr(), self.y.data_ptr(), self.gu.data_ptr()
            b32 = lw["bqkv32"]
            gemm(hp, rows, E, lw["wqkv_vnni"].data_ptr(), self.qkv.shape[-1], b32.data_ptr() if b32 is not None else None,
                 qkvp, 0)
            self._qk_norm(self.qkv, lw)
            lib.rft_attention(qkvp, *self.cs, kpi, vpi, *self.tail)
            gemm(op, rows, self.H * self.D, lw["wo_vnni"].data_ptr(), E, None, yp, 0)
            lib.rft_add_rmsnorm(xp, yp, lw["ln2"].data_ptr(), hp, rows, E, eps)
            gemm(hp, rows, E, lw["wgu_vnni"].data_ptr(), 2 * I, None, gup, 0)
            lib.rft_silu_mul(gup, ap, rows, I)
            gemm(ap, rows, I, lw["wd_vnni"].data_ptr(), E, None, yp, 0)
            lib.rft_add_rmsnorm(xp, yp, nxt, hp, rows, E, eps)
            return
        exact = self.exact
        qkv = dec._product(self.h, "wqkv", lw["wqkv"], lw.get("wqkv_pp"), lw["bqkv"], exact=exact).contiguous()  # [b, m, (H+2K)*D]
        self._qk_norm(qkv, lw)
        lib.rft_attention(qkv.data_ptr(), *self.cs, kpi, vpi, *self.tail)
        y = dec._product(self.o, "wo", lw["wo"], lw.get("wo_pp"), exact=exact).contiguous()  # [b, m, E]
        lib.rft_add_rmsnorm(xp, y.data_ptr(), lw["ln2"].data_ptr(), hp, rows, E, eps)
        gu = dec._product(self.h, "wgu", lw["wgu"], lw.get("wgu_pp"), exact=exact).contiguous()  # [b, m, 2I]
        lib.rft_silu_mul(gu.data_ptr(), ap, rows, I)
        y = dec._product(self.act, "wd", lw["wd"], lw.get("wd_pp"), exact=exact).contiguous()  # [b, m, E]
        lib.rft_add_rmsnorm(xp, y.data_ptr(), nxt, hp, rows, E, eps)

    def _qk_norm(self, qkv: torch.Tensor, lw: dict) -> None:
        """qwen3: per-head RMSNorm of q and k, in place in the qkv buffer [b, m, (H+2K)*D] (before the kernel's
        rotary). PyTorch ops: two small calls per layer, only for models that have the norms."""
        if lw["qn"] is None:
            return
        H, K, D = self.H, self.K, self.D
        b, m = qkv.shape[:2]
        q = qkv[..., : H * D].view(b, m, H, D)  # [b, m, H, D]
        k = qkv[..., H * D : (H + K) * D].view(b, m, K, D)  # [b, m, K, D]
        q.copy_(self.dec._rms(q, lw["qn"]))
        k.copy_(self.dec._rms(k, lw["kn"]))

    def logits(self, which: str | None):
        """The final norm already ran (fused into the last layer): only the head product is left."""
        dec = self.dec
        if which is None:
            return None
        hl = self.h[:, -1:].contiguous() if which == "last" else self.h  # [b, 1 or m, E]
        if dec.gemm:
            V = dec.head.shape[0]
            logits = torch.empty((hl.shape[0], hl.shape[1], V), dtype=torch.float32)  # [b, 1 or m, V]
            self.lib.rft_gemm_bf16(hl.data_ptr(), hl.shape[0] * hl.shape[1], self.E, dec.packed["head_vnni"].data_ptr(),
                                   V, None, logits.data_ptr(), 1)
        else:
            logits = dec._product(hl, "head", dec.head, dec.packed.get("head"), exact=self.exact).float()
        return logits[:, 0] if which == "last" else logits  # [b, V] or [b, m, V]
