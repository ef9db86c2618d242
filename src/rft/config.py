"""The job spec: OpenAI's fine-tuning job body plus a typed `rft:` section for open-model settings.

    model, training_file, validation_file, seed, suffix, metadata,
    method: {type: reinforcement, reinforcement: {grader, hyperparameters, response_format?}}
          | {type: supervised, supervised: {hyperparameters: {n_epochs, batch_size, learning_rate_multiplier}, grader?}}
          | {type: dpo, dpo: {hyperparameters: {beta, n_epochs, batch_size, learning_rate_multiplier}, grader?}}
    rft: {algorithm, sampling, optimizer, lora, eval, checkpoint, extraction, train, sandbox, network, gates, monitor}

OpenAI hyperparameters map onto concrete values (`resolve()`; "auto" picks the documented default):
    batch_size               -> prompts per optimizer step              (auto: rft.train.prompts_per_step)
    n_epochs                 -> passes over the training file          (auto: 1; rft.train.max_steps caps steps)
    learning_rate_multiplier -> lr = rft.optimizer.lr * multiplier     (auto: 1.0)
    eval_interval            -> steps between validation evaluations   (auto: about 4 evaluations per run)
    eval_samples             -> sampled completions per validation item for pass@k (auto: rft.eval.samples)
    compute_multiplier       -> completions per prompt n = round(rft.sampling.n * multiplier) (auto: 1.0)
    reasoning_effort         -> accepted; open models here have no reasoning-effort control (recorded only)
Supervised and DPO: batch_size is rows (pairs) per step (auto: 8), n_epochs and learning_rate_multiplier as
above, eval_interval is rft's extension; DPO's beta auto is 0.1. Their `grader` (rft's extension, optional)
is an evaluation grader: without one, evaluations report the validation loss instead of accuracy.

Unknown keys are errors with a did-you-mean; `key=value` overrides use dotted paths. The fully resolved
config is written to the run folder as `resolved_config.yaml` and hashed (sha256 of its canonical JSON).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rft.errors import Problem, RftError, did_you_mean

Auto = Literal["auto"]

# Upper bounds that keep a run inside what one machine can hold; every number's range is listed by
# `ranges_table()` (README "Job spec value ranges") and tests/test_config_ranges.py fails on an unbounded one.
MAX_NEW_TOKENS = 32768
MAX_GROUP = 256  # completions per prompt after compute_multiplier: every one of them is decoded at once
MAX_PROMPTS_PER_STEP = 4096
MAX_COMPLETIONS_PER_STEP = 16384  # prompts per step x completions per prompt
MAX_STEPS = 10_000_000
MAX_SEED = 2**32 - 1  # numpy's RandomState takes [0, 2**32 - 1]; torch takes more


def _int(lo: int, hi: int) -> Any:
    """An int in [lo, hi] as one member of a union with "auto"."""
    return Annotated[int, Field(ge=lo, le=hi)]


class _Strict(BaseModel):
    # allow_inf_nan=False: NaN and inf (YAML .nan / .inf) are refused everywhere, not only outside a range
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Hyperparameters(_Strict):
    batch_size: Union[_int(1, MAX_PROMPTS_PER_STEP), Auto] = "auto"
    # OpenAI accepts multipliers above 1; the resulting learning rate is checked against (0, 1] in parse_job
    learning_rate_multiplier: Union[Annotated[float, Field(gt=0, le=10)], Auto] = "auto"
    n_epochs: Union[_int(1, 1000), Auto] = "auto"
    eval_interval: Union[_int(1, MAX_STEPS), Auto] = "auto"
    eval_samples: Union[_int(0, MAX_GROUP), Auto] = "auto"
    compute_multiplier: Union[Annotated[float, Field(gt=0, le=64)], Auto] = "auto"
    reasoning_effort: Literal["default", "low", "medium", "high"] = "default"


class Reinforcement(_Strict):
    grader: dict[str, Any]
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    response_format: dict[str, Any] | None = None  # OpenAI's; constrains sampling (rft.engine.constrain)

    @field_validator("response_format")
    @classmethod
    def _response_format_shape(cls, v):
        # The shape only (config is a leaf); the schema is compiled by rft.engine.constrain when the job starts.
        if v is None:
            return v
        t = v.get("type")
        if t not in ("text", "json_object", "json_schema"):
            raise ValueError(f"type must be one of text, json_object, json_schema, got {str(t)[:60]!r}")
        if t == "json_schema":
            js = v.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("name"), str) or not js.get("name") \
                    or not isinstance(js.get("schema", {}), dict):
                raise ValueError("json_schema must be an object with 'name' (a string) and 'schema' (a JSON Schema object)")
        return v


class SupervisedHyperparameters(_Strict):
    """OpenAI's supervised hyperparameters; eval_interval is rft's (steps between validation evaluations)."""

    batch_size: Union[_int(1, MAX_PROMPTS_PER_STEP), Auto] = "auto"  # rows per optimizer step (auto: 8)
    learning_rate_multiplier: Union[Annotated[float, Field(gt=0, le=10)], Auto] = "auto"
    n_epochs: Union[_int(1, 1000), Auto] = "auto"
    eval_interval: Union[_int(1, MAX_STEPS), Auto] = "auto"


class DpoHyperparameters(SupervisedHyperparameters):
    """OpenAI's DPO hyperparameters: the supervised ones plus beta, the sigmoid loss's inverse temperature."""

    beta: Union[Annotated[float, Field(gt=0, le=100)], Auto] = "auto"  # auto: 0.1


class Supervised(_Strict):
    """`method.supervised`: chat rows ending with the assistant's answer. `grader` is rft's (optional): with one,
    evaluations generate and grade like a reinforcement job's; without, they report the validation loss."""

    hyperparameters: SupervisedHyperparameters = Field(default_factory=SupervisedHyperparameters)
    grader: dict[str, Any] | None = None


class Dpo(_Strict):
    """`method.dpo`: preference rows (input, preferred_output, non_preferred_output); `grader` as in Supervised."""

    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)
    grader: dict[str, Any] | None = None


METHOD_TYPES = ("reinforcement", "supervised", "dpo")
DPO_BETA_AUTO = 0.1
SUPERVISED_BATCH_AUTO = 8


class Method(_Strict):
    """OpenAI's `method`: `type` names the one section that must be present (supervised and dpo may leave
    theirs out: every hyperparameter is then "auto"); a section of another type is an error."""

    type: Literal["reinforcement", "supervised", "dpo"] = "reinforcement"
    reinforcement: Reinforcement | None = None
    supervised: Supervised | None = None
    dpo: Dpo | None = None

    @model_validator(mode="after")
    def _own_section(self):
        # A section of another type is refused by rft.jobcheck.method_problems (every entry point runs it); the
        # schema alone accepts it so that each section's numbers can be range-checked on any job.
        if self.type == "reinforcement" and self.reinforcement is None:
            raise ValueError("method.type reinforcement needs method.reinforcement (its grader)")
        if self.type == "supervised" and self.supervised is None:
            self.__dict__["supervised"] = Supervised()  # no validate_assignment recursion
        if self.type == "dpo" and self.dpo is None:
            self.__dict__["dpo"] = Dpo()
        return self

    def other_sections(self) -> list[str]:
        """The sections given for a type other than `type` (an error: they would be ignored)."""
        return [n for n in METHOD_TYPES if n != self.type and getattr(self, n) is not None]

    @property
    def section(self) -> "Reinforcement | Supervised | Dpo":
        return getattr(self, self.type)


class AlgorithmConfig(_Strict):
    advantage: str = "grpo"  # registered in rft.algo.ADVANTAGES: grpo | rloo | dr_grpo
    loss: str = "grpo"  # registered in rft.algo.LOSSES: grpo | dapo | dr_grpo
    epsilon: float = Field(0.2, gt=0, le=1)
    epsilon_high: float | None = Field(None, gt=0, le=1)  # None: same as epsilon (DAPO suggests 0.28); >= epsilon
    beta: float = Field(0.0, ge=0, le=100)  # KL weight to the frozen reference; 0 skips the reference pass entirely
    num_iterations: int = Field(1, ge=1, le=64)  # optimizer passes per rollout batch (>1 reuses rollout log-probs)
    # DAPO dynamic sampling: draw more prompts until the step has its number of groups whose rewards differ.
    # auto: on when the learnability check at the start of `rft train` finds that nearly all groups would not differ.
    dynamic_sampling: Union[bool, Auto] = "auto"
    max_extra_draws: int = Field(8, ge=0, le=MAX_PROMPTS_PER_STEP)  # extra prompts one step may draw, at most


class SamplingConfig(_Strict):
    n: int = Field(8, ge=2, le=MAX_GROUP)  # completions per prompt (group size); group-relative RL needs 2
    # > 0: the engine's temperature 0 is greedy, which makes every completion of a group the same (nothing to
    # learn) and records log-probs at temperature 1 while the policy divides by max(T, 1e-6)
    temperature: float = Field(1.0, gt=0, le=100)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=1_000_000)  # 0: off
    max_new_tokens: int = Field(32, ge=1, le=MAX_NEW_TOKENS)
    stop: list[str] = Field(default_factory=list)


class OptimizerConfig(_Strict):
    lr: float = Field(2e-5, gt=0, le=1)
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS)
    weight_decay: float = Field(0.0, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0, le=1e6)  # 0: no clipping
    grad_accumulation: int = Field(1, ge=1, le=1024)  # micro-batches per optimizer step
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.99)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    # adamw: torch AdamW, fp32 moments (8 bytes a parameter); adamw_8bit: bitsandbytes' blockwise 8-bit AdamW
    # (2 bytes a parameter; `pip install bitsandbytes`), tensors under 4096 elements keep fp32 moments
    name: Literal["adamw", "adamw_8bit"] = "adamw"


class LoraConfig(_Strict):
    enabled: bool = False
    rank: int = Field(16, ge=1, le=4096)
    alpha: int = Field(32, ge=1, le=65536)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    # int8: the frozen base linears LoRA wraps are stored in int8 (1 byte a parameter; bitsandbytes' Linear8bitLt,
    # `pip install 'rft[memory]'`); the adapters and everything else keep rft.train.weights_dtype. rft.models.quant
    quantize_base: Literal["none", "int8"] = "none"

    @model_validator(mode="after")
    def _quantize_needs_lora(self):
        if self.quantize_base != "none" and not self.enabled:
            raise ValueError("rft.lora.quantize_base int8 stores the frozen base under LoRA adapters; it needs "
                             "rft.lora.enabled: true")
        return self


class EvalConfig(_Strict):
    max_items: int | None = Field(None, ge=1, le=10_000_000)  # limit the validation set (None: all rows)
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)  # None: same as sampling.max_new_tokens
    samples: int = Field(0, ge=0, le=MAX_GROUP)  # sampled completions per item for pass@k (0: greedy only)
    temperature: float = Field(1.0, ge=0, le=100)  # for the pass@k samples (0: greedy, every sample the same)
    baseline: bool = True
    final: bool = True
    # A second validation set that measures what must not get worse (gates.max_guard_regression), graded by
    # guard_grader (OpenAI grader JSON; default: the job's grader).
    guard_file: str | None = None
    guard_grader: dict | None = None


class CheckpointConfig(_Strict):
    save_final: bool = True
    at_eval: bool = True  # save a model checkpoint (registered, gated) at every evaluation
    # Model checkpoints kept by validation score, plus the latest and the final; the single best is always kept
    # (even with 0), as are approved and aliased ones.
    keep_best: int = Field(2, ge=0, le=1000)
    dtype: Literal["float32", "bfloat16"] = "float32"
    # Exact-resume training state (weights, optimizer, RNG, data cursor): every `state_interval` steps
    # (None: at every evaluation) and whenever the job pauses; the newest `keep_states` are kept.
    state_interval: int | None = Field(None, ge=1, le=MAX_STEPS)
    keep_states: int = Field(2, ge=1, le=1000)


class ExtractionConfig(_Strict):
    """Answer extraction, exposed to graders as {{sample.extracted}}; output_text stays the raw text."""

    pattern: str | None = None  # a regular expression; group 1 if it has groups, else the whole match
    occurrence: Literal["first", "last"] = "last"


class SandboxConfig(_Strict):
    """Limits for `python` graders (see rft.graders.sandbox for what is and is not protected)."""

    timeout_s: float = Field(120.0, gt=0, le=86400)  # wall clock per call
    cpu_s: float | None = Field(None, gt=0, le=86400)  # None: timeout_s + 1
    memory_mb: int = Field(2048, ge=64, le=1_048_576)  # below ~64 MB the interpreter itself cannot start
    nproc: int = Field(64, ge=1, le=65536)
    fsize_mb: int = Field(1024, ge=1, le=1_048_576)
    workers: int | None = Field(None, ge=1, le=1024)  # pool size (None: max(2, CPU count))
    isolation: Literal["auto", "namespaces", "basic"] = "auto"


class TrainConfig(_Strict):
    prompts_per_step: int = Field(2, ge=1, le=MAX_PROMPTS_PER_STEP)  # used when hyperparameters.batch_size is auto
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # compute dtype (auto: bf16 on CUDA, bf16 CPUs, bf16 weights)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    micro_batch_size: int | None = Field(None, ge=1, le=MAX_COMPLETIONS_PER_STEP)  # sequences per forward/backward (None: the whole step)
    max_unscored_frac: float = Field(0.5, ge=0, le=1)  # stop the run when a step's unscored share exceeds this
    # Steps whose loss or gradient is NaN/inf skip the update; this many in a row stop the run.
    max_nonfinite_steps: int = Field(3, ge=1, le=1000)
    log_samples: bool = True
    reference_output: str | None = None  # template; every row's reference must pass the grader
    # Generate step k+1's samples while step k trains (one step off-policy; the ratio uses the sampling policy's
    # log-probs; rollout/staleness is logged). rft.train.step.StepRunner.
    overlap_rollouts: bool = False
    # Memory (rft.train.memory forecasts each; `rft preflight` shows the breakdown). weights_dtype: the policy's
    # parameters; bfloat16 keeps an exact fp32 master copy split across the weight and a 16-bit remainder in the
    # optimizer state. gradient_checkpointing: keep only each layer's input in the forward and recompute the rest
    # in the backward. rollout_batch_size: sequences one engine batch decodes at once (bounds the KV cache).
    # memory_check: refuse (true) a job whose forecast peak exceeds the device's memory, or only warn (false).
    weights_dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = False
    rollout_batch_size: int = Field(64, ge=1, le=MAX_COMPLETIONS_PER_STEP)
    memory_check: bool = True


def _host_entry_problem(entry: str) -> str | None:
    """None when `entry` is an IP address, a CIDR block or a host name; else what is wrong with it."""
    import ipaddress
    import re

    if not isinstance(entry, str) or not entry.strip():
        return "an empty entry"
    e = entry.strip()
    try:
        if "/" in e:
            ipaddress.ip_network(e, strict=False)
        else:
            ipaddress.ip_address(e.strip("[]"))
        return None
    except ValueError:
        pass
    label = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    if "/" not in e and len(e) <= 253 and re.fullmatch(rf"{label}(?:\.{label})*\.?", e):
        return None
    return (f"'{e[:100]}' is not an IP address (10.0.0.5), a CIDR block (10.0.0.0/8) or a host name "
            "(grader.internal)")


class NetworkConfig(_Strict):
    """What `endpoint` graders may reach. Loopback, link-local and private addresses are refused (SSRF) unless
    listed here: host names, IP addresses or CIDR blocks, e.g. [localhost, 10.0.0.0/8]."""

    allow_private_hosts: list[str] = Field(default_factory=list, max_length=1000)

    @field_validator("allow_private_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        bad = [p for p in (_host_entry_problem(x) for x in v) if p]
        if bad:
            raise ValueError("; ".join(bad[:5]))
        return [x.strip() for x in v]


class GatesConfig(_Strict):
    """Quality gates: may a candidate checkpoint replace the baseline? (`rft.eval.gates.evaluate_gates`)"""

    # the paired 95% CI lower bound of candidate - baseline (validation set) must be above this
    min_improvement: float = Field(0.0, ge=-1.0, le=1.0)
    # guard set (rft.eval.guard_file): CI lower bound of candidate - baseline must be >= -max_guard_regression
    # (scores need not lie in [0, 1]: score_model graders have their own range, hence the wide upper bound)
    max_guard_regression: float = Field(0.0, ge=0.0, le=1e6)
    # the candidate's unscored (grader error) fraction; None: not checked
    max_grader_error_rate: float | None = Field(0.05, ge=0.0, le=1.0)
    # candidate mean completion tokens <= ratio * baseline's; None: not checked
    max_length_growth_ratio: float | None = Field(None, gt=0.0, le=1e6)
    # candidate mean completion tokens <= baseline's + this many tokens; None: not checked
    max_length_growth_tokens: float | None = Field(None, ge=0.0, le=1e7)
    # people's disagreement with the grader (rft review): at most this share of reviewed items, measured on at
    # least min_review_verdicts verdicts (fewer: the checkpoint is held); None: not checked
    max_grader_disagreement: float | None = Field(None, ge=0.0, le=1.0)
    min_review_verdicts: int = Field(20, ge=1, le=1_000_000)


# The reward-integrity monitor's alarm kinds (`rft.train.monitor.RewardMonitor` raises them).
ALARM_KINDS = ("reward_hacking", "entropy_collapse", "entropy_explosion", "kl_limit", "length_explosion",
               "reward_variance_vanished", "grader_disagreement")
AlarmAction = Literal["warn", "pause"]


class MonitorConfig(_Strict):
    """The reward-integrity monitor (`rft.train.monitor.RewardMonitor`; its docstring says what each alarm means)."""

    enabled: bool = True
    policy: AlarmAction = "warn"  # what every alarm asks for, unless `actions` says otherwise for its kind
    actions: dict[str, AlarmAction] = Field(default_factory=dict)  # per-kind override, e.g. {reward_hacking: pause}
    window: int = Field(5, ge=1, le=100_000)  # steps averaged for the current value of a metric
    early_steps: int = Field(5, ge=1, le=100_000)  # first steps averaged for the early (reference) value
    # reward hacking: training reward up while validation / guard score down
    eval_window: int = Field(2, ge=1, le=10_000)  # compare with the evaluation this many evaluations back
    min_reward_rise: float = Field(0.05, ge=0.0, le=1e6)
    min_score_drop: float = Field(0.02, ge=0.0, le=1e6)
    # entropy (None disables the check); a collapse is a fall below ratio x early, so the ratio is below 1
    entropy_collapse_ratio: float | None = Field(0.1, gt=0.0, lt=1.0)
    entropy_explosion_ratio: float | None = Field(5.0, gt=1.0, le=1e6)
    # KL to the reference (None: no limit)
    kl_max: float | None = Field(None, gt=0.0, le=1e6)
    # mean completion length against its early value (None disables the check)
    length_growth_ratio: float | None = Field(3.0, gt=1.0, le=1e6)
    # reward variance vanishing (None disables the check)
    zero_variance_steps: int | None = Field(3, ge=1, le=100_000)
    zero_std_frac: float = Field(0.95, gt=0.0, le=1.0)
    min_group_std: float = Field(1e-6, ge=0.0, le=1e6)
    # people's disagreement with the grader (rft review verdicts, checked every step): above this share, once
    # min_review_verdicts verdicts exist, the grader_disagreement alarm (None: off)
    max_grader_disagreement: float | None = Field(None, ge=0.0, le=1.0)
    min_review_verdicts: int = Field(20, ge=1, le=1_000_000)

    @field_validator("actions")
    @classmethod
    def _known_kinds(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if k not in ALARM_KINDS:
                raise ValueError(f"unknown alarm kind '{k}'{did_you_mean(k, ALARM_KINDS)}; valid: {', '.join(ALARM_KINDS)}")
        return v


class WarmStartConfig(_Strict):
    """A supervised warm start on reference outputs before RL (`rft.train.warm_start`): token cross-entropy on the
    rendered chat (prompt masked). auto: on when the learnability check finds nearly every group all-zero and the
    reference output is known (`reference_output`, rft.train.reference_output, or an exact-match string_check on
    {{sample.output_text}})."""

    enabled: Union[bool, Auto] = "auto"
    reference_output: str | None = None  # a template over the row, e.g. "{{item.answer}}"
    steps: int = Field(24, ge=1, le=100_000)
    batch_size: int = Field(8, ge=1, le=4096)  # rows per step
    lr: float = Field(5e-5, gt=0, le=1)


class LearnabilityConfig(_Strict):
    """The check at the start of `rft train` (`rft.train.learnability`): the base model's pass rate on a sample of
    training prompts at the training temperature, and the remedies when nearly all groups would not differ."""

    enabled: bool = True
    prompts: int = Field(16, ge=1, le=4096)  # training prompts sampled (G completions each)
    min_signal_frac: float = Field(0.25, ge=0, le=1)  # below this share of groups whose rewards differ: too sparse
    remedies: bool = True  # apply the safe remedies automatically (false: only report)
    max_group: int = Field(32, ge=2, le=MAX_GROUP)  # the larger-groups remedy grows completions per prompt up to this


# Experiment trackers (`rft.train.trackers`): the name in rft.report_to -> (module imported, pip package to install).
# The layer above checks that the module is installed (`rft.jobcheck.tracker_problems`).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow-skinny"),
                    "wandb": ("wandb", "wandb"), "trackio": ("trackio", "trackio")}
TrackerName = Literal["tensorboard", "mlflow", "wandb", "trackio"]
_Name = Annotated[str, Field(min_length=1, max_length=128)]
_PathStr = Annotated[str, Field(min_length=1, max_length=4096)]


class TensorBoardSettings(_Strict):
    dir: _PathStr | None = None  # event files; None: <run dir>/tensorboard


class MlflowSettings(_Strict):
    # None: a SQLite store in <run dir>/mlflow/mlflow.db with artifacts beside it; any MLflow URI otherwise
    # (sqlite:///path, a plain folder or file:/// for MLflow's file store, http://host:5000)
    tracking_uri: _PathStr | None = None
    experiment: _Name = "rft"
    run_name: _Name | None = None  # None: the job id


class WandbSettings(_Strict):
    """Always offline (files in the run folder; `wandb sync DIR` uploads them later). OpenAI's
    `integrations: [{type: wandb, wandb: {project, name, entity, tags}}]` fills these."""

    project: _Name = "rft"
    name: _Name | None = None  # None: the job id
    entity: _Name | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=64)
    dir: _PathStr | None = None  # None: the run dir (runs land in <dir>/wandb/offline-run-*)


class TrackioSettings(_Strict):
    project: _Name = "rft"
    name: _Name | None = None  # None: the job id
    dir: _PathStr | None = None  # trackio's TRACKIO_DIR; None: <run dir>/trackio


class RoleResources(_Strict):
    """What one Ray actor of a role asks the cluster for (Ray's logical resources)."""

    num_cpus: float = Field(1.0, ge=0, le=1024)
    num_gpus: float = Field(0.0, ge=0, le=64)


class ClusterConfig(_Strict):
    """Running a job on Ray (`rft train JOB --ray [ADDRESS]`; rft.train.distributed). `rollout_workers` also
    splits each step's prompts into that many shards, each sampled with its own seed, with or without Ray: the
    same spec samples the same completions on one process or on a cluster."""

    enabled: bool = False
    address: str | None = None  # None: a new local Ray (ray.init); "auto", "HOST:PORT" or "ray://HOST:PORT": connect
    rollout_workers: int = Field(1, ge=1, le=256)  # Ray actors holding an engine (and the rollout shards)
    grader_workers: int = Field(1, ge=0, le=256)  # Ray actors grading (0: the driver grades)
    trainer_workers: int = Field(1, ge=1, le=256)  # data-parallel ranks; the driver is rank 0
    # None: 1 when the grader tree has a score_model/label_model with a local judge model, else 0
    judge_workers: int | None = Field(None, ge=0, le=256)  # Ray actors holding the LLM judge
    # one placement group per job, a bundle per actor: PACK (colocated) or SPREAD (split) across nodes
    placement: Literal["colocated", "split"] = "colocated"
    placement_timeout_s: float = Field(60.0, gt=0, le=3600)  # waiting for the group's resources
    rollout: RoleResources = Field(default_factory=RoleResources)
    grader: RoleResources = Field(default_factory=RoleResources)
    trainer: RoleResources = Field(default_factory=RoleResources)
    judge: RoleResources = Field(default_factory=RoleResources)
    max_restarts: int = Field(2, ge=0, le=100)  # dead workers replaced per step before the job stops
    # torch.distributed backend; auto: nccl when the trainer is on CUDA and NCCL is available, else gloo
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    collective_timeout_s: float = Field(120.0, gt=0, le=86400)  # torch.distributed operations


class TrackersConfig(_Strict):
    tensorboard: TensorBoardSettings = Field(default_factory=TensorBoardSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    trackio: TrackioSettings = Field(default_factory=TrackioSettings)


class EngineConfig(_Strict):
    """Which engine samples the training rollouts (issue 15). local: rft's engine (on CUDA its static-cache decoder
    with the decode step in a CUDA graph, see rft.engine.cuda_decode); vllm: vLLM's offline engine in the trainer's
    process (`pip install 'rft[vllm]'`, CUDA only; rft.engine.vllm_engine)."""
    backend: Literal["local", "vllm"] = "local"
    cuda_graphs: bool = True  # local engine on CUDA: replay the decode step as a CUDA graph (false: eager, for debugging)
    gpu_memory_utilization: float = Field(0.3, gt=0, le=0.95)  # vllm: share of the GPU for its weights and KV cache


class RftSection(_Strict):
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    extraction: ExtractionConfig = Field(default_factory=ExtractionConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    monitor: MonitorConfig | None = None  # reward-integrity monitor (None: off)
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    learnability: LearnabilityConfig = Field(default_factory=LearnabilityConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)  # Ray (rft.train.distributed)
    # experiment trackers that get the metrics, config, evaluations and lineage (rft.train.trackers)
    report_to: list[TrackerName] = Field(default_factory=list, max_length=len(TRACKER_PACKAGES))
    trackers: TrackersConfig = Field(default_factory=TrackersConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)  # rollout engine (issue 15, GPU path)

    @field_validator("report_to")
    @classmethod
    def _unique_trackers(cls, v: list[str]) -> list[str]:
        twice = sorted({x for x in v if v.count(x) > 1})
        if twice:
            raise ValueError(f"listed more than once: {', '.join(twice)}")
        return v


class JobSpec(_Strict):
    # references and paths: at most PATH_MAX, so a pasted blob fails here rather than in a message
    model: str = Field("smollm2-135m-instruct", min_length=1, max_length=4096)
    training_file: str = Field(min_length=1, max_length=4096)
    validation_file: str | None = Field(None, max_length=4096)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    suffix: str | None = Field(default=None, max_length=64)
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    method: Method
    rft: RftSection = Field(default_factory=RftSection)

    @field_validator("metadata")
    @classmethod
    def _meta(cls, v):
        if v is not None and len(v) > 16:
            raise ValueError("at most 16 metadata pairs")
        return v

    @property
    def grader(self) -> dict[str, Any] | None:
        """The job's grader: reinforcement's (always one), or the optional evaluation grader of supervised/dpo."""
        return self.method.section.grader

    @property
    def grader_field(self) -> str:
        """Where the grader sits in the spec, for messages: method.<type>.grader."""
        return f"method.{self.method.type}.grader"

    @property
    def hp(self) -> Hyperparameters:
        """The method's hyperparameters as one shape (`Hyperparameters`): supervised and dpo fill the fields they
        share with reinforcement; the rest stay "auto" (DPO's beta is `dpo_beta`)."""
        h = self.method.section.hyperparameters
        if isinstance(h, Hyperparameters):
            return h
        return Hyperparameters(batch_size=h.batch_size, learning_rate_multiplier=h.learning_rate_multiplier,
                               n_epochs=h.n_epochs, eval_interval=h.eval_interval)

    @property
    def hp_field(self) -> str:
        return f"method.{self.method.type}.hyperparameters"

    @property
    def dpo_beta(self) -> float:
        """DPO's beta, "auto" resolved (DPO_BETA_AUTO)."""
        b = self.method.dpo.hyperparameters.beta if self.method.dpo is not None else "auto"
        return DPO_BETA_AUTO if b == "auto" else float(b)

    @property
    def response_format(self) -> dict[str, Any] | None:
        """method.reinforcement.response_format (None for the other methods)."""
        return self.method.reinforcement.response_format if self.method.reinforcement is not None else None


# ------------------------------------------------------------------------------------------ value ranges
@dataclass(frozen=True)
class FieldRange:
    """The documented range of one number in the job spec (read from the models' Field constraints)."""

    key: str  # dotted path, e.g. rft.sampling.temperature
    kind: str  # "int" | "float"
    lo: float | None
    lo_open: bool
    hi: float | None
    hi_open: bool
    auto: bool = False  # "auto" is also accepted
    optional: bool = False  # null is also accepted
    count: int = 1  # a tuple of `count` such numbers (optimizer.betas)
    default: Any = None

    def interval(self) -> str:
        lo = "-inf" if self.lo is None else _fmt_num(self.lo)
        hi = "inf" if self.hi is None else _fmt_num(self.hi)
        return f"{'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"

    def text(self) -> str:
        """'(0, 100]', '[1, 4096] or "auto"', '[1, 1000] or null'."""
        return self.interval() + (' or "auto"' if self.auto else "") + (" or null" if self.optional else "")


def _fmt_num(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    if isinstance(x, int):
        return "2**32 - 1" if x == 2**32 - 1 else f"{x:_}" if abs(x) >= 100_000 else str(x)
    return repr(x)


def _members(ann: Any, meta: tuple = ()):
    """The parts of a field annotation: ("num", int|float, constraints), ("auto",), ("none",), ("model", cls),
    ("tuple", n) before a tuple's members. Looks through Annotated, Optional/Union, tuple, list and dict."""
    import types
    from typing import get_args, get_origin

    origin = get_origin(ann)
    if origin is Annotated:
        base, *extra = get_args(ann)
        cons = [c for x in extra for c in getattr(x, "metadata", [x])]  # a Field(...) keeps its bounds in .metadata
        yield from _members(base, meta + tuple(cons))
    elif origin in (Union, types.UnionType):
        for a in get_args(ann):
            yield from _members(a, meta)
    elif origin is tuple:
        args = [a for a in get_args(ann) if a is not Ellipsis]
        yield ("tuple", len(args))
        for a in args:
            yield from _members(a, meta)
    elif origin in (list, dict, set, frozenset):
        for a in get_args(ann):
            yield from _members(a, ())
    elif origin is Literal:
        if "auto" in get_args(ann):
            yield ("auto",)
    elif ann is type(None):
        yield ("none",)
    elif ann in (int, float):
        yield ("num", ann, meta)
    elif isinstance(ann, type) and issubclass(ann, BaseModel):
        yield ("model", ann)


def numeric_fields(model: type[BaseModel] | None = None, prefix: str = "") -> list[FieldRange]:
    """Every number in the job spec with its range, walking the nested models (`JobSpec` by default)."""
    model = model or JobSpec
    out: list[FieldRange] = []
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        parts = list(_members(f.annotation, tuple(f.metadata)))
        tags = {p[0] for p in parts}
        count = next((p[1] for p in parts if p[0] == "tuple"), 1)
        seen = set()
        for p in parts:
            if p[0] == "model":
                out += numeric_fields(p[1], key + ".")
            elif p[0] == "num":
                def bound(attr):
                    return next((getattr(c, attr) for c in p[2] if getattr(c, attr, None) is not None), None)
                ge, gt, le, lt = bound("ge"), bound("gt"), bound("le"), bound("lt")
                r = FieldRange(key, p[1].__name__, gt if gt is not None else ge, gt is not None,
                               lt if lt is not None else le, lt is not None, "auto" in tags, "none" in tags, count,
                               None if f.default_factory else f.default)
                if r not in seen:
                    seen.add(r)
                    out.append(r)
    return out


_RANGES: dict[str, FieldRange] = {}


def _range_of(key: str) -> FieldRange | None:
    if not _RANGES:
        for r in numeric_fields():
            _RANGES.setdefault(r.key, r)
    return _RANGES.get(key)


def ranges_table() -> str:
    """The job spec's numbers as a markdown table (key, type, range, default) for the README."""
    rows = ["| key | type | range | default |", "|---|---|---|---|"]
    for r in numeric_fields():
        kind = ("integer" if r.kind == "int" else "number") if r.count == 1 else \
            f"{r.count} {'integers' if r.kind == 'int' else 'numbers'}"
        d = r.default
        default = "null" if d is None else json.dumps(list(d) if isinstance(d, tuple) else d)
        rows.append(f"| `{r.key}` | {kind} | {r.text().replace('|', chr(92) + '|')} | {default} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------------
def _known_fields(model_cls, path: list[str]) -> list[str]:
    cls = model_cls
    for part in path:
        f = cls.model_fields.get(part) if hasattr(cls, "model_fields") else None
        if f is None:
            return []
        models = [p[1] for p in _members(f.annotation) if p[0] == "model"]  # also MonitorConfig | None
        if not models:
            return []
        cls = models[0]
    return list(cls.model_fields) if hasattr(cls, "model_fields") else []


def _show(v: Any, limit: int = 100) -> str:
    """A value as the user wrote it, short: huge strings and integers are cut, never printed whole."""
    if isinstance(v, bool):
        s = str(v).lower()
    elif isinstance(v, int):
        if v.bit_length() <= 128:
            s = str(v)
        elif v.bit_length() < 14_000:  # str() refuses more than 4300 digits
            s = f"an integer of {len(str(abs(v)))} digits"
        else:
            s = f"an integer of about {int(v.bit_length() * 0.30103):,} digits"
    elif isinstance(v, str):
        s = v
    else:
        try:
            s = repr(v)
        except (ValueError, RecursionError):  # an int beyond Python's str() digit limit inside a container
            s = f"a {type(v).__name__} too large to show"
    return s if len(s) <= limit else s[:limit] + f"... ({len(s):,} characters)"


_UNION_TAGS = ("literal[", "function-", "constrained-", "nullable[", "tuple[", "list[", "dict[")


def _pydantic_problems(err: ValidationError, source: str | None) -> list[Problem]:
    out = []
    for e in err.errors():
        # pydantic reports union members as extra loc parts ("int", "constrained-int", "literal['auto']"); drop them
        loc = [str(x) for x in e["loc"] if not (isinstance(x, str) and (x.startswith(_UNION_TAGS) or
                                                                        x in ("int", "float", "str", "bool", "none")))]
        path = ".".join(loc)
        rng = _range_of(".".join(x for x in loc if not x.isdigit()))
        if e["type"] == "extra_forbidden":
            parent = [str(x) for x in e["loc"][:-1]]
            options = _known_fields(JobSpec, parent)
            msg = f"unknown key '{_show(e['loc'][-1], 80)}'{did_you_mean(str(e['loc'][-1]), options)}"
            if options:
                msg += f"; valid keys here: {', '.join(options)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif rng is not None:
            if e["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
                what = ""
            elif e["type"] == "finite_number":
                what = "a finite number "
            else:
                what = "an integer " if rng.kind == "int" else "a number "
            msg = f"must be {what}in {rng.text()}, got {_show(e.get('input'))}"
        elif e["type"] == "value_error":  # our own validators: their message says what is wrong
            msg = str(e["msg"]).removeprefix("Value error, ")
        else:
            msg = f"{e['msg']} (got {_show(e.get('input'))})"
        out.append(Problem(msg, file=source, field=path))
    # one complaint per number (a union with "auto" fails once per member), no repeats elsewhere
    seen, uniq = set(), []
    for p in out:
        k = p.field if _range_of(p.field or "") else (p.field, p.message)
        if k not in seen:
            seen.add(k)
            uniq.append(p)
    return uniq


MAX_OVERRIDE_CHARS = 100_000


class _AliasInOverride(Exception):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """Override values are one-liners: YAML anchors and aliases there can only be an alias bomb."""

    def compose_node(self, parent, index):  # noqa: D401 - yaml's hook
        if self.check_event(yaml.events.AliasEvent):
            raise _AliasInOverride()
        return super().compose_node(parent, index)


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[:n] + "..."


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML; text that is not valid YAML stays a string)."""
    import re

    if not isinstance(text, str):
        raise RftError(f"override {_show(text)} is not key=value text")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise RftError(f"override '{_short(text)}' is {len(text):,} characters; the limit is {MAX_OVERRIDE_CHARS:,}")
    if "=" not in text:
        raise RftError(f"override '{_short(text)}' is not key=value (e.g. rft.sampling.temperature=0.7)")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise RftError(f"override '{_short(text)}' has an empty key")
    parts = key.split(".")
    if any(not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}", p) for p in parts) or len(parts) > 16:
        why = "an empty part (a..b, .a or a.)" if "" in parts else "a part that is not a name (letters, digits, _ or -)"
        raise RftError(f"override '{_short(text)}': the key '{_short(key)}' has {why}; "
                       "keys are dotted names like rft.sampling.temperature")
    if not value.strip():
        return parts, ""
    try:
        parsed = yaml.load(value, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasInOverride:
        raise RftError(f"override '{_short(key)}': values cannot use YAML aliases (*name); write the value out") from None
    except yaml.YAMLError:
        parsed = value  # not YAML: the text itself (e.g. a grader template with a colon)
    except RecursionError:
        raise RftError(f"override '{_short(key)}': the value nests too deeply to parse") from None
    except (ValueError, OverflowError) as e:  # PyYAML's int() of a number with more than 4300 digits
        raise RftError(f"override '{_short(key)}': the value cannot be read: {_short(str(e), 120)}") from None
    from rft.userinput import check_depth

    check_depth(parsed, f"override '{_short(key)}'", "override value")
    return parts, parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        cur = raw
        for i, part in enumerate(path[:-1]):
            nxt = cur.get(part)
            if nxt is None:
                nxt = cur[part] = {}
            if not isinstance(nxt, dict):
                raise RftError(f"override '{_short(text)}': '{'.'.join(path[: i + 1])}' is not a section "
                               f"(it holds {_show(nxt, 40)})")
            cur = nxt
        cur[path[-1]] = value
    return raw


MAX_JOB_BYTES = 4 * 1024 * 1024  # a job spec is a page of YAML; even inline python graders fit many times over


def load_raw(path: str | Path) -> dict:
    """The job file's mapping. Every way the file can be wrong (missing, a directory, binary, not UTF-8, not
    JSON/YAML, too deep, an alias bomb, too large, not a mapping) is one RftError naming the file."""
    from rft.userinput import load_mapping_file

    try:
        return load_mapping_file(path, "job spec", max_bytes=MAX_JOB_BYTES)
    except (ValueError, OverflowError) as e:  # PyYAML's int() of a number with more than 4300 digits
        raise RftError(f"{path}: the job spec has a value that cannot be read: {_short(str(e), 120)}") from None


def parse_schema(raw: dict, source: str | None = None) -> JobSpec:
    """The job spec's schema alone: every key known, every value of the right kind and in its range."""
    from rft.userinput import check_depth

    check_depth(raw, source or "job spec", "job spec")  # deep values would reach pydantic's recursion limit
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        raise RftError(f"invalid job spec{f' {source}' if source else ''}", _pydantic_problems(e, source)) from None


def spec_problems(job: JobSpec, source: str | None = None) -> list[Problem]:
    """What is wrong with a schema-valid spec that the spec alone can tell: the extraction pattern does not
    compile, or two fields together leave their range (`_cross_field_problems`)."""
    problems = []
    if job.rft.extraction.pattern:
        import re

        try:
            re.compile(job.rft.extraction.pattern)
        except (re.error, RecursionError, OverflowError) as e:
            problems.append(Problem(f"invalid regular expression: {e}", file=source, field="rft.extraction.pattern"))
    return problems + _cross_field_problems(job, source)


_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_SECRET_KEY = re.compile(r"(?i)(^|_)(api_?key|password|secret|token|authorization)$")
REDACTED = "[redacted]"


def redact_secrets(obj: Any) -> Any:
    """A copy of a job spec (or any part of one) fit to show: grader `headers` values and fields named like a
    key, password, secret or token are replaced by "[redacted]" unless they are only `${ENV_VAR}` references
    (which is how specs should carry keys). Secrets in a spec are write-only: rft runs with them and never shows
    them back (the job API, the dashboard)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "headers" and isinstance(v, dict):
                out[k] = {hk: (hv if isinstance(hv, str) and _ENV_REF.fullmatch(hv.strip()) else REDACTED)
                          for hk, hv in v.items()}
            elif isinstance(k, str) and _SECRET_KEY.search(k) and isinstance(v, str) and v and not _ENV_REF.fullmatch(v.strip()):
                out[k] = REDACTED
            else:
                out[k] = redact_secrets(v)
        return out
    if isinstance(obj, list):
        return [redact_secrets(v) for v in obj]
    return obj


def raise_problems(problems: list[Problem], source: str | None = None) -> None:
    """One RftError listing every problem of the job spec at `source` (nothing when the list is empty)."""
    if problems:
        raise RftError(f"invalid job spec{f' {source}' if source else ''}", problems)


def parse_job(raw: dict, source: str | None = None) -> JobSpec:
    """The typed job spec from a raw mapping: `parse_schema`, then `spec_problems`.

    Simplified: names registered above this layer (the advantage and the loss in rft.algo) and the grader
    (rft.graders) are not checked here; `rft.jobcheck.parse_job` / `load_job` add those checks, and every
    entry point (CLI, training, resume) reads job specs through it."""
    job = parse_schema(raw, source)
    raise_problems(spec_problems(job, source), source)
    return job


def _cross_field_problems(job: JobSpec, source: str | None) -> list[Problem]:
    """Ranges that depend on two fields: the clip window, the learning rate, completions per prompt and step."""
    out = []
    a, hp = job.rft.algorithm, job.hp
    if a.epsilon_high is not None and a.epsilon_high < a.epsilon:
        out.append(Problem(f"must be >= rft.algorithm.epsilon ({a.epsilon}), got {a.epsilon_high}", file=source,
                           field="rft.algorithm.epsilon_high"))
    if hp.learning_rate_multiplier != "auto" and job.rft.optimizer.lr * hp.learning_rate_multiplier > 1:
        out.append(Problem(f"the learning rate rft.optimizer.lr x learning_rate_multiplier = "
                           f"{job.rft.optimizer.lr * hp.learning_rate_multiplier:g} must be in (0, 1]", file=source,
                           field=f"{job.hp_field}.learning_rate_multiplier"))
    cm = 1.0 if hp.compute_multiplier == "auto" else float(hp.compute_multiplier)
    group = max(2, round(job.rft.sampling.n * cm))
    if group > MAX_GROUP:
        out.append(Problem(f"completions per prompt = round(rft.sampling.n {job.rft.sampling.n} x compute_multiplier "
                           f"{cm:g}) = {group} must be at most {MAX_GROUP} (they are decoded at once)", file=source,
                           field=f"{job.hp_field}.compute_multiplier"))
    if job.method.type != "reinforcement":  # one sequence (or pair) per row: no completions per prompt
        return out
    prompts = job.rft.train.prompts_per_step if hp.batch_size == "auto" else int(hp.batch_size)
    if group <= MAX_GROUP and prompts * group > MAX_COMPLETIONS_PER_STEP:
        key = "rft.train.prompts_per_step" if hp.batch_size == "auto" else f"{job.hp_field}.batch_size"
        out.append(Problem(f"completions per step = {prompts} prompts x {group} completions = {prompts * group} "
                           f"must be at most {MAX_COMPLETIONS_PER_STEP}", file=source, field=key))
    return out


def check_context_length(job: JobSpec, context_length: int, source: str | None = None) -> None:
    """RftError when the tokens to generate cannot fit the model's context window next to a prompt:
    rft.sampling.max_new_tokens and rft.eval.max_new_tokens must both be below `context_length`."""
    problems = []
    for key, n in (("rft.sampling.max_new_tokens", job.rft.sampling.max_new_tokens),
                   ("rft.eval.max_new_tokens", job.rft.eval.max_new_tokens)):
        if n is not None and n >= context_length:
            problems.append(Problem(f"{n} new tokens do not fit the model's context length of {context_length} "
                                    f"tokens with a prompt; use at most {max(1, context_length - 1)} (less the "
                                    "prompt's length)", file=source, field=key))
    if problems:
        raise RftError(f"invalid job spec{f' {source}' if source else ''}: max_new_tokens does not fit the model's "
                       f"context length ({context_length} tokens)", problems)


def load_job(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """`parse_job` of the file at `path` with `key=value` overrides applied (schema-level checks only; see
    `rft.jobcheck.load_job` for the full check)."""
    raw = apply_overrides(load_raw(path), overrides or [])
    return parse_job(raw, str(path))


# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """The concrete values a run uses for every 'auto' hyperparameter, plus the derived step counts. `as_dict()`
    is what resolved_config.yaml records and the config sha256 covers (the field order is the written order)."""

    prompts_per_step: int
    completions_per_prompt: int
    n_epochs: int
    steps_per_epoch: int
    total_steps: int
    learning_rate: float
    eval_interval: int
    eval_samples: int

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def resolve(job: JobSpec, n_train_rows: int) -> Resolved:
    """Concrete values for every 'auto' hyperparameter, plus the derived step counts."""
    hp = job.hp
    rl = job.method.type == "reinforcement"
    auto_batch = job.rft.train.prompts_per_step if rl else SUPERVISED_BATCH_AUTO
    prompts = auto_batch if hp.batch_size == "auto" else int(hp.batch_size)
    epochs = 1 if hp.n_epochs == "auto" else int(hp.n_epochs)
    steps_per_epoch = max(1, math.ceil(n_train_rows / prompts))
    total = steps_per_epoch * epochs
    if job.rft.train.max_steps is not None:
        total = min(total, job.rft.train.max_steps) if hp.n_epochs != "auto" else job.rft.train.max_steps
    mult = 1.0 if hp.learning_rate_multiplier == "auto" else float(hp.learning_rate_multiplier)
    cm = 1.0 if hp.compute_multiplier == "auto" else float(hp.compute_multiplier)
    n = max(2, round(job.rft.sampling.n * cm)) if rl else 1  # supervised/dpo: one target sequence (pair) per row
    eval_interval = max(1, total // 4) if hp.eval_interval == "auto" else int(hp.eval_interval)
    eval_samples = job.rft.eval.samples if hp.eval_samples == "auto" else int(hp.eval_samples)
    return Resolved(
        prompts_per_step=prompts,
        completions_per_prompt=n,
        n_epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        learning_rate=job.rft.optimizer.lr * mult,
        eval_interval=eval_interval,
        eval_samples=eval_samples,
    )


def resolved_dict(job: JobSpec, values: Resolved) -> dict:
    """The job spec with its resolved values under "resolved": what is written and hashed with every run."""
    d = job.model_dump(mode="json")
    d["resolved"] = values.as_dict()
    return d


def config_sha256(resolved: dict) -> str:
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def dump_yaml(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
