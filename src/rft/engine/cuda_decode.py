"""A static-shape decoder for Llama-family models: the local engine's CUDA decode path.

What it does: the decode step has one fixed shape per (rows, cache slots) pair, so on CUDA it is captured once
into a CUDA graph and then replayed, one launch per token for the whole layer stack instead of ~15 kernel
launches per layer paid from Python. The pieces:

- a static KV cache per (b, T) "slot": K/V [n_layers, b, K, T, D] in the compute dtype, the valid-slot mask
  [b, T], and the step's inputs (token [b], position [b], write index t [1]) and output (logits [b, V]) at fixed
  addresses; T is the prompt plus `max_new_tokens`, rounded up to `SLOT_MULTIPLE` so later calls reuse it;
- prefill runs separately and eagerly (one forward over the prompts with PyTorch SDPA, causal + padding
  mask), and its K/V are copied into the slot on the first decode step (also where `repeat` fans the prompt
  out to its n samples);
- the decode step attends over all T slots under the valid mask (masked slots get probability exactly 0), writes
  the new K/V with `index_copy_` at the device-side index t and reads RoPE from a precomputed cos/sin table
  indexed by the device-side positions, so nothing in it depends on a Python number;
- finished rows are not dropped (`compacts = False`): the batch keeps its shape, so the graph stays valid; on a
  GPU a decode step is bound by reading the weights, and extra rows are nearly free.

Weights: the decoder keeps packed copies in the compute dtype (q/k/v and gate/up fused into one matrix each),
allocated once. `sync()` refreshes them from the trainer's live parameters with `copy_` on the same device:
device to device, never through the CPU, and into the same buffers, so captured graphs stay valid across
optimizer steps (the trainer holds fp32 master weights; the engine computes in bf16, so a cast copy is needed
anyway; parameters are not shared). LoRA adapters are merged into the copy (`fast_llama.effective_weight`).

Use: `LocalEngine` picks it on CUDA for the architectures `supports()` accepts (backend "cuda_graph"); on CPU
it runs only when asked (`LocalEngine(..., static=True)`), eagerly, which is how its tests check it gives the
same greedy tokens as the existing decoders. `graphs=False` keeps it eager on CUDA too (for debugging).
Run its tests: `.venv/bin/python -m pytest -q tests/test_engine_cuda.py`.

Simplified: no verify/rewind (predicted outputs decode plainly on this path), no shared-prefix prefill, one
device; attention over all T slots costs O(T) per step rather than O(t) (T is bounded by the slot size);
graphs are kept for at most `MAX_SLOTS` shapes (least recently used dropped). The CUDA-graph path has NOT been
measured on a GPU yet (no GPU was lent to the session that wrote it; `bench/gpu_check.sh` is the check).
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rft.engine.decoder import DecoderState
from rft.engine.fast_llama import _unwrap, config_dims, effective_bias, effective_weight

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("llama", "qwen2", "qwen3", "mistral")
SLOT_MULTIPLE = 256  # cache slots are rounded up to this, so calls with similar lengths share one graph
MAX_SLOTS = 4  # (rows, slots) shapes kept with their caches and graphs


def supports(model) -> bool:
    """Llama-family decoder layers this module computes exactly: llama, qwen2, qwen3 (q/k norms), mistral
    (sliding window as a mask); SiLU MLP; no per-layer sliding-window mix (qwen2 with use_sliding_window)."""
    base = _unwrap(model)
    cfg = base.config
    if getattr(cfg, "model_type", None) not in SUPPORTED_TYPES:
        return False
    if cfg.model_type in ("qwen2", "qwen3") and getattr(cfg, "use_sliding_window", False):
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return False
    return hasattr(base, "model") and hasattr(base.model, "layers") and hasattr(base.model, "rotary_emb")


def attention_implementation() -> str:
    """The best attention the installed packages offer on CUDA: "flash_attention_2" when `flash_attn` imports,
    else "sdpa" (PyTorch's fused attention, which itself dispatches to a flash kernel where the inputs allow)."""
    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401
        except Exception:  # noqa: BLE001 - any import failure means: not usable
            return "sdpa"
        return "flash_attention_2"
    return "sdpa"


@dataclass(eq=False)
class PendingCache:
    """K/V not yet in a slot (after prefill, repeat or select): [n_layers, b, K, S, D] for the first S slots,
    and the slot count T the rows will need."""

    k: torch.Tensor
    v: torch.Tensor
    T: int


class Slot:
    """Fixed-address buffers of one (b, T) decode shape, and its CUDA graph once captured."""

    def __init__(self, dec: "StaticDecoder", b: int, T: int):
        dev, dt = dec.device, dec.dtype
        shape = (dec.n_layers, b, dec.n_kv, T, dec.head_dim)
        self.b, self.T = b, T
        self.k = torch.zeros(shape, dtype=dt, device=dev)  # [n_layers, b, K, T, D]
        self.v = torch.zeros(shape, dtype=dt, device=dev)  # [n_layers, b, K, T, D]
        self.valid = torch.zeros((b, T), dtype=torch.bool, device=dev)  # [b, T]
        self.tok = torch.zeros((b,), dtype=torch.long, device=dev)  # [b]
        self.pos = torch.zeros((b,), dtype=torch.long, device=dev)  # [b]
        self.t = torch.zeros((1,), dtype=torch.long, device=dev)  # [1] the slot the next K/V go to
        self.slot_ids = torch.arange(T, device=dev)  # [T]
        self.logits = torch.zeros((b, dec.vocab), dtype=torch.float32, device=dev)  # [b, V]
        self.graph = None
        self.owner = None  # weakref to the DecoderState decoding in this slot


class StaticDecoder:
    """See the module docstring; implements `engine.decoder.Decoder` (no verify/rewind)."""

    exact_verify = False
    compacts = False  # LocalEngine keeps finished rows in the batch (the step's shape is fixed)

    def __init__(self, model, dtype: torch.dtype, *, graphs: bool | None = None):
        """graphs: capture the decode step in a CUDA graph (default: on CUDA). Never on CPU."""
        self.src = model
        self.dtype = dtype
        base = _unwrap(model)
        cfg = base.config
        self.n_heads, self.n_kv, self.head_dim, self.eps, self.n_layers = config_dims(cfg)
        self.vocab = cfg.vocab_size
        self.scale = self.head_dim**-0.5
        window = getattr(cfg, "sliding_window", None) if cfg.model_type == "mistral" else None
        self.window = int(window) if window else None
        self.rotary = base.model.rotary_emb
        self.device = next(model.parameters()).device
        self.graphs = self.device.type == "cuda" if graphs is None else (graphs and self.device.type == "cuda")
        self.qk_norm = hasattr(base.model.layers[0].self_attn, "q_norm")
        self.slots: OrderedDict[tuple[int, int], Slot] = OrderedDict()
        self.layers: list[dict] = []
        self.cos = self.sin = torch.empty((0, self.head_dim), device=self.device)  # [positions, D] fp32
        self.sync()

    # -- weights -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sync(self) -> None:
        """Refresh the packed compute-dtype weights from the model's current parameters: `copy_` into the same
        buffers, on the model's device (no CPU round trip; captured graphs keep reading the same addresses)."""
        base = _unwrap(self.src)
        first = not self.layers
        for i, layer in enumerate(base.model.layers):
            a, m = layer.self_attn, layer.mlp
            parts = {
                "wqkv": [effective_weight(a.q_proj), effective_weight(a.k_proj), effective_weight(a.v_proj)],
                "bqkv": [effective_bias(a.q_proj), effective_bias(a.k_proj), effective_bias(a.v_proj)],
                "wo": [effective_weight(a.o_proj)],
                "wgu": [effective_weight(m.gate_proj), effective_weight(m.up_proj)],
                "wd": [effective_weight(m.down_proj)],
                "ln1": [layer.input_layernorm.weight],
                "ln2": [layer.post_attention_layernorm.weight],
            }
            if self.qk_norm:
                parts["qn"], parts["kn"] = [a.q_norm.weight], [a.k_norm.weight]
            if any(b is None for b in parts["bqkv"]):
                parts["bqkv"] = []
            if first:
                self.layers.append({k: (torch.cat([p.detach() for p in v], 0).to(self.dtype).contiguous() if v else None)
                                    for k, v in parts.items()})
                continue
            for k, v in parts.items():
                off = 0
                for p in v:  # slice by slice: no concatenated temporary, no new allocation
                    self.layers[i][k][off : off + p.shape[0]].copy_(p)
                    off += p.shape[0]
        emb, head = base.model.embed_tokens.weight, base.lm_head.weight
        tied = head.data_ptr() == emb.data_ptr()
        if first:
            self.embed = emb.detach().to(self.dtype, copy=True).contiguous()  # [V, E]
            self.head = self.embed if tied else head.detach().to(self.dtype, copy=True).contiguous()  # [V, E]
            self.norm = base.model.norm.weight.detach().to(self.dtype, copy=True).contiguous()  # [E]
        else:
            self.embed.copy_(emb)
            if not tied:
                self.head.copy_(head)
            self.norm.copy_(base.model.norm.weight)

    # -- building blocks ---------------------------------------------------------------------------------
    def _rms(self, x, w):
        """transformers' RMSNorm: normalise in fp32, cast back, scale."""
        x32 = x.float()
        return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    @staticmethod
    def _rope(x, cos, sin):
        """x [b, h, m, D], cos/sin [b, 1, m, D] (rotate-half convention, as transformers' Llama)."""
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def _tables(self, n: int) -> None:
        """cos/sin for positions [0, n) from the model's own rotary module (scaled RoPE variants included),
        grown to a power of two; growing drops captured graphs (they read the old table's address)."""
        if self.cos.shape[0] >= n:
            return
        size = 1 << max(8, (n - 1).bit_length())
        pos = torch.arange(size, device=self.device)[None]  # [1, size]
        probe = torch.empty((1,), dtype=torch.float32, device=self.device)
        cos, sin = self.rotary(probe, pos)  # [1, size, D]
        self.cos, self.sin = cos[0].float().contiguous(), sin[0].float().contiguous()  # [size, D]
        for s in self.slots.values():
            s.graph = None

    def _qkv(self, h, lw, b, m, cos, sin):
        """h [b, m, E] -> q [b, H, m, D], k/v [b, K, m, D] with q/k norms (qwen3) and RoPE applied."""
        H, K, D = self.n_heads, self.n_kv, self.head_dim
        qkv = F.linear(h, lw["wqkv"], lw["bqkv"])  # [b, m, (H+2K)*D]
        q = qkv[..., : H * D].view(b, m, H, D)  # [b, m, H, D]
        k = qkv[..., H * D : (H + K) * D].view(b, m, K, D)  # [b, m, K, D]
        v = qkv[..., (H + K) * D :].view(b, m, K, D).transpose(1, 2)  # [b, K, m, D]
        if self.qk_norm:
            q, k = self._rms(q, lw["qn"]), self._rms(k, lw["kn"])
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [b, H, m, D], [b, K, m, D]
        return self._rope(q, cos, sin), self._rope(k, cos, sin), v

    def _mlp_out(self, x, o, lw):
        """Residual x [b, m, E] + attention output o [b, m, H*D], then the MLP block -> [b, m, E]."""
        x = x + F.linear(o, lw["wo"])  # [b, m, E]
        g, u = F.linear(self._rms(x, lw["ln2"]), lw["wgu"]).chunk(2, dim=-1)  # [b, m, I] each
        return x + F.linear(F.silu(g) * u, lw["wd"])  # [b, m, E]

    # -- prefill (eager) ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, attn: torch.Tensor, max_new: int, shared_prefix: int = 0):
        """input_ids/attn [B, L] (left-padded) -> (last-position logits [B, V] fp32, state). The K/V stay in a
        `PendingCache` until the first decode step moves them into a slot."""
        if shared_prefix:
            raise ValueError("the static decoder has no shared-prefix prefill")
        B, L = input_ids.shape
        H, K = self.n_heads, self.n_kv
        self._tables(L + max_new)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)  # [B, L]
        valid = attn.bool()  # [B, L]
        causal = torch.ones((L, L), dtype=torch.bool, device=self.device).tril()  # [L, L]
        mask = causal[None] & valid[:, None, :]  # [B, L, L]
        mask |= torch.eye(L, dtype=torch.bool, device=self.device)[None]  # padding queries see themselves (no NaN)
        if self.window:
            mask &= ~torch.ones((L, L), dtype=torch.bool, device=self.device).tril(-self.window)[None]  # [B, L, L]
        mask = mask[:, None]  # [B, 1, L, L]
        cos, sin = self.cos[pos][:, None].to(self.dtype), self.sin[pos][:, None].to(self.dtype)  # [B, 1, L, D]
        ks = torch.empty((self.n_layers, B, K, L, self.head_dim), dtype=self.dtype, device=self.device)
        vs = torch.empty_like(ks)  # [n_layers, B, K, L, D]
        x = F.embedding(input_ids, self.embed)  # [B, L, E]
        for i, lw in enumerate(self.layers):
            q, k, v = self._qkv(self._rms(x, lw["ln1"]), lw, B, L, cos, sin)  # [B, H, L, D], [B, K, L, D] x2
            ks[i], vs[i] = k, v
            if H > K:
                k, v = k.repeat_interleave(H // K, dim=1), v.repeat_interleave(H // K, dim=1)  # [B, H, L, D]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)  # [B, H, L, D]
            x = self._mlp_out(x, o.transpose(1, 2).reshape(B, L, -1), lw)  # [B, L, E]
        logits = F.linear(self._rms(x[:, -1], self.norm), self.head).float()  # [B, V]
        state = DecoderState(cache=PendingCache(ks, vs, L + max_new), valid=valid, t=L, pos=pos[:, -1] + 1)
        return logits, state

    @staticmethod
    def repeat(state: DecoderState, n: int) -> DecoderState:
        """Every row n times (the prompt's n samples); the cache is still the prefill's, so this copies only the
        prompt's K/V."""
        c = _pending(state)
        return DecoderState(cache=PendingCache(c.k.repeat_interleave(n, 1), c.v.repeat_interleave(n, 1), c.T),
                            valid=state.valid.repeat_interleave(n, 0), t=state.t, pos=state.pos.repeat_interleave(n, 0))

    @staticmethod
    def select(state: DecoderState, rows: torch.Tensor) -> DecoderState:
        """Keep only `rows`; the next decode step moves them into a slot of the new row count."""
        c, t = _pending(state), state.t
        return DecoderState(cache=PendingCache(c.k[:, rows, :, :t], c.v[:, rows, :, :t], c.T),
                            valid=state.valid[rows, :t], t=t, pos=state.pos[rows])

    # -- decode (one fixed-shape step; a CUDA graph replay on CUDA) ------------------------------------------
    @torch.inference_mode()
    def decode(self, tok: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """tok [b] -> logits [b, V] fp32 for the next position; advances `state` in place."""
        if isinstance(state.cache, PendingCache):
            self._enter_slot(state)
        slot: Slot = state.cache
        if state.t >= slot.T:
            raise ValueError(f"static decoder: position {state.t} overflows the KV cache ({slot.T} slots)")
        slot.tok.copy_(tok)
        slot.pos.copy_(state.pos)
        slot.t.fill_(state.t)
        if slot.graph is None and self.graphs:
            self._capture(slot)
        if slot.graph is not None:
            slot.graph.replay()
        else:
            self._step(slot)
        state.t += 1
        state.pos = state.pos + 1
        return slot.logits.clone()  # [b, V] the caller may keep it past the next step

    def _step(self, s: Slot) -> None:
        """The decode step on a slot's fixed buffers: reads tok/pos/t, writes K/V at slot t and the logits."""
        b, H, K, D = s.b, self.n_heads, self.n_kv, self.head_dim
        s.valid.index_fill_(1, s.t, True)
        allowed = s.valid  # [b, T]
        if self.window:
            allowed = allowed & (s.slot_ids > s.t - self.window)[None]  # [b, T]
        bias = torch.zeros(allowed.shape, dtype=torch.float32, device=self.device).masked_fill_(~allowed, float("-inf"))
        bias = bias[:, None, None]  # [b, 1, 1, T]
        cos = self.cos[s.pos][:, None, None].to(self.dtype)  # [b, 1, 1, D]
        sin = self.sin[s.pos][:, None, None].to(self.dtype)  # [b, 1, 1, D]
        x = F.embedding(s.tok[:, None], self.embed)  # [b, 1, E]
        for i, lw in enumerate(self.layers):
            q, k, v = self._qkv(self._rms(x, lw["ln1"]), lw, b, 1, cos, sin)  # [b, H, 1, D], [b, K, 1, D] x2
            s.k[i].index_copy_(2, s.t, k)
            s.v[i].index_copy_(2, s.t, v)
            qg = q.reshape(b, K, H // K, D)  # [b, K, G, D] heads grouped by their kv head
            scores = torch.matmul(qg, s.k[i].transpose(-1, -2)).float() * self.scale  # [b, K, G, T]
            probs = torch.softmax(scores + bias, dim=-1).to(self.dtype)  # [b, K, G, T]
            o = torch.matmul(probs, s.v[i]).reshape(b, 1, H * D)  # [b, 1, H*D]
            x = self._mlp_out(x, o, lw)  # [b, 1, E]
        s.logits.copy_(F.linear(self._rms(x[:, 0], self.norm), self.head))  # [b, V]

    def _capture(self, s: Slot) -> None:
        """Record the step into a CUDA graph. Warm-up runs execute on a scratch copy of the slot's mutable
        state and are then undone, so capture does not disturb the batch in flight."""
        saved = [x.clone() for x in (s.valid, s.tok, s.pos, s.t)]
        t_saved = int(saved[3].item())
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            s.t.fill_(s.T - 1)  # warm up on the last slot, which no row has written yet
            for _ in range(2):
                self._step(s)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(s)
        for x, y in zip((s.valid, s.tok, s.pos, s.t), saved):
            x.copy_(y)
        s.k[:, :, :, s.T - 1].zero_()
        s.v[:, :, :, s.T - 1].zero_()
        s.graph = graph
        log.info("static decoder: captured a CUDA graph for %d rows x %d cache slots (t=%d)", s.b, s.T, t_saved)

    def _enter_slot(self, state: DecoderState) -> None:
        """Move a pending cache into the slot of its (rows, rounded slots) shape; the state then reads the slot."""
        c, t = state.cache, state.t
        b = c.k.shape[1]
        T = -(-c.T // SLOT_MULTIPLE) * SLOT_MULTIPLE
        self._tables(T)
        key = (b, T)
        slot = self.slots.get(key)
        if slot is not None and slot.owner is not None and slot.owner() not in (None, state):
            slot = Slot(self, b, T)  # another batch (a paused stream) still decodes in the cached one: not shared
        else:
            slot = self.slots.pop(key, None) or Slot(self, b, T)
            self.slots[key] = slot  # most recently used last
            while len(self.slots) > MAX_SLOTS:
                self.slots.popitem(last=False)
        slot.owner = weakref.ref(state)
        slot.valid.zero_()
        slot.valid[:, :t] = state.valid[:, :t]
        slot.k[:, :, :, :t] = c.k[:, :, :, :t]
        slot.v[:, :, :, :t] = c.v[:, :, :, :t]
        state.cache, state.valid = slot, slot.valid


def _pending(state: DecoderState) -> PendingCache:
    c = state.cache
    if isinstance(c, Slot):  # rows already decoding: take what is written so far out of the slot
        t = state.t
        return PendingCache(c.k[:, :, :, :t].clone(), c.v[:, :, :, :t].clone(), c.T)
    return c
