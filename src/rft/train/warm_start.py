"""A supervised warm start on reference outputs, before RL (`rft.warm_start`).

When a model almost never produces an output the grader passes (say the grader wants the bare number and the
model writes a sentence), GRPO has nothing to learn from. A few supervised steps on the reference outputs (a
template over the row, e.g. "{{item.answer}}") teach the output form; RL then has groups whose rewards differ.

    warm_start(parts, rows, template, *, log) -> dict    trains parts.model in place, syncs the engine, returns
                                                          the record (steps, lr, losses) the run logs and reports
    reference_loss(parts, rows, template) -> float       mean token cross-entropy on the reference outputs

The loss is plain token cross-entropy of the reference output (then end-of-turn) after the rendered chat prompt;
the prompt is masked. Rows are the training rows in a seeded shuffle, `rft.warm_start.batch_size` per step,
cycling. The optimizer is a fresh AdamW made by `setup.make_optimizer` (the job's betas and weight decay) at
`rft.warm_start.lr`, thrown away afterwards: RL starts with fresh optimizer moments. Gradients are clipped at
`rft.optimizer.grad_clip`.

Simplified: a constant learning rate; no packing; the KL reference (beta > 0) stays the base model, not the
warm-started one.
Run: applied by `rft train` when the learnability check asks for it or `rft.warm_start.enabled=true`.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext

import torch

from rft import graders
from rft.engine.local import render_prompt
from rft.errors import RftError
from rft.train.policy import _base_and_head
from rft.train.setup import make_optimizer


def _examples(parts, rows: list[dict], template: str) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) per row: the target is the rendered reference output and the end-of-turn token."""
    tok = parts.tokenizer
    eos = tok.eos_token_id
    out = []
    for i, row in enumerate(rows):
        try:
            text = graders.render(template, {}, row)
        except graders.TemplateError as e:
            raise RftError(f"rft.warm_start.reference_output: row {i + 1}: {e}") from None
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.append((render_prompt(tok, row["messages"], row.get("tools")), list(ids) + ([eos] if eos is not None else [])))
    return out


def _batch_loss(parts, batch: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Mean cross-entropy over the target tokens of a right-padded batch (prompt positions masked)."""
    model, dtype = parts.model, parts.compute_dtype
    dev = next(model.parameters()).device
    pad = parts.tokenizer.pad_token_id if parts.tokenizer.pad_token_id is not None else 0
    L = max(len(p) + len(t) for p, t in batch)
    ids = torch.full((len(batch), L), pad, dtype=torch.long)  # [B, L]
    attn = torch.zeros((len(batch), L), dtype=torch.long)  # [B, L]
    labels = torch.full((len(batch), L), -100, dtype=torch.long)  # [B, L] -100: not a target
    for i, (p, t) in enumerate(batch):
        n = len(p) + len(t)
        ids[i, :n] = torch.tensor(p + t)
        attn[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(t)
    ids, attn, labels = ids.to(dev), attn.to(dev), labels.to(dev)
    body, head = _base_and_head(model)
    target = labels[:, 1:]  # [B, L-1] position k predicts token k+1
    pick = target != -100  # [B, L-1]
    ctx = torch.autocast(dev.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    with ctx:
        hidden = body(input_ids=ids, attention_mask=attn).last_hidden_state  # [B, L, E]
        logits = head(hidden[:, :-1][pick])  # [T, V] only the target positions go through the LM head
    return torch.nn.functional.cross_entropy(logits.float(), target[pick])


def reference_loss(parts, rows: list[dict], template: str, batch_size: int = 8) -> float:
    """Mean (over batches) token cross-entropy of the reference outputs under the current policy."""
    ex = _examples(parts, rows, template)
    losses = []
    with torch.no_grad():
        for i in range(0, len(ex), batch_size):
            losses.append(float(_batch_loss(parts, ex[i:i + batch_size])))
    return sum(losses) / max(1, len(losses))


def warm_start(parts, rows: list[dict], template: str, *, seed: int, log=print, on_step=None) -> dict:
    """Supervised steps on the reference outputs of `rows`; the policy is trained in place and the engine synced.
    `on_step(k, loss)` is called after each step. Returns the record the run keeps."""
    job = parts.job
    cfg = job.rft.warm_start
    ex = _examples(parts, rows, template)
    if not ex:
        raise RftError("rft.warm_start: the training file has no rows")
    order = list(range(len(ex)))
    rng = random.Random(seed * 1_000_003 + 17)
    rng.shuffle(order)
    opt = make_optimizer(job, parts.params, cfg.lr)
    clip = job.rft.optimizer.grad_clip if job.rft.optimizer.grad_clip > 0 else float("inf")
    t0 = time.perf_counter()
    losses: list[float] = []
    pos = 0
    parts.model.train()
    for k in range(1, cfg.steps + 1):
        idx = []
        while len(idx) < min(cfg.batch_size, len(ex)):
            if pos >= len(order):
                rng.shuffle(order)
                pos = 0
            idx.append(order[pos])
            pos += 1
        opt.zero_grad(set_to_none=True)
        loss = _batch_loss(parts, [ex[i] for i in idx])
        if not torch.isfinite(loss.detach()):
            raise RftError(f"rft.warm_start: step {k}: the loss is {float(loss.detach())}",
                           hint="lower rft.warm_start.lr or use rft.train.dtype=float32")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parts.params, clip)
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(k, losses[-1])
    opt.zero_grad(set_to_none=True)
    del opt
    parts.engine.sync_weights()
    rec = {"steps": cfg.steps, "lr": cfg.lr, "batch_size": cfg.batch_size, "rows": len(ex),
           "reference_output": template, "loss_first": losses[0], "loss_last": losses[-1],
           "loss_last_mean": sum(losses[-min(4, len(losses)):]) / min(4, len(losses)),
           "losses": losses, "seconds": time.perf_counter() - t0}
    if not all(math.isfinite(x) for x in losses):  # pragma: no cover - refused above
        raise RftError("rft.warm_start: a non-finite loss")
    log(f"warm start: {cfg.steps} supervised steps on {template!r}, loss {losses[0]:.3f} -> {rec['loss_last_mean']:.3f}")
    return rec
