"""Direct preference optimisation (OpenAI's `method.type: dpo`): one explicit step, read top to bottom.

    with_reference(parts) -> TrainParts         the frozen reference: the base model loaded again (full weights),
                                                or the policy with its LoRA adapter disabled
    pair_examples(tokenizer, row)               (prompt, preferred target, non-preferred target)
    dpo_step(step, rows, parts) -> MethodStep   tokenise -> per micro-batch: reference log-probs (no grad),
                                                policy log-probs -> sigmoid DPO loss -> backward -> clip -> step
    dpo_validation(parts, ds, ...) -> dict      validation DPO loss and reward accuracy (report-shaped)

Sequence log-probs are summed over the output's tokens (its text and the end-of-sequence token) after the
input's chat-template prompt; the two outputs of a pair share one prompt pass (`policy.completion_logprobs`
with group 2). The loss is `rft.algo.preference` "sigmoid" with the job's `method.dpo.hyperparameters.beta`,
averaged over the step's pairs (micro-batches add up to it). The reference is made from the base model, never
from resumed weights, so a resumed job keeps the same reference.

Run: `rft train examples/dpo/job.yaml`; tests/test_methods_dpo.py drives the step on a tiny model.
Simplified: reference log-probs are recomputed every step (not cached per row); no label smoothing.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from typing import Callable

import torch

from rft import models
from rft.algo.preference import dpo_loss, sequence_logprob
from rft.data import Dataset
from rft.data.chat_formats import message_text, row_tools
from rft.engine.local import render_prompt
from rft.train.setup import TrainParts, device_for
from rft.train.supervised import (Example, MethodStep, apply_update, examples_logprobs, loss_report, micro_batches,
                                  pad_id, target_ids)


def with_reference(parts: TrainParts) -> TrainParts:
    """The parts with DPO's frozen reference: with LoRA, the policy's `disable_adapter` (the base model); else
    the base model loaded again in fp32 (forward passes run under the same autocast as the policy's, so at
    step 1 the policy's and the reference's log-probs are equal)."""
    if parts.job.rft.lora.enabled:
        return dataclasses.replace(parts, reference=parts.model.disable_adapter)
    ref, _ = models.load(parts.inputs.model_ref, dtype=torch.float32, device=device_for(parts.job))
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return dataclasses.replace(parts, reference=ref)


def pair_examples(tokenizer, row: dict) -> tuple[Example, Example]:
    """(prompt, preferred target), (prompt, non-preferred target): the same prompt, rendered once."""
    prompt = render_prompt(tokenizer, row["input"]["messages"], row_tools(row, "dpo"))
    c = target_ids(tokenizer, message_text(row["preferred_output"][0].get("content")))
    r = target_ids(tokenizer, message_text(row["non_preferred_output"][0].get("content")))
    return (prompt, c), (prompt, r)


def pair_logprobs(parts: TrainParts, model, examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """examples [2P] (chosen, rejected, chosen, ...) -> (chosen [P], rejected [P]) sequence log-probs."""
    logp, mask = examples_logprobs(model, examples, group=2, pad_id=pad_id(parts.tokenizer),
                                   compute_dtype=parts.compute_dtype)  # [2P, Lc], [2P, Lc]
    seq = sequence_logprob(logp, mask)  # [2P]
    return seq[0::2], seq[1::2]  # [P], [P]


def reference_logprobs(parts: TrainParts, examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen reference's (chosen [P], rejected [P]) sequence log-probs, without gradient."""
    with torch.no_grad():
        if isinstance(parts.reference, torch.nn.Module):
            return pair_logprobs(parts, parts.reference, examples)
        with parts.reference() if parts.reference is not None else nullcontext():
            return pair_logprobs(parts, parts.model, examples)


def dpo_step(step: int, rows: list[dict], parts: TrainParts, draw: Callable | None = None) -> MethodStep:
    """One DPO step on `rows` (preference rows; the step number sets the learning rate)."""
    job, tok = parts.job, parts.tokenizer
    beta = job.dpo_beta
    t_step = time.perf_counter()
    # 1. tokenise: one prompt and two targets per row
    pairs = [pair_examples(tok, r) for r in rows]  # [P]
    P = len(pairs)
    n_tokens = sum(len(c[1]) + len(r[1]) for c, r in pairs)
    lr = parts.scheduler.apply(step)
    # 2. per micro-batch: reference log-probs, policy log-probs, the sigmoid loss (its share of the step's mean)
    parts.optimizer.zero_grad(set_to_none=True)
    acc = {"loss": 0.0, "chosen": [], "rejected": [], "pi_c": [], "pi_r": []}
    nonfinite = None
    for mb in micro_batches(P, job, per_item=2):
        ex = [e for i in mb for e in pairs[i]]  # [2p]
        ref_c, ref_r = reference_logprobs(parts, ex)  # [p], [p]
        pi_c, pi_r = pair_logprobs(parts, parts.model, ex)  # [p], [p]
        out = dpo_loss("sigmoid", pi_c, pi_r, ref_c, ref_r, beta=beta)
        loss = out.loss * (len(mb) / P)  # scalar: mean over the micro-batch -> its share of the step mean
        if nonfinite is None and not bool(torch.isfinite(loss.detach())):
            nonfinite = f"loss is {float(loss.detach())}"
        loss.backward()
        acc["loss"] += float(loss.detach())
        acc["chosen"] += out.chosen_rewards.tolist()
        acc["rejected"] += out.rejected_rewards.tolist()
        acc["pi_c"] += pi_c.detach().tolist()
        acc["pi_r"] += pi_r.detach().tolist()
    # 3. update
    t_train = time.perf_counter() - t_step
    grad_norm, nonfinite, updates, t_opt = apply_update(parts, nonfinite)
    t_total = time.perf_counter() - t_step
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    m = {"step": step, "train_loss": acc["loss"],
         "rewards/chosen": mean(acc["chosen"]), "rewards/rejected": mean(acc["rejected"]),
         "rewards/accuracies": mean([float(c > r) for c, r in zip(acc["chosen"], acc["rejected"])]),
         "rewards/margins": mean([c - r for c, r in zip(acc["chosen"], acc["rejected"])]),
         "logps/chosen": mean(acc["pi_c"]), "logps/rejected": mean(acc["pi_r"]), "beta": beta,
         "train_tokens": n_tokens, "train_pairs": P, "grad_norm": grad_norm, "lr": lr, "updates": updates,
         "nonfinite": nonfinite is not None, "time/training": t_train + t_opt, "time/step": t_total,
         "tokens_per_second": n_tokens / t_total if t_total > 0 else 0.0}
    return MethodStep(step=step, metrics=m, nonfinite=nonfinite, tokens=n_tokens)


def dpo_validation(parts: TrainParts, ds: Dataset, *, step: int, model_name: str, batch_size: int = 16) -> dict:
    """Validation DPO loss (mean over pairs) and reward accuracy (share of pairs ranked right) of a preference
    dataset, report-shaped with `accuracy` None (the reward accuracy is not a grader's accuracy)."""
    t0 = time.perf_counter()
    items, total = [], 0.0
    with torch.no_grad():
        for start in range(0, len(ds), batch_size):
            ex = [e for r in ds.rows[start:start + batch_size] for e in pair_examples(parts.tokenizer, r)]
            ref_c, ref_r = reference_logprobs(parts, ex)  # [p], [p]
            pi_c, pi_r = pair_logprobs(parts, parts.model, ex)  # [p], [p]
            out = dpo_loss("sigmoid", pi_c, pi_r, ref_c, ref_r, beta=parts.job.dpo_beta)
            for j in range(len(out.losses)):
                margin = float(out.chosen_rewards[j] - out.rejected_rewards[j])
                items.append({"index": start + j, "loss": float(out.losses[j]), "margin": margin,
                              "ranked_right": margin > 0})
                total += float(out.losses[j])
    n = max(len(items), 1)
    return loss_report(ds, items, total / n, step=step, model_name=model_name, seconds=time.perf_counter() - t0,
                       extra={"valid_reward_accuracy": sum(it["ranked_right"] for it in items) / n,
                              "valid_reward_margin": sum(it["margin"] for it in items) / n})
