"""The job spec: OpenAI's fine-tuning job body plus a typed `rft:` section for open-model settings.

    model, training_file, validation_file, seed, suffix, metadata,
    method: {type: reinforcement, reinforcement: {grader, hyperparameters, response_format?}}
    rft: {algorithm, sampling, optimizer, lora, eval, checkpoint, extraction, train}

OpenAI hyperparameters map onto concrete values (`resolve()`; "auto" picks the documented default):
    batch_size               -> prompts per optimizer step              (auto: rft.train.prompts_per_step)
    n_epochs                 -> passes over the training file          (auto: 1; rft.train.max_steps caps steps)
    learning_rate_multiplier -> lr = rft.optimizer.lr * multiplier     (auto: 1.0)
    eval_interval            -> steps between validation evaluations   (auto: about 4 evaluations per run)
    eval_samples             -> sampled completions per validation item for pass@k (auto: rft.eval.samples)
    compute_multiplier       -> completions per prompt n = round(rft.sampling.n * multiplier) (auto: 1.0)
    reasoning_effort         -> accepted; open models here have no reasoning-effort control (recorded only)

Unknown keys are errors with a did-you-mean; `key=value` overrides use dotted paths. The fully resolved
config is written to the run folder as `resolved_config.yaml` and hashed (sha256 of its canonical JSON).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rft.errors import Problem, RftError, did_you_mean

Auto = Literal["auto"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Hyperparameters(_Strict):
    batch_size: Union[int, Auto] = "auto"
    learning_rate_multiplier: Union[float, Auto] = "auto"
    n_epochs: Union[int, Auto] = "auto"
    eval_interval: Union[int, Auto] = "auto"
    eval_samples: Union[int, Auto] = "auto"
    compute_multiplier: Union[float, Auto] = "auto"
    reasoning_effort: Literal["default", "low", "medium", "high"] = "default"


class Reinforcement(_Strict):
    grader: dict[str, Any]
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    response_format: dict[str, Any] | None = None


class Method(_Strict):
    type: Literal["reinforcement"] = "reinforcement"
    reinforcement: Reinforcement


class AlgorithmConfig(_Strict):
    advantage: str = "grpo"  # registered in rft.algo.ADVANTAGES: grpo | rloo | dr_grpo
    loss: str = "grpo"  # registered in rft.algo.LOSSES: grpo | dapo | dr_grpo
    epsilon: float = 0.2
    epsilon_high: float | None = None  # None: same as epsilon (DAPO suggests 0.28)
    beta: float = 0.0  # KL weight to the frozen reference; 0 skips the reference pass entirely
    num_iterations: int = 1  # optimizer passes per rollout batch (>1 reuses rollout log-probs as old policy)


class SamplingConfig(_Strict):
    n: int = 8  # completions per prompt (group size)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 32
    stop: list[str] = Field(default_factory=list)


class OptimizerConfig(_Strict):
    lr: float = 2e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accumulation: int = 1  # micro-batches per optimizer step
    betas: tuple[float, float] = (0.9, 0.99)
    schedule: Literal["constant", "linear", "cosine"] = "constant"


class LoraConfig(_Strict):
    enabled: bool = False
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


class EvalConfig(_Strict):
    max_items: int | None = None  # limit the validation set (None: all rows)
    max_new_tokens: int | None = None  # None: same as sampling.max_new_tokens
    samples: int = 0  # sampled completions per item for pass@k (0: greedy only)
    temperature: float = 1.0  # for the pass@k samples
    baseline: bool = True
    final: bool = True
    # A second validation set that measures what must not get worse (gates.max_guard_regression), graded by
    # guard_grader (OpenAI grader JSON; default: the job's grader).
    guard_file: str | None = None
    guard_grader: dict | None = None


class CheckpointConfig(_Strict):
    save_final: bool = True
    at_eval: bool = True  # save a model checkpoint (registered, gated) at every evaluation
    keep_best: int = Field(2, ge=0)  # model checkpoints kept by validation score, plus the latest and the final
    dtype: Literal["float32", "bfloat16"] = "float32"
    # Exact-resume training state (weights, optimizer, RNG, data cursor): every `state_interval` steps
    # (None: at every evaluation) and whenever the job pauses; the newest `keep_states` are kept.
    state_interval: int | None = Field(None, ge=1)
    keep_states: int = Field(2, ge=1)


class ExtractionConfig(_Strict):
    """Answer extraction, exposed to graders as {{sample.extracted}}; output_text stays the raw text."""

    pattern: str | None = None  # a regular expression; group 1 if it has groups, else the whole match
    occurrence: Literal["first", "last"] = "last"


class SandboxConfig(_Strict):
    """Limits for `python` graders (see rft.graders.sandbox for what is and is not protected)."""

    timeout_s: float = 120.0  # wall clock per call
    cpu_s: float | None = None  # None: timeout_s + 1
    memory_mb: int = 2048
    nproc: int = 64
    fsize_mb: int = 1024
    workers: int | None = None  # pool size (None: max(2, CPU count))
    isolation: Literal["auto", "namespaces", "basic"] = "auto"


class TrainConfig(_Strict):
    prompts_per_step: int = 2  # used when hyperparameters.batch_size is auto
    max_steps: int | None = None
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # compute dtype; master weights stay fp32
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    micro_batch_size: int | None = None  # sequences per forward/backward (None: the whole step)
    max_unscored_frac: float = 0.5  # stop the run when a step's unscored share exceeds this
    log_samples: bool = True
    reference_output: str | None = None  # template; every row's reference must pass the grader


# Imported here, after ExtractionConfig: rft.eval's package imports this module for it.
from rft.eval.gates import GatesConfig  # noqa: E402
from rft.train.monitor import MonitorConfig  # noqa: E402


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
    gates: GatesConfig = Field(default_factory=GatesConfig)
    monitor: MonitorConfig | None = None  # reward-integrity monitor (None: off)


class JobSpec(_Strict):
    model: str = "smollm2-135m-instruct"
    training_file: str
    validation_file: str | None = None
    seed: int = 0
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
    def grader(self) -> dict[str, Any]:
        return self.method.reinforcement.grader

    @property
    def hp(self) -> Hyperparameters:
        return self.method.reinforcement.hyperparameters


# ---------------------------------------------------------------------------------------------------
def _known_fields(model_cls, path: list[str]) -> list[str]:
    cls = model_cls
    for part in path:
        f = cls.model_fields.get(part) if hasattr(cls, "model_fields") else None
        if f is None:
            return []
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        else:
            return []
    return list(cls.model_fields) if hasattr(cls, "model_fields") else []


def _pydantic_problems(err: ValidationError, source: str | None) -> list[Problem]:
    out = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"] if not isinstance(x, int) or True]
        # pydantic reports union members as extra loc parts ("int", "literal['auto']"); drop them
        loc = [x for x in loc if not x.startswith(("literal[", "function-")) and x not in ("int", "float", "str")]
        path = ".".join(loc)
        if e["type"] == "extra_forbidden":
            parent = [str(x) for x in e["loc"][:-1]]
            options = _known_fields(JobSpec, parent)
            msg = f"unknown key '{e['loc'][-1]}'{did_you_mean(str(e['loc'][-1]), options)}"
            if options:
                msg += f"; valid keys here: {', '.join(options)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = f"{e['msg']} (got {e.get('input')!r})"
        out.append(Problem(msg, file=source, field=path))
    # de-duplicate (union members repeat the same complaint)
    seen, uniq = set(), []
    for p in out:
        if (p.field, p.message) not in seen:
            seen.add((p.field, p.message))
            uniq.append(p)
    return uniq


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise RftError(f"override '{text}' is not key=value (e.g. rft.sampling.temperature=0.7)")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise RftError(f"override '{text}' has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        cur = raw
        for i, part in enumerate(path[:-1]):
            nxt = cur.get(part)
            if nxt is None:
                nxt = cur[part] = {}
            if not isinstance(nxt, dict):
                raise RftError(f"override '{text}': '{'.'.join(path[: i + 1])}' is not a section")
            cur = nxt
        cur[path[-1]] = value
    return raw


def load_raw(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise RftError(f"job file not found: {path}")
    text = p.read_text()
    try:
        raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise RftError(f"{path}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from None
    if not isinstance(raw, dict):
        raise RftError(f"{path}: a job spec must be a mapping at the top level")
    return raw


def parse_job(raw: dict, source: str | None = None) -> JobSpec:
    try:
        job = JobSpec.model_validate(raw)
    except ValidationError as e:
        raise RftError(f"invalid job spec{f' {source}' if source else ''}", _pydantic_problems(e, source)) from None
    from rft import algo

    problems = []
    if job.rft.algorithm.advantage not in algo.ADVANTAGES:
        problems.append(Problem(f"unknown advantage '{job.rft.algorithm.advantage}'{did_you_mean(job.rft.algorithm.advantage, list(algo.ADVANTAGES))}; valid: {', '.join(algo.ADVANTAGES)}", file=source, field="rft.algorithm.advantage"))
    if job.rft.algorithm.loss not in algo.LOSSES:
        problems.append(Problem(f"unknown loss '{job.rft.algorithm.loss}'{did_you_mean(job.rft.algorithm.loss, list(algo.LOSSES))}; valid: {', '.join(algo.LOSSES)}", file=source, field="rft.algorithm.loss"))
    from rft.graders.run import validate_reinforcement_grader

    for p in validate_reinforcement_grader(job.grader, "method.reinforcement.grader"):
        problems.append(Problem(p.message, file=source, field=p.field))
    if job.rft.extraction.pattern:
        import re

        try:
            re.compile(job.rft.extraction.pattern)
        except re.error as e:
            problems.append(Problem(f"invalid regular expression: {e}", file=source, field="rft.extraction.pattern"))
    if job.rft.sampling.n < 2:
        problems.append(Problem("group-relative RL needs at least 2 completions per prompt", file=source, field="rft.sampling.n"))
    if problems:
        raise RftError(f"invalid job spec{f' {source}' if source else ''}", problems)
    return job


def load_job(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    raw = apply_overrides(load_raw(path), overrides or [])
    return parse_job(raw, str(path))


# ---------------------------------------------------------------------------------------------------
def resolve(job: JobSpec, n_train_rows: int) -> dict:
    """Concrete values for every 'auto' hyperparameter, plus the derived step counts."""
    hp = job.hp
    prompts = job.rft.train.prompts_per_step if hp.batch_size == "auto" else int(hp.batch_size)
    epochs = 1 if hp.n_epochs == "auto" else int(hp.n_epochs)
    steps_per_epoch = max(1, math.ceil(n_train_rows / prompts))
    total = steps_per_epoch * epochs
    if job.rft.train.max_steps is not None:
        total = min(total, job.rft.train.max_steps) if hp.n_epochs != "auto" else job.rft.train.max_steps
    mult = 1.0 if hp.learning_rate_multiplier == "auto" else float(hp.learning_rate_multiplier)
    cm = 1.0 if hp.compute_multiplier == "auto" else float(hp.compute_multiplier)
    n = max(2, round(job.rft.sampling.n * cm))
    eval_interval = max(1, total // 4) if hp.eval_interval == "auto" else int(hp.eval_interval)
    eval_samples = job.rft.eval.samples if hp.eval_samples == "auto" else int(hp.eval_samples)
    return {
        "prompts_per_step": prompts,
        "completions_per_prompt": n,
        "n_epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "learning_rate": job.rft.optimizer.lr * mult,
        "eval_interval": eval_interval,
        "eval_samples": eval_samples,
    }


def resolved_dict(job: JobSpec, derived: dict) -> dict:
    d = job.model_dump(mode="json")
    d["resolved"] = derived
    return d


def config_sha256(resolved: dict) -> str:
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def dump_yaml(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
