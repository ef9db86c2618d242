"""Supervised fine-tuning (OpenAI's `method.type: supervised`): one explicit step, read top to bottom.

    load_chat_inputs(job)                       the supervised or dpo files (line-numbered checks), the optional
                                                evaluation grader, the resolved hyperparameters, the model ref
    sft_examples(tokenizer, row)                [(prompt ids, target ids)], one per trained assistant message
    supervised_step(step, rows, parts) -> MethodStep
                                                tokenise -> micro-batches -> masked token cross-entropy ->
                                                backward -> clip -> AdamW step -> engine sync
    validation_loss(parts, ds, ...) -> dict     the evaluation without a grader (report-shaped, accuracy None)

The target of an assistant message is its text followed by the end-of-sequence token (what the engine stops
on), after the chat template's prompt for the messages before it (`render_prompt`, with the row's tools). Every
assistant message with weight 1 (OpenAI's default) is a target with exactly the context it had in the
conversation; weight 0 keeps a message as context only. The loss is `rft.algo.preference` "token_ce": the sum
of -log p over the target tokens of the step / the number of target tokens in the step (every token weighs
the same; micro-batches add up to the one-batch loss).

Run: `rft train examples/supervised/job.yaml` (the loop in `rft.train.loop` runs these steps; tests drive them
directly on a tiny model, tests/test_methods_sft.py).
Simplified: prompts are not shared between the examples of one conversation (each trained assistant message
is its own sequence); sequences are right-padded, not packed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from rft import graders, models
from rft.algo.preference import sft_loss
from rft.config import JobSpec, check_context_length, resolve
from rft.data import Dataset, load_dataset
from rft.data.chat_formats import eval_view, is_prompt_row, load_chat_dataset, message_text, row_tools
from rft.engine.local import render_prompt
from rft.errors import RftError
from rft.train.policy import build_batch, completion_logprobs
from rft.train.setup import TrainInputs, TrainParts, compute_dtype_for, grader_context

Example = tuple[list[int], list[int]]  # (prompt token ids ending with the assistant header, target token ids)


@dataclass(frozen=True)
class MethodStep:
    """What one supervised or DPO step produced (the loop logs `metrics`)."""

    step: int
    metrics: dict  # the metrics.jsonl row
    nonfinite: str | None  # why the update was refused (non-finite loss or gradient), else None
    tokens: int  # target tokens trained on


def load_chat_inputs(job: JobSpec) -> TrainInputs:
    """The training and validation files in the job's method format, the optional evaluation grader, the
    resolved hyperparameters and the model reference. Guard sets need a reinforcement job (refused by jobcheck)."""
    kind = job.method.type
    train_ds = load_chat_dataset(job.training_file, kind)
    val_ds = load_validation(job.validation_file, kind, graded=job.grader is not None) if job.validation_file else None
    grader = graders.build(job.grader, job.grader_field, context=grader_context(job)) if job.grader else None
    try:
        model_ref = models.resolve(job.model)
        ctx_len = models.context_length(model_ref)
        if ctx_len is not None:
            check_context_length(job, ctx_len)
        return TrainInputs(values=resolve(job, len(train_ds)), train_ds=train_ds, val_ds=val_ds, guard_ds=None,
                           grader=grader, guard_grader=None, model_ref=model_ref, compute_dtype=compute_dtype_for(job))
    except BaseException:
        if grader is not None:
            grader.close()
        raise


def setup_chat_training(job: JobSpec, inputs: TrainInputs, *, restore=None) -> TrainParts:
    """`rft.train.setup.setup_training` for a supervised or dpo job: its memory check reads the rows' prompts
    (their evaluation form). Simplified: targets are counted as rft.sampling.max_new_tokens tokens."""
    import dataclasses
    import sys

    from rft.train import memory
    from rft.train.setup import device_for, setup_training

    kind = job.method.type
    memory.check(job, dataclasses.replace(inputs, train_ds=eval_view(inputs.train_ds, kind),
                                          val_ds=eval_view(inputs.val_ds, kind) if inputs.val_ds is not None else None),
                 device=device_for(job), log=lambda m: print(m, file=sys.stderr))
    return setup_training(job, inputs, restore=restore, check_memory=False)


def load_validation(ref: str, kind: str, *, graded: bool) -> Dataset:
    """The validation file in the method's format; with a grader, reinforcement rows (prompts with reference
    fields, `builtin:` and `hf:` datasets too) are accepted as well: they are graded, with no validation loss."""
    try:
        return load_chat_dataset(ref, kind)
    except RftError as e:
        if not graded:
            raise
        try:
            return load_dataset(ref, split="validation")
        except RftError:
            raise e from None


def has_targets(ds: Dataset | None, kind: str) -> bool:
    """The dataset's rows carry targets (the method's format), so a validation loss can be computed."""
    return ds is not None and len(ds) > 0 and not is_prompt_row(ds.rows[0], kind)


def target_ids(tokenizer, text: str) -> list[int]:
    """An assistant answer as the engine would generate it: its tokens, then end-of-sequence."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def sft_examples(tokenizer, row: dict) -> list[Example]:
    """One (prompt, target) per assistant message with weight 1: the prompt is the conversation before it."""
    msgs = row["messages"]
    tools = row_tools(row, "supervised")
    out = []
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant" or m.get("weight", 1) == 0:
            continue
        context = [{k: v for k, v in x.items() if k != "weight"} for x in msgs[:i]]
        out.append((render_prompt(tokenizer, context, tools), target_ids(tokenizer, message_text(m.get("content")))))
    return out


def examples_logprobs(model, examples: list[Example], *, group: int, pad_id: int, compute_dtype: torch.dtype):
    """Per-token log-probs (with gradient) of each example's target: examples are grouped by `group` sharing
    one prompt (DPO: chosen and rejected). -> (logp [B, Lc], mask [B, Lc])."""
    prompts = [examples[u * group][0] for u in range(len(examples) // group)]  # [U]
    batch = build_batch(prompts, [(t, [0.0] * len(t)) for _, t in examples], torch.zeros(len(examples)),
                        pad_id=pad_id, group=group).to(next(model.parameters()).device)
    logp, _ = completion_logprobs(model, batch, temperature=1.0, compute_dtype=compute_dtype)  # [B, Lc]
    return logp, batch.comp_mask  # [B, Lc], [B, Lc]


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def micro_batches(n: int, job: JobSpec, per_item: int = 1) -> list[range]:
    """Split n items into at least rft.optimizer.grad_accumulation micro-batches of at most
    rft.train.micro_batch_size sequences (an item is `per_item` sequences)."""
    size = math.ceil(n / job.rft.optimizer.grad_accumulation)
    if job.rft.train.micro_batch_size:
        size = min(size, max(1, job.rft.train.micro_batch_size // per_item))
    size = max(1, size)
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def apply_update(parts: TrainParts, nonfinite: str | None) -> tuple[float, str | None, int, float]:
    """Clip, check, step: -> (grad_norm before clipping, nonfinite reason, updates applied, optimizer seconds).
    `nonfinite`: why the loss already refuses the update (else None). A non-finite loss or gradient refuses the
    update (no optimizer.step(): weights and AdamW moments stay bit-identical), as in reinforcement steps."""
    t0 = time.perf_counter()
    clip = parts.job.rft.optimizer.grad_clip if parts.job.rft.optimizer.grad_clip > 0 else float("inf")
    gn = float(torch.nn.utils.clip_grad_norm_(parts.params, clip))
    if nonfinite is None and not math.isfinite(gn):
        nonfinite = f"gradient norm is {gn}"
    if nonfinite is not None:
        parts.optimizer.zero_grad(set_to_none=True)
        return gn, nonfinite, 0, time.perf_counter() - t0
    parts.optimizer.step()
    parts.engine.sync_weights()
    return gn, None, 1, time.perf_counter() - t0


def supervised_step(step: int, rows: list[dict], parts: TrainParts, draw: Callable | None = None) -> MethodStep:
    """One supervised step on `rows` (the step number sets the learning rate)."""
    job, model, tok = parts.job, parts.model, parts.tokenizer
    t_step = time.perf_counter()
    # 1. tokenise: every trained assistant message of every row is one (prompt, target) example
    examples = [ex for r in rows for ex in sft_examples(tok, r)]
    n_tokens = sum(len(t) for _, t in examples)
    lr = parts.scheduler.apply(step)
    # 2. forward/backward per micro-batch; the loss is normalised by the step's target tokens
    parts.optimizer.zero_grad(set_to_none=True)
    loss_sum, nonfinite = 0.0, None
    for mb in micro_batches(len(examples), job):
        logp, mask = examples_logprobs(model, [examples[i] for i in mb], group=1, pad_id=pad_id(tok),
                                       compute_dtype=parts.compute_dtype)  # [b, Lc], [b, Lc]
        loss = sft_loss("token_ce", logp, mask, n_tokens)  # scalar, this micro-batch's share
        if nonfinite is None and not bool(torch.isfinite(loss.detach())):
            nonfinite = f"loss is {float(loss.detach())}"
        loss.backward()
        loss_sum += float(loss.detach())
    # 3. update
    t_train = time.perf_counter() - t_step
    grad_norm, nonfinite, updates, t_opt = apply_update(parts, nonfinite)
    t_total = time.perf_counter() - t_step
    m = {"step": step, "train_loss": loss_sum, "train_tokens": n_tokens, "train_sequences": len(examples),
         "grad_norm": grad_norm, "lr": lr, "updates": updates, "nonfinite": nonfinite is not None,
         "time/training": t_train + t_opt, "time/step": t_total,
         "tokens_per_second": n_tokens / t_total if t_total > 0 else 0.0}
    return MethodStep(step=step, metrics=m, nonfinite=nonfinite, tokens=n_tokens)


def validation_loss(parts: TrainParts, ds: Dataset, *, step: int, model_name: str, batch_size: int = 16) -> dict:
    """The validation loss of a supervised dataset: sum of -log p over every target token / their number
    (valid_loss), and per row (items). Report-shaped like an evaluation, with `accuracy` None."""
    t0 = time.perf_counter()
    tok = parts.tokenizer
    items, nll_total, tok_total = [], 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ds), batch_size):
            rows = ds.rows[start:start + batch_size]
            per_row = [sft_examples(tok, r) for r in rows]
            flat = [ex for exs in per_row for ex in exs]
            logp, mask = examples_logprobs(parts.model, flat, group=1, pad_id=pad_id(tok),
                                           compute_dtype=parts.compute_dtype)  # [b, Lc], [b, Lc]
            nll = -(logp * mask).sum(-1)  # [b]
            ntok = mask.sum(-1)  # [b]
            k = 0
            for j, exs in enumerate(per_row):
                a, n = float(nll[k:k + len(exs)].sum()), int(ntok[k:k + len(exs)].sum())
                k += len(exs)
                items.append({"index": start + j, "loss": a / max(n, 1), "tokens": n})
                nll_total += a
                tok_total += n
    return loss_report(ds, items, nll_total / max(tok_total, 1), step=step, model_name=model_name,
                       seconds=time.perf_counter() - t0, extra={"valid_tokens": tok_total})


def loss_report(ds: Dataset, items: list[dict], loss: float, *, step: int, model_name: str, seconds: float,
                extra: dict | None = None) -> dict:
    """An evaluation report whose metric is a validation loss (no grader): `accuracy` is None, so comparisons
    and accuracy gates say they do not apply."""
    if not math.isfinite(loss):
        raise RftError(f"the validation loss at step {step} is {loss}",
                       hint="lower the learning rate or use rft.train.dtype=float32")
    return {"object": "rft.eval", "metric": "valid_loss", "model": model_name, "dataset": ds.name,
            "dataset_sha256": ds.sha256, "step": step, "valid_loss": loss, "accuracy": None,
            "accuracy_ci95": [None, None], "n": len(items), "unscored_frac": 0.0, "seconds": seconds,
            **(extra or {}), "items": items}
