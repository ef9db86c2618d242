"""Clipped policy-gradient losses with optional KL to a reference policy.

Per token t of completion i:  ratio = exp(logp - old_logp)
    pg = -min(ratio * A_i, clamp(ratio, 1 - epsilon, 1 + epsilon_high) * A_i)
    kl = exp(ref_logp - logp) - (ref_logp - logp) - 1            (k3 estimator, only when beta > 0)
    x  = pg + beta * kl
The losses differ only in how x is normalised; `LossNorm` carries the totals of the whole optimizer step so
gradient accumulation over micro-batches gives the same gradient as one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rft.errors import Registry

LOSSES = Registry("policy loss")


def register_loss(name: str):
    return LOSSES.register(name)


@dataclass(frozen=True)
class LossNorm:
    sequences: int  # completions in the optimizer step
    tokens: int  # completion tokens in the optimizer step (mask sum)
    max_len: int  # max_new_tokens (Dr. GRPO's constant)


@dataclass(frozen=True)
class LossOut:
    loss: torch.Tensor  # scalar, this micro-batch's share of the step loss
    pg: torch.Tensor  # per-token policy-gradient term [B, L] (detached)
    kl: torch.Tensor | None  # per-token k3 KL [B, L] (detached) or None
    clip_low: torch.Tensor  # [B, L] bool: the lower clip bound is active
    clip_high: torch.Tensor  # [B, L] bool: the upper clip bound is active


def per_token_terms(logp, old_logp, adv, mask, *, epsilon, epsilon_high, beta, ref_logp=None):
    """logp/old_logp/ref_logp/mask [B, L], adv [B] -> (x [B, L], pg, kl, clip_low, clip_high)."""
    a = adv[:, None]  # [B, 1]
    ratio = torch.exp(logp - old_logp)  # [B, L]
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)  # [B, L]
    pg = -torch.minimum(ratio * a, clipped * a)  # [B, L]
    x = pg
    kl = None
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs reference log-probabilities")
        d = ref_logp - logp  # [B, L]
        kl = torch.exp(d) - d - 1  # [B, L]
        x = x + beta * kl
    m = mask.bool()
    clip_low = (ratio < 1 - epsilon) & (a < 0) & m
    clip_high = (ratio > 1 + epsilon_high) & (a > 0) & m
    return x * mask, pg.detach(), (kl.detach() if kl is not None else None), clip_low, clip_high


@register_loss("grpo")
def grpo_norm(x: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
    per_seq = x.sum(-1) / mask.sum(-1).clamp(min=1)  # [B] token mean per completion
    return per_seq.sum() / norm.sequences


@register_loss("dapo")
def dapo_norm(x: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
    return x.sum() / max(norm.tokens, 1)


@register_loss("dr_grpo")
def dr_grpo_norm(x: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
    return x.sum() / (norm.sequences * norm.max_len)


def policy_loss(name, logp, old_logp, adv, mask, norm: LossNorm, *, epsilon=0.2, epsilon_high=None, beta=0.0,
                ref_logp=None) -> LossOut:
    reduce = LOSSES.get_or_raise(name)
    eh = epsilon if epsilon_high is None else epsilon_high
    x, pg, kl, lo, hi = per_token_terms(
        logp, old_logp, adv, mask.to(logp.dtype), epsilon=epsilon, epsilon_high=eh, beta=beta, ref_logp=ref_logp
    )
    return LossOut(reduce(x, mask.to(logp.dtype), norm), pg, kl, lo, hi)
