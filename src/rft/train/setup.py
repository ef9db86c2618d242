"""Everything a training run is built from, made in one place and shared by training (`rft.train.loop`) and
`rft preflight`, so the two cannot drift apart.

    load_inputs(job)       data (train, validation, guard), the grader (every reference answer checked), the
                           resolved hyperparameters, the model reference (its context window checked), the
                           compute dtype; nothing heavy is loaded yet
    setup_training(job)    + the memory check (`rft.train.memory`: the forecast peak must fit the device, else
                           an RftError naming the settings that would fit), the policy (weights in
                           `rft.train.weights_dtype`, optional LoRA, optional gradient checkpointing), the
                           optimizer (`rft.train.optim`: AdamW or 8-bit AdamW, an exact fp32 master for bf16
                           weights) with the job's betas and weight decay, the LR schedule, the frozen reference
                           (only if beta > 0) and the engine that samples from the policy (at most
                           `rft.train.rollout_batch_size` sequences a batch)

Both return frozen dataclasses (`TrainInputs`, `TrainParts`). The training loop loads the inputs first (it
records them in the registry and checks a resume against them before any model is loaded) and then builds the
parts with a `restore` hook that loads a saved state into the policy and optimizer before the engine copies
the weights.

Simplified: one process, one device. Run: `rft train JOB.yaml` or `rft preflight JOB.yaml`.
"""

from __future__ import annotations

import copy
import math
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

from rft import graders, models
from rft.config import JobSpec, Resolved, check_context_length, resolve
from rft.data import Dataset, load_dataset
from rft.engine import backends
from rft.engine.local import best_cpu_dtype
from rft.eval.references import grader_context, reference_problems
from rft.errors import RftError


@dataclass(frozen=True)
class TrainInputs:
    """What a job trains on, checked before any model is loaded."""

    values: Resolved  # the concrete hyperparameters and step counts
    train_ds: Dataset
    val_ds: Dataset | None
    guard_ds: Dataset | None  # held-out data that must not regress (rft.eval.guard_file)
    grader: Any
    guard_grader: Any  # the guard set's grader (the job's grader unless rft.eval.guard_grader); None without one
    model_ref: models.ResolvedModel
    compute_dtype: torch.dtype  # rollouts and forward passes; the weights are in rft.train.weights_dtype

    def close(self) -> None:
        """Stop the graders' workers (python graders run in a sandbox pool)."""
        if self.grader is not None:  # supervised and DPO jobs may have none
            self.grader.close()
        if self.guard_grader is not None and self.guard_grader is not self.grader:
            self.guard_grader.close()


@dataclass(frozen=True)
class TrainParts:
    """Everything a training step touches: the inputs, and the policy with what trains and samples it.
    `reference` is None (beta == 0), a frozen copy of the base model in the compute dtype, or, with LoRA, the
    policy's `disable_adapter` context manager (the base model is the reference). `params` are the trainable
    parameters, in the optimizer's order."""

    job: JobSpec
    inputs: TrainInputs
    model: torch.nn.Module
    tokenizer: Any
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: "LrSchedule"
    reference: Any
    engine: Any  # LocalEngine, or VLLMEngine with rft.engine.backend: vllm (rft.engine.backends)

    # the inputs a step reads, by their short names
    values = property(lambda self: self.inputs.values)
    grader = property(lambda self: self.inputs.grader)
    compute_dtype = property(lambda self: self.inputs.compute_dtype)


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def compute_dtype_for(job: JobSpec) -> torch.dtype:
    d = job.rft.train.dtype
    if d == "bfloat16":
        return torch.bfloat16
    if d == "float32":
        return torch.float32
    if job.rft.train.weights_dtype == "bfloat16":  # bf16 weights compute in bf16 whatever the CPU
        return torch.bfloat16
    return best_cpu_dtype() if not torch.cuda.is_available() else torch.bfloat16


def weights_dtype_for(job: JobSpec) -> torch.dtype:
    return torch.bfloat16 if job.rft.train.weights_dtype == "bfloat16" else torch.float32


def device_for(job: JobSpec) -> str:
    d = job.rft.train.device
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cuda" and not torch.cuda.is_available():
        raise RftError("rft.train.device is cuda but this torch has no CUDA device", hint="use rft.train.device=auto")
    return d


# ------------------------------------------------------------------------------------------- graders, data
def build_grader(job: JobSpec, context: graders.GraderContext | None = None):
    """The job's grader (`context`: the job's `grader_context`, made here if not given)."""
    return graders.build(job.grader, "method.reinforcement.grader", context=context or grader_context(job))


def load_data(job: JobSpec) -> tuple[Dataset, Dataset | None]:
    train = load_dataset(job.training_file, split="train")
    val = load_dataset(job.validation_file, split="validation") if job.validation_file else None
    return train, val


def reference_check(job: JobSpec, grader, ds: Dataset) -> None:
    """Every row's reference output (a template over the item) must score as passing (>= 1.0)."""
    problems = reference_problems(job, grader, [ds])
    if problems:
        raise RftError(f"{len(problems)} reference answer(s) fail the grader; fix the data or the grader", problems)


def load_inputs(job: JobSpec) -> TrainInputs:
    """Load and check the data, build and check the grader(s), resolve the hyperparameters and the model reference.
    Graders built here are closed again if a later check fails (they may own sandbox workers)."""
    train_ds, val_ds = load_data(job)
    context = grader_context(job)  # one per job: the job's graders share its sandbox pool
    grader = build_grader(job, context)
    guard_grader = None
    try:
        reference_check(job, grader, train_ds)
        if val_ds is not None:
            reference_check(job, grader, val_ds)
        guard_ds = load_dataset(job.rft.eval.guard_file, split="validation") if job.rft.eval.guard_file else None
        if guard_ds is not None:
            guard_grader = graders.build(job.rft.eval.guard_grader, "rft.eval.guard_grader", context=context) \
                if job.rft.eval.guard_grader else grader
        model_ref = models.resolve(job.model)
        ctx_len = models.context_length(model_ref)
        if ctx_len is not None:
            check_context_length(job, ctx_len)
        return TrainInputs(values=resolve(job, len(train_ds)), train_ds=train_ds, val_ds=val_ds, guard_ds=guard_ds,
                           grader=grader, guard_grader=guard_grader, model_ref=model_ref,
                           compute_dtype=compute_dtype_for(job))
    except BaseException:
        grader.close()
        if guard_grader is not None and guard_grader is not grader:
            guard_grader.close()
        raise


# ------------------------------------------------------------------------------------------------ policy
def load_policy(job: JobSpec, model_ref: models.ResolvedModel):
    """The policy in `rft.train.weights_dtype`; LoRA adapters (peft upcasts them to fp32 on a bf16 base);
    gradient checkpointing switched on when asked (`rft.train.policy` then trains without prompt sharing)."""
    backends.check(job.rft.engine, device_for(job))  # before the weights load: vllm needs CUDA and the package
    if job.rft.engine.backend == "vllm" and job.rft.train.overlap_rollouts:
        raise RftError("rft.train.overlap_rollouts samples with a second local engine; it cannot be combined with "
                       "rft.engine.backend: vllm", hint="set rft.train.overlap_rollouts: false, or use "
                       "rft.engine.backend: local")
    model, tok = models.load(model_ref, dtype=weights_dtype_for(job), device=device_for(job))
    if job.rft.lora.enabled:
        from rft.train.optim import quiet_bitsandbytes

        quiet_bitsandbytes()  # peft imports bitsandbytes when it is installed
        from peft import LoraConfig, get_peft_model

        lc = job.rft.lora
        model = get_peft_model(model, LoraConfig(r=lc.rank, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                 target_modules=lc.targets, task_type="CAUSAL_LM"))
        if lc.quantize_base == "int8":  # the frozen base linears in int8 (rft.models.quant)
            from rft.models import quant

            if job.rft.engine.backend == "vllm":
                raise RftError("rft.lora.quantize_base: int8 cannot run with rft.engine.backend: vllm (vLLM is sent "
                               "dense weights by name)",
                               hint="use rft.engine.backend: local, or rft.lora.quantize_base: none")
            quant.quantize_lora_base(model)
    if job.rft.train.gradient_checkpointing:
        enable_checkpointing(model)
    model.train()
    # Dropout is off in these models; keep modules in train mode only for peft/bookkeeping.
    return model, tok


def enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing on every decoder layer (transformers' own switch)."""
    inner = model.get_base_model() if hasattr(model, "peft_config") else model
    on = getattr(inner, "activation_checkpointing_enable", None) or inner.gradient_checkpointing_enable
    try:
        on({"use_reentrant": False})
    except ValueError as e:  # an architecture without checkpointing support
        raise RftError(f"rft.train.gradient_checkpointing: {e}", hint="set rft.train.gradient_checkpointing=false") \
            from None


def make_optimizer(job: JobSpec, params: list, lr: float) -> torch.optim.Optimizer:
    """`rft.optimizer.name` over `params` (see rft.train.optim: bf16 parameters get an exact fp32 master)."""
    from rft.train import optim

    o = job.rft.optimizer
    return optim.make(o.name, params, lr=lr, betas=o.betas, weight_decay=o.weight_decay)


def make_reference(job: JobSpec, model, compute_dtype: torch.dtype):
    """The KL reference (only if beta > 0). Made before any resumed weights are loaded: it is always the base
    model. It only runs forward passes: kept in the compute dtype (no per-pass casts), without gradients."""
    if job.rft.algorithm.beta <= 0:
        return None
    if job.rft.lora.enabled:
        return model.disable_adapter  # a context manager: the base model is the reference
    ref = copy.deepcopy(model).to(compute_dtype).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class LrSchedule:
    """Learning rate as a function of the step (1-based): linear warmup, then constant, linear or cosine decay.
    Set explicitly every step, so a step that skips the update (no learnable group, or a non-finite loss or
    gradient) still advances the schedule: the LR of step k never depends on how many updates were skipped."""

    def __init__(self, opt, job: JobSpec, total_steps: int):
        self.opt, self.o, self.total = opt, job.rft.optimizer, total_steps
        self.base = [g["lr"] for g in opt.param_groups]

    def factor(self, step: int) -> float:
        o, i = self.o, step - 1
        if o.warmup_steps and i < o.warmup_steps:
            return (i + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        progress = (i - o.warmup_steps) / max(1, self.total - o.warmup_steps)
        if o.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def apply(self, step: int) -> float:
        f = self.factor(step)
        for g, base in zip(self.opt.param_groups, self.base):
            g["lr"] = base * f
        return self.base[0] * f


def make_scheduler(opt, job: JobSpec, total_steps: int) -> LrSchedule:
    return LrSchedule(opt, job, total_steps)


def policy_parts(job: JobSpec, inputs: TrainInputs, model, tokenizer, *,
                 restore: Callable[[torch.nn.Module, torch.optim.Optimizer], None] | None = None) -> TrainParts:
    """The optimizer, schedule, reference and engine around an already-loaded policy. `restore(model, optimizer)`
    (a resume) runs after the reference is made and before the engine is built, so rollouts use the resumed
    weights while the reference stays the base model."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(job, params, inputs.values.learning_rate)
    scheduler = make_scheduler(optimizer, job, inputs.values.total_steps)
    reference = make_reference(job, model, inputs.compute_dtype)
    if restore is not None:
        restore(model, optimizer)
    engine = backends.training_engine(job.rft.engine, model, tokenizer, compute_dtype=inputs.compute_dtype,
                                      model_path=inputs.model_ref.path, seed=job.seed,
                                      max_batch_size=job.rft.train.rollout_batch_size)
    return TrainParts(job=job, inputs=inputs, model=model, tokenizer=tokenizer, params=params, optimizer=optimizer,
                      scheduler=scheduler, reference=reference, engine=engine)


def setup_training(job: JobSpec, inputs: TrainInputs | None = None, *,
                   restore: Callable[[torch.nn.Module, torch.optim.Optimizer], None] | None = None,
                   check_memory: bool = True) -> TrainParts:
    """Everything a run trains with. `inputs`: already loaded by the caller (else loaded here); `restore`: see
    `policy_parts`; `check_memory=False`: the caller already ran `rft.train.memory.check`. The caller owns the
    graders: close them with `parts.inputs.close()`."""
    from rft.train import memory

    inputs = inputs if inputs is not None else load_inputs(job)
    if check_memory:  # before any weights are loaded: refuse a job that will not fit
        memory.check(job, inputs, device=device_for(job), log=lambda m: print(m, file=sys.stderr))
    model, tokenizer = load_policy(job, inputs.model_ref)
    return policy_parts(job, inputs, model, tokenizer, restore=restore)


def throwaway_copy(parts: TrainParts) -> TrainParts:
    """The same parts around a deep copy of the policy, with a fresh optimizer, schedule, reference and engine:
    steps on it leave `parts` untouched (preflight times real steps this way)."""
    return policy_parts(parts.job, parts.inputs, copy.deepcopy(parts.model), parts.tokenizer)
