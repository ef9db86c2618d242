"""Group-relative advantages.

Input: rewards [N, G] (N prompts, G completions each) with NaN for unscored samples. Statistics are taken
over the scored members of each group only. A sample gets zero advantage when it is unscored, or when its
group has fewer than two scored members, or zero reward variance (nothing to learn from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rft.errors import Registry

ADVANTAGES = Registry("advantage estimator")


def register_advantage(name: str):
    return ADVANTAGES.register(name)


@dataclass(frozen=True)
class AdvantageOut:
    advantages: torch.Tensor  # [N, G], zero where not learnable
    zero_std_groups: int  # groups with < 2 scored members or zero variance
    unscored: int  # samples with NaN reward


def _group_stats(rewards: torch.Tensor):
    scored = ~torch.isnan(rewards)  # [N, G]
    r = torch.where(scored, rewards, torch.zeros_like(rewards))  # [N, G]
    k = scored.sum(dim=1, keepdim=True).to(rewards.dtype)  # [N, 1]
    mean = r.sum(dim=1, keepdim=True) / k.clamp(min=1)  # [N, 1]
    dev = torch.where(scored, rewards - mean, torch.zeros_like(rewards))  # [N, G]
    var = (dev**2).sum(dim=1, keepdim=True) / (k - 1).clamp(min=1)  # [N, 1] unbiased, like torch.std
    std = var.sqrt()
    live = (k >= 2) & (std > 1e-6)  # [N, 1]
    return scored, r, k, mean, std, live


@register_advantage("grpo")
def grpo_advantage(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    scored, _, _, mean, std, live = _group_stats(rewards)
    adv = (rewards - mean) / (std + eps)  # [N, G]
    return torch.where(scored & live, adv, torch.zeros_like(adv))


@register_advantage("dr_grpo")
def dr_grpo_advantage(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    scored, _, _, mean, _, live = _group_stats(rewards)
    adv = rewards - mean  # [N, G] no std scaling (Dr. GRPO)
    return torch.where(scored & live, adv, torch.zeros_like(adv))


@register_advantage("rloo")
def rloo_advantage(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    scored, r, k, _, _, live = _group_stats(rewards)
    others = (r.sum(dim=1, keepdim=True) - r) / (k - 1).clamp(min=1)  # [N, G] mean of the other scored samples
    adv = rewards - others
    return torch.where(scored & live, adv, torch.zeros_like(adv))


def compute_advantages(name: str, rewards: torch.Tensor) -> AdvantageOut:
    fn: Callable = ADVANTAGES.get_or_raise(name)
    adv = fn(rewards)
    _, _, _, _, _, live = _group_stats(rewards)
    return AdvantageOut(adv, int((~live).sum()), int(torch.isnan(rewards).sum()))
