"""The decoder interface the local engine drives, its state, and the transformers fallback decoder.

A decoder turns token ids into next-token logits over a KV cache it owns:
    logits, state = dec.prefill(input_ids, attn, max_new)   # left-padded prompts [B, L] -> [B, V]
    state = dec.repeat(state, n); state = dec.select(state, rows)   # n samples per prompt; drop finished rows
    logits = dec.decode(tok, state)                         # [b] -> [b, V], advances `state` by one
and, where `exact_verify` (the fast decoder), `verify(toks, state)` ([b, m] -> [b, m, V], bit for bit m decode
steps) and `rewind(state, n)` for predicted outputs. Both decoders keep their position in one `DecoderState`.

Backends: `fast_llama.FastDecoder` for Llama-family models; `HFDecoder` (transformers forward + DynamicCache)
for every other architecture. Simplified: one device; the fallback has no verify (a multi-token transformers
forward rounds differently from single steps, so predicted requests decode plainly there).

The fallback in a lower dtype than the model's (bf16 rollouts of an fp32 policy) runs a copy of the model whose
parameters are in that dtype, refreshed by `sync()` after each optimizer step: autocast would cast every weight
on every forward, which made bf16 decoding slower than fp32 (0.68x of transformers' own bf16 generate at batch
16 on this CPU, bench/architectures.py). Buffers (rotary frequencies) stay as they are. It costs one copy of the
weights in that dtype, which the memory forecast counts (`engine_weights`).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(eq=False)
class DecoderState:
    """Where a running batch stands. Mutable on purpose: decode / verify advance it in place, as the KV cache
    they write is far too large to copy per token.

    cache: the K/V store, which only the decoder that made it reads: `fast_llama.KVCache` (preallocated
        [n_layers, b, K, T, D] tensors) or a transformers `DynamicCache`.
    valid: [b, T] bool, slot j holds a real token (False: left padding, padding after a shared prefix, a
        rewound draft token, or not written yet).
    t: slots written so far; the next token's K/V go to slot t.
    pos: [b] the position id (RoPE) of each row's next token; it lags t by the row's padding.
    """

    cache: Any
    valid: torch.Tensor
    t: int
    pos: torch.Tensor


class Decoder(Protocol):
    exact_verify: bool  # verify / rewind exist and verify equals decode steps bit for bit

    def sync(self) -> None: ...

    def prefill(self, input_ids: torch.Tensor, attn: torch.Tensor, max_new: int,
                shared_prefix: int = 0) -> tuple[torch.Tensor, DecoderState]: ...

    def repeat(self, state: DecoderState, n: int) -> DecoderState: ...

    def select(self, state: DecoderState, rows: torch.Tensor) -> DecoderState: ...

    def decode(self, tok: torch.Tensor, state: DecoderState) -> torch.Tensor: ...


class HFDecoder:
    """Fallback for architectures the fast decoder does not cover: transformers forward + DynamicCache."""

    exact_verify = False

    def __init__(self, model, dtype):
        self.source = model  # the trainer's model; `self.model` is what runs (a lower-dtype copy, or the same)
        self.dtype = dtype
        # transformers 5.x renamed `past_key_values` to `cache`
        params = inspect.signature(type(model).forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        src = next(model.parameters()).dtype
        self.model = model
        if dtype != src and dtype.itemsize < src.itemsize:
            self.model = copy.deepcopy(model)
            for p in self.model.parameters():
                p.requires_grad_(False)
                if p.is_floating_point():  # int8 base weights (rft.models.quant) stay int8
                    p.data = p.data.to(dtype)
            self.model.eval()
        # only what trains can change (LoRA: the adapters), so only that is copied on sync
        self._pairs = ([(d, s) for d, s in zip(self.model.parameters(), model.parameters()) if s.requires_grad]
                       if self.model is not model else [])

    @torch.no_grad()
    def sync(self):
        """Copy the trainer's trainable parameters into the running copy (nothing to do when there is none)."""
        for dst, src in self._pairs:
            dst.copy_(src)

    def _ctx(self):
        if next(self.model.parameters()).dtype != self.dtype:
            return torch.autocast(next(self.model.parameters()).device.type, dtype=self.dtype)
        return torch.autocast("cpu", enabled=False)

    @torch.inference_mode()
    def prefill(self, input_ids, attn, max_new, shared_prefix: int = 0):
        """input_ids/attn [B, L] (left-padded) -> (last-position logits [B, V] fp32, state)."""
        from transformers import DynamicCache

        if shared_prefix:
            raise ValueError("the transformers fallback decoder has no shared-prefix prefill")
        B, L = input_ids.shape
        cache = DynamicCache(config=self.model.config)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)  # [B, L]
        with self._ctx():
            out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=pos,
                             use_cache=True, logits_to_keep=1, **{self.cache_kw: cache})
        valid = torch.zeros((B, L + max_new), dtype=torch.bool, device=attn.device)  # [B, T]
        valid[:, :L] = attn.bool()
        return out.logits[:, -1].float(), DecoderState(cache=cache, valid=valid, t=L, pos=pos[:, -1] + 1)

    @staticmethod
    def repeat(state: DecoderState, n: int) -> DecoderState:
        state.cache.batch_repeat_interleave(n)  # in place: the DynamicCache is shared with `state`
        return DecoderState(cache=state.cache, valid=state.valid.repeat_interleave(n, 0), t=state.t,
                            pos=state.pos.repeat_interleave(n, 0))

    @staticmethod
    def select(state: DecoderState, rows: torch.Tensor) -> DecoderState:
        state.cache.batch_select_indices(rows)
        return DecoderState(cache=state.cache, valid=state.valid[rows], t=state.t, pos=state.pos[rows])

    @torch.inference_mode()
    def decode(self, tok, state: DecoderState):
        """tok [b] -> logits [b, V] fp32 for the next position; advances the state in place."""
        t = state.t
        state.valid[:, t] = True
        attn = state.valid[:, : t + 1].long()  # [b, t+1] the attention mask transformers expects
        with self._ctx():
            out = self.model(input_ids=tok[:, None], attention_mask=attn, position_ids=state.pos[:, None],
                             use_cache=True, **{self.cache_kw: state.cache})
        state.t = t + 1
        state.pos = state.pos + 1
        return out.logits[:, -1].float()
