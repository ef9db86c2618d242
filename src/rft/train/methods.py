"""The fine-tuning methods the training loop runs, registered by `method.type`: reinforcement (GRPO family,
`rft.train.step`), supervised (`rft.train.supervised`) and dpo (`rft.train.dpo`).

Each `FineTuningMethod` gives the loop (`rft.train.loop`) what differs between methods; everything else
(baseline and interval evaluation, checkpoints, gates, registry, lineage, exact resume, pause/cancel, report)
is the loop's and the same for all three:

    load_inputs(job) -> TrainInputs            data in the method's format, the grader (optional for supervised
                                               and dpo), resolved hyperparameters
    setup(job, inputs, restore=) -> TrainParts the policy, optimizer and engine (`setup_training`; supervised and
                                               dpo check memory on their prompts)
    prepare(parts) -> TrainParts               extra parts (DPO: its frozen reference)
    step(step, rows, parts, draw) -> StepOutcome   (None for reinforcement: the loop runs `rft.train.step.StepRunner`,
                                               one process or Ray, and `rl_outcome` turns its StepStats into one)
    loss_eval(parts, ds, step=, model_name=)   the evaluation without a grader (None: a grader is required)
    eval_rows(ds) -> Dataset                   the validation rows in evaluation form (prompt + reference fields)
    learnability                               the learnability check and warm start apply (reinforcement only)

Run: through `rft train JOB.yaml`; `METHODS.get_or_raise(job.method.type)` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rft.data import Dataset
from rft.data.chat_formats import eval_view
from rft.errors import Registry
from rft.train import dpo, supervised
from rft.train.setup import load_inputs, setup_training
from rft.train.step import StepStats, sample_rows, step_metrics


@dataclass(frozen=True)
class StepOutcome:
    """One step as the loop logs it."""

    metrics: dict  # the metrics.jsonl row ("step", "time/step", "tokens_per_second", ...)
    nonfinite: str | None  # why the update was refused, else None
    samples: list[dict] | None  # samples/step_N.jsonl rows (None: nothing sampled)
    tokens: int  # tokens the step trained on
    headline: str  # the step's event text after "Step k/N: "
    unscored_frac: float = 0.0  # share of samples the grader could not score (reinforcement)


@dataclass(frozen=True)
class FineTuningMethod:
    name: str
    load_inputs: Callable
    step: Callable | None
    setup: Callable = setup_training  # (job, inputs, restore=) -> TrainParts
    prepare: Callable = lambda parts: parts
    loss_eval: Callable | None = None
    eval_rows: Callable[[Dataset], Dataset] = lambda ds: ds
    learnability: bool = False
    has_targets: Callable[[Dataset], bool] = lambda ds: False  # validation rows carry targets (a loss applies)


METHODS = Registry("fine-tuning method")


def rl_outcome(res: StepStats, parts) -> StepOutcome:
    """A reinforcement step's StepStats as the loop logs it."""
    m = step_metrics(res, parts.grader.name)
    return StepOutcome(metrics=m, nonfinite=res.nonfinite, samples=sample_rows(res),
                       tokens=int(m["tokens_per_second"] * m["time/step"]), headline=f"reward {m['reward']:.3f}",
                       unscored_frac=m["unscored_frac"])


def _chat_step(fn):
    def run(step, rows, parts, draw=None) -> StepOutcome:
        res = fn(step, rows, parts, draw)
        return StepOutcome(metrics=res.metrics, nonfinite=res.nonfinite, samples=None, tokens=res.tokens,
                           headline=f"loss {res.metrics['train_loss']:.4f}")
    return run


METHODS.register("reinforcement")(FineTuningMethod("reinforcement", load_inputs, None, learnability=True))
METHODS.register("supervised")(FineTuningMethod(
    "supervised", supervised.load_chat_inputs, _chat_step(supervised.supervised_step),
    setup=supervised.setup_chat_training,
    loss_eval=supervised.validation_loss, eval_rows=lambda ds: eval_view(ds, "supervised"),
    has_targets=lambda ds: supervised.has_targets(ds, "supervised")))
METHODS.register("dpo")(FineTuningMethod(
    "dpo", supervised.load_chat_inputs, _chat_step(dpo.dpo_step), setup=supervised.setup_chat_training,
    prepare=dpo.with_reference,
    loss_eval=dpo.dpo_validation, eval_rows=lambda ds: eval_view(ds, "dpo"),
    has_targets=lambda ds: supervised.has_targets(ds, "dpo")))


def method_for(job) -> FineTuningMethod:
    return METHODS.get_or_raise(job.method.type)
