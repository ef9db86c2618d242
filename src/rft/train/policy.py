"""The policy-side tensors of a training step: building the batch from rollouts and computing per-token
log-probabilities (with gradient) of the completions under the current model.

Only completion positions go through the LM head: the prompt's hidden states are computed (they are the
context) but never projected to the vocabulary, which saves most of the head's cost on prompt-heavy tasks.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [B, T] prompt + completion, right-padded
    attention_mask: torch.Tensor  # [B, T]
    comp_pos: torch.Tensor  # [B, Lc] index of the position whose logits predict completion token j
    comp_ids: torch.Tensor  # [B, Lc] completion token ids (pad where mask is 0)
    comp_mask: torch.Tensor  # [B, Lc] 1.0 for real completion tokens
    old_logp: torch.Tensor  # [B, Lc] rollout log-probs (temperature-scaled)
    advantages: torch.Tensor  # [B]

    def slice(self, idx: slice) -> "TrainBatch":
        return TrainBatch(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def build_batch(prompt_ids: list[list[int]], completions: list[tuple[list[int], list[float]]], advantages: torch.Tensor,
                pad_id: int) -> TrainBatch:
    B = len(prompt_ids)
    lc = max(1, max(len(c[0]) for c in completions))
    T = max(len(p) + len(c[0]) for p, c in zip(prompt_ids, completions))
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    comp_pos = torch.zeros((B, lc), dtype=torch.long)
    comp_ids = torch.full((B, lc), pad_id, dtype=torch.long)
    comp_mask = torch.zeros((B, lc), dtype=torch.float32)
    old = torch.zeros((B, lc), dtype=torch.float32)
    for i, (p, (ids, lps)) in enumerate(zip(prompt_ids, completions)):
        seq = list(p) + list(ids)
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[i, : len(seq)] = 1
        n = len(ids)
        if n:
            comp_pos[i, :n] = torch.arange(len(p) - 1, len(p) - 1 + n)
            comp_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
            comp_mask[i, :n] = 1.0
            old[i, :n] = torch.tensor(lps, dtype=torch.float32)
    return TrainBatch(input_ids, attn, comp_pos, comp_ids, comp_mask, old, advantages.float())


def _base_and_head(model):
    inner = model.get_base_model() if hasattr(model, "peft_config") else model
    return inner.model, inner.lm_head


def completion_logprobs(model, batch: TrainBatch, *, temperature: float, compute_dtype: torch.dtype,
                        with_entropy: bool = False):
    """-> (logp [B, Lc] with grad, entropy [B, Lc] detached or None)."""
    body, head = _base_and_head(model)
    dev_type = batch.input_ids.device.type
    ctx = torch.autocast(dev_type, dtype=compute_dtype) if compute_dtype != torch.float32 else nullcontext()
    with ctx:
        hidden = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state  # [B, T, E]
        E = hidden.shape[-1]
        h = hidden.gather(1, batch.comp_pos[..., None].expand(-1, -1, E))  # [B, Lc, E]
        logits = head(h)  # [B, Lc, V]
    logits = logits.float() / max(temperature, 1e-6)  # the rollout sampled from logits / T
    logp_all = torch.log_softmax(logits, dim=-1)  # [B, Lc, V]
    logp = logp_all.gather(-1, batch.comp_ids[..., None]).squeeze(-1)  # [B, Lc]
    ent = None
    if with_entropy:
        with torch.no_grad():
            ent = -(logp_all.exp() * logp_all).sum(-1)  # [B, Lc]
    return logp, ent
