"""The policy-side tensors of a training step: the batch built from rollouts, and per-token log-probabilities
(with gradient) of the completions under the current model.

Prompt sharing: the G completions of a prompt share it, so the prompt (all but its last token) runs through
the model once per *unique* prompt, and its KV cache is repeated G times (a differentiable op) for the
completion pass. On prompt-heavy tasks this removes most of the training FLOPs. The completion pass feeds
[last prompt token] + completion[:-1], so every position's hidden state predicts one completion token, and
only those positions go through the LM head.

Gradient checkpointing (`rft.train.gradient_checkpointing`, switched on by `rft.train.setup.load_policy`):
transformers' checkpointed layers drop any KV cache while gradients are on (a replayed layer would write it
twice), so prompt sharing cannot run; the training pass then feeds each row its whole sequence (prompt, then
last prompt token + completion[:-1]) with the same positions and mask, and gives the same log-probs. Each
layer keeps only its input; its activations are recomputed in the backward. Passes without gradients (the KL
reference) still share the prompt.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass
class TrainBatch:
    prompt_ids: torch.Tensor  # [U, P] unique prompts without their last token, left-padded (P may be 0)
    prompt_mask: torch.Tensor  # [U, P]
    prompt_len: torch.Tensor  # [U] full prompt lengths
    group: int  # completions per prompt (G); rows u*G .. u*G+G-1 belong to prompt u
    comp_in: torch.Tensor  # [B, Lc] last prompt token + completion[:-1], right-padded
    comp_ids: torch.Tensor  # [B, Lc] completion tokens (targets)
    comp_mask: torch.Tensor  # [B, Lc] 1.0 for real completion tokens
    old_logp: torch.Tensor  # [B, Lc] rollout log-probs (temperature-scaled)
    advantages: torch.Tensor  # [B]

    @property
    def n_prompts(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device) -> "TrainBatch":
        if self.comp_in.device == torch.device(device):
            return self
        t = lambda x: x.to(device, non_blocking=True)  # noqa: E731
        return TrainBatch(t(self.prompt_ids), t(self.prompt_mask), t(self.prompt_len), self.group, t(self.comp_in),
                          t(self.comp_ids), t(self.comp_mask), t(self.old_logp), t(self.advantages))

    def prompts(self, start: int, stop: int) -> "TrainBatch":
        """The sub-batch of prompts [start, stop) with all their completions."""
        r = slice(start * self.group, stop * self.group)
        return TrainBatch(self.prompt_ids[start:stop], self.prompt_mask[start:stop], self.prompt_len[start:stop],
                          self.group, self.comp_in[r], self.comp_ids[r], self.comp_mask[r], self.old_logp[r],
                          self.advantages[r])


def build_batch(prompt_ids: list[list[int]], completions: list[tuple[list[int], list[float]]], advantages: torch.Tensor,
                pad_id: int, group: int) -> TrainBatch:
    """prompt_ids: the U unique prompts; completions: U*group (token ids, rollout log-probs), grouped by prompt."""
    U, B = len(prompt_ids), len(completions)
    assert B == U * group, (U, B, group)
    P = max(len(p) for p in prompt_ids) - 1
    prompt = torch.full((U, max(P, 0)), pad_id, dtype=torch.long)
    pmask = torch.zeros((U, max(P, 0)), dtype=torch.long)
    for u, p in enumerate(prompt_ids):
        head = p[:-1]
        if head:
            prompt[u, P - len(head):] = torch.tensor(head, dtype=torch.long)
            pmask[u, P - len(head):] = 1
    lc = max(1, max(len(c[0]) for c in completions))
    comp_in = torch.full((B, lc), pad_id, dtype=torch.long)
    comp_ids = torch.full((B, lc), pad_id, dtype=torch.long)
    comp_mask = torch.zeros((B, lc), dtype=torch.float32)
    old = torch.zeros((B, lc), dtype=torch.float32)
    for i, (ids, lps) in enumerate(completions):
        n = len(ids)
        comp_in[i, 0] = prompt_ids[i // group][-1]
        if n > 1:
            comp_in[i, 1:n] = torch.tensor(ids[:-1], dtype=torch.long)
        if n:
            comp_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
            comp_mask[i, :n] = 1.0
            old[i, :n] = torch.tensor(lps, dtype=torch.float32)
    plen = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
    return TrainBatch(prompt, pmask, plen, group, comp_in, comp_ids, comp_mask, old, advantages.float())


def _base_and_head(model):
    inner = model.get_base_model() if hasattr(model, "peft_config") else model
    return inner.model, inner.lm_head


def _cache_kw(body) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(type(body).forward).parameters else "past_key_values"


def checkpointing(body) -> bool:
    """Whether this forward runs transformers' gradient checkpointing (which drops KV caches): a layer has it
    switched on, the model is in training mode and gradients are on."""
    layers = getattr(body, "layers", None)
    return bool(body.training and torch.is_grad_enabled() and layers is not None
                and any(getattr(m, "gradient_checkpointing", False) for m in layers))


def completion_logprobs(model, batch: TrainBatch, *, temperature: float, compute_dtype: torch.dtype,
                        with_entropy: bool = False):
    """-> (logp [B, Lc] with grad, entropy [B, Lc] detached or None)."""
    from transformers import DynamicCache

    body, head = _base_and_head(model)
    G = batch.group
    dev_type = batch.comp_in.device.type
    ctx = torch.autocast(dev_type, dtype=compute_dtype) if compute_dtype != torch.float32 else nullcontext()
    B, Lc = batch.comp_in.shape
    P = batch.prompt_ids.shape[1]
    ckw = _cache_kw(body)
    start = (batch.prompt_len - 1).repeat_interleave(G)  # [B] position of the last prompt token
    cpos = start[:, None] + torch.arange(Lc, device=start.device)[None]  # [B, Lc]
    with ctx:
        if P > 0 and checkpointing(body):  # whole sequences, no cache (module docstring)
            ppos = (batch.prompt_mask.cumsum(-1) - 1).clamp(min=0)  # [U, P]
            ids = torch.cat([batch.prompt_ids.repeat_interleave(G, 0), batch.comp_in], 1)  # [B, P+Lc]
            mask = torch.cat([batch.prompt_mask.repeat_interleave(G, 0), torch.ones_like(batch.comp_in)], 1)  # [B, P+Lc]
            pos = torch.cat([ppos.repeat_interleave(G, 0), cpos], 1)  # [B, P+Lc]
            hidden = body(input_ids=ids, attention_mask=mask, position_ids=pos,
                          use_cache=False).last_hidden_state[:, P:]  # [B, Lc, E]
        else:
            kwargs = {}
            if P > 0:
                cache = DynamicCache(config=body.config)
                ppos = (batch.prompt_mask.cumsum(-1) - 1).clamp(min=0)  # [U, P]
                body(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, position_ids=ppos, use_cache=True,
                     **{ckw: cache})
                cache.batch_repeat_interleave(G)  # [U, ...] -> [B, ...], differentiable
                kwargs[ckw] = cache
                mask = torch.cat([batch.prompt_mask.repeat_interleave(G, 0), torch.ones_like(batch.comp_in)], 1)  # [B, P+Lc]
            else:
                mask = torch.ones_like(batch.comp_in)  # [B, Lc]
            hidden = body(input_ids=batch.comp_in, attention_mask=mask, position_ids=cpos, use_cache=P > 0,
                          **kwargs).last_hidden_state  # [B, Lc, E]
        logits = head(hidden)  # [B, Lc, V]
        cap = getattr(getattr(body, "config", None), "final_logit_softcapping", None)
        if cap:  # Gemma 2: the causal LM's forward soft-caps its logits; the head alone does not
            logits = torch.tanh(logits / cap) * cap  # [B, Lc, V]
    logits = logits.float() / max(temperature, 1e-6)  # the rollout sampled from logits / T
    logp_all = torch.log_softmax(logits, dim=-1)  # [B, Lc, V]
    logp = logp_all.gather(-1, batch.comp_ids[..., None]).squeeze(-1)  # [B, Lc]
    ent = None
    if with_entropy:
        with torch.no_grad():
            ent = -(logp_all.exp() * logp_all).sum(-1)  # [B, Lc]
    return logp, ent
