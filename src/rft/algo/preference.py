"""Supervised and preference losses, registered by name (pure functions on tensors).

    SFT_LOSSES["token_ce"](logp [B, L], mask [B, L], n_tokens) -> scalar
        token cross-entropy on the target (assistant) tokens: -sum(logp * mask) / n_tokens, where n_tokens is the
        number of target tokens in the whole optimizer step (so micro-batches add up to the one-batch loss);
        every assistant token weighs the same, a long answer counts more than a short one (TRL's default).
    PREFERENCE_LOSSES["sigmoid"](pi_c, pi_r, ref_c, ref_r, beta) -> PreferenceOut
        DPO (Rafailov et al. 2023): per pair, -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), where
        pi_*/ref_* [P] are sequence log-probs (summed over the completion's tokens) of the chosen (preferred) and
        rejected (non-preferred) output under the policy and the frozen reference; the loss is the mean over pairs.
    sequence_logprob(logp [B, L], mask [B, L]) -> [B]

Call: `rft.algo.preference.dpo_loss("sigmoid", pi_c, pi_r, ref_c, ref_r, beta=0.1).loss.backward()`.
Simplified: no label smoothing (cDPO), no IPO / hinge variants yet (register them here by name).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rft.errors import Registry

SFT_LOSSES = Registry("supervised loss")
PREFERENCE_LOSSES = Registry("preference loss")


@dataclass(frozen=True)
class PreferenceOut:
    loss: torch.Tensor  # scalar: mean over the pairs given, with gradient
    losses: torch.Tensor  # [P] per-pair loss (detached)
    chosen_rewards: torch.Tensor  # [P] beta * (pi_c - ref_c) (detached), TRL's rewards/chosen
    rejected_rewards: torch.Tensor  # [P] beta * (pi_r - ref_r) (detached)

    @property
    def accuracy(self) -> float:
        """Share of pairs whose implicit reward ranks the preferred output first (TRL's rewards/accuracies)."""
        return float((self.chosen_rewards > self.rejected_rewards).float().mean()) if self.losses.numel() else float("nan")

    @property
    def margin(self) -> float:
        return float((self.chosen_rewards - self.rejected_rewards).mean()) if self.losses.numel() else float("nan")


def sequence_logprob(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logp, mask [B, L] -> [B] sum of the log-probs of the masked-in tokens."""
    return (logp * mask).sum(-1)  # [B]


@SFT_LOSSES.register("token_ce")
def token_ce(logp: torch.Tensor, mask: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """logp, mask [B, L] (mask 1.0 on target tokens) -> scalar -sum(logp * mask) / n_tokens."""
    return -(logp * mask).sum() / max(int(n_tokens), 1)  # scalar


def sft_loss(name: str, logp: torch.Tensor, mask: torch.Tensor, n_tokens: int) -> torch.Tensor:
    return SFT_LOSSES.get_or_raise(name)(logp, mask.to(logp.dtype), n_tokens)


@PREFERENCE_LOSSES.register("sigmoid")
def dpo_sigmoid(pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor, *,
                beta: float) -> PreferenceOut:
    """pi_c, pi_r, ref_c, ref_r [P] sequence log-probs -> the sigmoid DPO loss (mean over the P pairs)."""
    chosen = pi_c - ref_c  # [P] log pi/ref of the preferred output
    rejected = pi_r - ref_r  # [P]
    logits = beta * (chosen - rejected)  # [P]
    losses = -F.logsigmoid(logits)  # [P]
    return PreferenceOut(loss=losses.mean(), losses=losses.detach(), chosen_rewards=(beta * chosen).detach(),
                         rejected_rewards=(beta * rejected).detach())


def dpo_loss(name: str, pi_c, pi_r, ref_c, ref_r, *, beta: float) -> PreferenceOut:
    return PREFERENCE_LOSSES.get_or_raise(name)(pi_c, pi_r, ref_c, ref_r, beta=beta)
