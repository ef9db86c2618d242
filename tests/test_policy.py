"""The training forward with prompt sharing gives the same log-probabilities as a plain full forward."""

from __future__ import annotations

import torch

from rft.models import ResolvedModel, load
from rft.train.policy import build_batch, completion_logprobs


def test_prompt_sharing_matches_full_forward(tiny_model_dir):
    model, tok = load(ResolvedModel("tiny", tiny_model_dir, "directory"))
    prompts = [tok("Hello there, what is 2+2?")["input_ids"], tok("Hi")["input_ids"], [5]]  # different lengths, one of 1
    G = 2
    comps = [[7, 8, 9], [10], [11, 12], [13, 14, 15, 16], [17], [18, 19]]
    batch = build_batch(prompts, [(c, [0.0] * len(c)) for c in comps], torch.zeros(6), pad_id=tok.pad_token_id, group=G)
    for temp in (1.0, 0.7):
        logp, ent = completion_logprobs(model, batch, temperature=temp, compute_dtype=torch.float32, with_entropy=True)
        for i, c in enumerate(comps):
            seq = torch.tensor([prompts[i // G] + c])
            with torch.no_grad():
                logits = model(seq).logits[0, len(prompts[i // G]) - 1 : -1] / temp
            ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None]).squeeze(-1)
            assert torch.allclose(logp[i, : len(c)], ref, atol=1e-5), (i, logp[i], ref)
            assert torch.all(batch.comp_mask[i, len(c):] == 0)
        assert torch.isfinite(ent).all()
    # gradients flow into the prompt pass too
    logp, _ = completion_logprobs(model, batch, temperature=1.0, compute_dtype=torch.float32)
    (logp * batch.comp_mask).sum().backward()
    assert model.model.layers[0].self_attn.k_proj.weight.grad.abs().sum() > 0
    # a sub-batch of prompts is the same as slicing the full result
    sub = batch.prompts(1, 3)
    lp_sub, _ = completion_logprobs(model, sub, temperature=1.0, compute_dtype=torch.float32)
    assert torch.allclose(lp_sub, logp.detach()[2:6, : lp_sub.shape[1]], atol=1e-5)


def test_gradient_checkpointing_gives_the_same_logprobs_and_gradients(tiny_model_dir):
    """With checkpointing on, the training pass runs whole sequences (no prompt cache): log-probs and gradients
    match the prompt-sharing pass; without gradients (the KL reference) it still shares the prompt."""
    from rft.train.policy import checkpointing
    from rft.train.setup import enable_checkpointing

    model, tok = load(ResolvedModel("tiny", tiny_model_dir, "directory"))
    model.train()
    prompts = [tok("Hello there, what is 2+2?")["input_ids"], tok("Hi")["input_ids"], [5]]
    G = 2
    comps = [[7, 8, 9], [10], [11, 12], [13, 14, 15, 16], [17], [18, 19]]
    batch = build_batch(prompts, [(c, [0.0] * len(c)) for c in comps], torch.zeros(6), pad_id=tok.pad_token_id, group=G)

    def run():
        model.zero_grad(set_to_none=True)
        logp, _ = completion_logprobs(model, batch, temperature=0.7, compute_dtype=torch.float32)
        (logp * batch.comp_mask * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
        return logp.detach() * batch.comp_mask, {n: p.grad.clone() for n, p in model.named_parameters()}

    assert not checkpointing(model.model)
    lp0, g0 = run()
    enable_checkpointing(model)
    assert checkpointing(model.model)
    lp1, g1 = run()
    assert torch.allclose(lp0, lp1, atol=1e-5), (lp0, lp1)
    for n in g0:
        assert torch.allclose(g0[n], g1[n], atol=1e-5, rtol=1e-4), n
    with torch.no_grad():
        assert not checkpointing(model.model)
        lp2, _ = completion_logprobs(model, batch, temperature=0.7, compute_dtype=torch.float32)
    assert torch.allclose(lp0, lp2 * batch.comp_mask, atol=1e-5)
