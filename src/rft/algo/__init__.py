"""Advantages and policy losses, registered by name (pure functions on tensors).

Advantages (`ADVANTAGES`): `grpo` (group-normalised), `rloo` (leave-one-out baseline), `dr_grpo` (mean
baseline, no std scaling). Losses (`LOSSES`): `grpo` (per-sequence token mean, then mean over sequences),
`dapo` (token-level mean over the whole batch), `dr_grpo` (sum over tokens / (sequences * max length)).
All losses use the clipped surrogate with `epsilon` / `epsilon_high` and an optional k3 KL term to a
reference policy weighted by `beta`.
"""

from rft.algo.advantages import ADVANTAGES, AdvantageOut, compute_advantages, register_advantage
from rft.algo.losses import LOSSES, LossNorm, LossOut, policy_loss, register_loss

__all__ = [
    "ADVANTAGES", "AdvantageOut", "compute_advantages", "register_advantage",
    "LOSSES", "LossNorm", "LossOut", "policy_loss", "register_loss",
]
