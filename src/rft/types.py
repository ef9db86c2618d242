"""The small frozen dataclasses that pass between stages.

engine -> Completion; graders -> GradeResult; eval -> MetricCI, EvalReport. Training-only values (tensors,
step statistics) are defined in rft.train, next to the loop that makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The OpenAI grader error taxonomy (graders/run response, metadata.errors). An error means "unscored".
ERROR_KINDS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


@dataclass(frozen=True)
class Completion:
    """One generated completion. `logprobs[i]` is log p(token_ids[i]) under the temperature-scaled policy
    (before top-p/top-k truncation), the quantity the training loss recomputes."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str  # "stop" (EOS or stop string) | "length"
    prompt_tokens: int = 0
    # Predicted outputs (speculative decoding with a user-supplied draft): how many draft tokens the model
    # verified and kept, and how many it rejected. Both 0 when the request carried no prediction.
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


@dataclass(frozen=True)
class GradeResult:
    """A grader's verdict on one sample. `score is None` means unscored, and `error` says why."""

    score: float | None
    error: str | None = None
    details: str | None = None
    sub_scores: dict[str, float | None] = field(default_factory=dict)
    latency_s: float = 0.0
    sub_latency_s: dict[str, float] = field(default_factory=dict)  # multi: each sub-grader's latency
    name: str = ""

    @property
    def scored(self) -> bool:
        return self.score is not None


@dataclass(frozen=True)
class MetricCI:
    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": [self.low, self.high], "n": self.n}


@dataclass(frozen=True)
class EvalReport:
    """Evaluation of one model on one dataset with one grader."""

    model: str
    dataset: str
    dataset_sha256: str
    accuracy: MetricCI  # mean grader score over scored items, greedy decoding
    unscored_frac: float
    pass_at_k: dict[int, float] = field(default_factory=dict)
    mean_completion_tokens: float = 0.0
    seconds: float = 0.0
    step: int | None = None
    items: tuple[dict[str, Any], ...] = ()  # per-item: index, score, error, completion

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "dataset_sha256": self.dataset_sha256,
            "step": self.step,
            "accuracy": self.accuracy.mean,
            "accuracy_ci95": [self.accuracy.low, self.accuracy.high],
            "n": self.accuracy.n,
            "unscored_frac": self.unscored_frac,
            "pass_at_k": {str(k): v for k, v in self.pass_at_k.items()},
            "mean_completion_tokens": self.mean_completion_tokens,
            "seconds": self.seconds,
        }
