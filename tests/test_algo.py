"""Advantages and losses against hand-computed tensors."""

import math

import pytest
import torch

from rft.algo import LossNorm, compute_advantages, policy_loss
from rft.errors import RftError

NAN = float("nan")


def test_grpo_advantage_hand_computed():
    r = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    out = compute_advantages("grpo", r)
    std = math.sqrt(((0.5**2) * 4) / 3)  # unbiased std of [1,0,1,0]
    exp = torch.tensor([[0.5, -0.5, 0.5, -0.5]]) / (std + 1e-4)
    assert torch.allclose(out.advantages, exp, atol=1e-6)
    assert out.zero_std_groups == 0 and out.unscored == 0


def test_zero_variance_group_and_unscored_get_zero_advantage():
    r = torch.tensor([[1.0, 1.0, 1.0], [1.0, NAN, 0.0], [NAN, NAN, 1.0]])
    out = compute_advantages("grpo", r)
    assert torch.equal(out.advantages[0], torch.zeros(3))  # zero variance
    assert out.advantages[1, 1] == 0  # unscored
    assert out.advantages[1, 0] > 0 > out.advantages[1, 2]
    # mean over the two scored members is 0.5, std (unbiased) sqrt(0.5)
    assert out.advantages[1, 0].item() == pytest.approx(0.5 / (math.sqrt(0.5) + 1e-4), rel=1e-5)
    assert torch.equal(out.advantages[2], torch.zeros(3))  # a single scored member: nothing to compare
    assert out.zero_std_groups == 2 and out.unscored == 3


def test_rloo_and_dr_grpo_hand_computed():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    rloo = compute_advantages("rloo", r).advantages
    # r_i - mean(others): 1 - 1/3, 0 - 2/3
    assert torch.allclose(rloo, torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]]), atol=1e-6)
    dr = compute_advantages("dr_grpo", r).advantages
    assert torch.allclose(dr, torch.tensor([[0.5, -0.5, -0.5, 0.5]]))
    # rloo with an unscored member uses only scored others
    r2 = torch.tensor([[1.0, NAN, 0.0, 0.0]])
    a2 = compute_advantages("rloo", r2).advantages
    assert torch.allclose(a2, torch.tensor([[1.0, 0.0, -0.5, -0.5]]))


def test_unknown_names_list_valid_ones():
    with pytest.raises(RftError, match="grpo"):
        compute_advantages("grpoo", torch.zeros(1, 2))


def _inputs():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.5, -0.1], [-0.3, -0.2, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # second completion has 2 tokens
    return logp, old, adv, mask


def _hand_terms(logp, old, adv, eps_lo, eps_hi):
    ratio = (logp - old).exp()
    clipped = ratio.clamp(1 - eps_lo, 1 + eps_hi)
    return -torch.minimum(ratio * adv[:, None], clipped * adv[:, None])


def test_loss_normalisations_hand_computed():
    logp, old, adv, mask = _inputs()
    norm = LossNorm(sequences=2, tokens=5, max_len=4)
    x = _hand_terms(logp.detach(), old, adv, 0.2, 0.2) * mask
    grpo = (x[0].sum() / 3 + x[1].sum() / 2) / 2
    dapo = x.sum() / 5
    dr = x.sum() / (2 * 4)
    assert policy_loss("grpo", logp, old, adv, mask, norm).loss.item() == pytest.approx(grpo.item(), rel=1e-6)
    assert policy_loss("dapo", logp, old, adv, mask, norm).loss.item() == pytest.approx(dapo.item(), rel=1e-6)
    assert policy_loss("dr_grpo", logp, old, adv, mask, norm).loss.item() == pytest.approx(dr.item(), rel=1e-6)


def test_clipping_both_sides_and_masking():
    logp, old, adv, mask = _inputs()
    # ratios: row0 = [1, e^0.5=1.65, e^-0.4=0.67]; row1 = [1, e^-0.5=0.61, 1 (masked)]
    out = policy_loss("dapo", logp, old, adv, mask, LossNorm(2, 5, 4), epsilon=0.2, epsilon_high=0.28)
    # A>0 and ratio > 1.28 -> upper clip active at [0,1]; A<0 and ratio < 0.8 -> lower clip at [1,1]
    assert out.clip_high.tolist() == [[False, True, False], [False, False, False]]
    assert out.clip_low.tolist() == [[False, False, False], [False, True, False]]
    out.loss.backward()
    g = logp.grad
    # clipped tokens carry no gradient; the masked token none either
    assert g[0, 1] == 0 and g[1, 1] == 0 and g[1, 2] == 0
    # an unclipped token with A=+1 has gradient -ratio/5 (ratio=1 at [0,0])
    assert g[0, 0].item() == pytest.approx(-1 / 5)
    # A>0 with ratio below 1-eps is NOT clipped (min picks the unclipped term): [0,2]
    assert g[0, 2].item() == pytest.approx(-math.exp(-0.4) / 5, rel=1e-5)


def test_kl_k3_term():
    logp, old, adv, mask = _inputs()
    ref = logp.detach() + 0.1
    out = policy_loss("dapo", logp, logp.detach(), torch.zeros(2), mask, LossNorm(2, 5, 4), beta=0.5, ref_logp=ref)
    k3 = math.exp(0.1) - 0.1 - 1
    assert out.loss.item() == pytest.approx(0.5 * k3, rel=1e-5)
    with pytest.raises(ValueError):
        policy_loss("dapo", logp, old, adv, mask, LossNorm(2, 5, 4), beta=0.5)


def test_grad_accumulation_matches_full_batch():
    torch.manual_seed(0)
    logp = torch.randn(4, 5, requires_grad=True)
    old = logp.detach() + 0.05 * torch.randn(4, 5)
    adv = torch.tensor([1.0, -0.5, 0.3, -1.0])
    mask = (torch.rand(4, 5) > 0.3).float()
    norm = LossNorm(4, int(mask.sum()), 5)
    for name in ("grpo", "dapo", "dr_grpo"):
        full = policy_loss(name, logp, old, adv, mask, norm).loss
        (g_full,) = torch.autograd.grad(full, logp)
        parts = sum(policy_loss(name, logp[i : i + 2], old[i : i + 2], adv[i : i + 2], mask[i : i + 2], norm).loss for i in (0, 2))
        (g_acc,) = torch.autograd.grad(parts, logp)
        assert torch.allclose(g_full, g_acc, atol=1e-6), name
