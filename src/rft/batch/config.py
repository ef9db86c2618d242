"""Batch configuration: the retry policy, the price table and the executor knobs, as one typed tree.

`BatchConfig` is loaded from a YAML/JSON file (`rft batch run --config batch.yaml`), then single fields are
overridden from CLI options; unknown keys are errors naming the file and the field. The resolved config is
stored in the batch's state so `resume` and `redrive` run under the same policy.

Example file:

    retry: {max_attempts: 6, initial_backoff_s: 1, max_backoff_s: 30, request_deadline_s: 600}
    prices: {local_per_hour: 0.10, remote: {gpt-4o-mini: {prompt_per_1k: 0.00015, completion_per_1k: 0.0006}}}
    concurrency: 16

Every number must be finite and within its documented range (`ge`/`le` below); the durations are seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rft.errors import Problem, RftError, did_you_mean
from rft.userinput import parse_json, parse_yaml, read_user_text


class RetryPolicy(BaseModel):
    """When and how often a failed request is tried again. Written so failed work cannot pile up: every
    request has a maximum number of attempts *and* a total deadline, and a run of consecutive failures
    stops the whole batch (the circuit breaker) instead of hammering a broken endpoint.

    Only failures that can succeed on retry are retried: connection errors, timeouts, HTTP 408, 409, 429
    and 5xx. 400, 401, 403, 404, 422 (and any other 4xx) are permanent and go to the error file at once.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_attempts: int = Field(5, ge=1, le=100, description="attempts per request, the first one included")
    initial_backoff_s: float = Field(0.5, gt=0, le=3600, description="backoff window before the 2nd attempt")
    backoff_multiplier: float = Field(2.0, ge=1.0, le=100, description="the window grows by this factor per attempt")
    max_backoff_s: float = Field(30.0, gt=0, le=86400, description="largest backoff window (full jitter draws in [0, window])")
    retry_after_cap_s: float = Field(60.0, ge=0, le=86400, description="a server's Retry-After is honoured up to this")
    request_deadline_s: float = Field(600.0, gt=0, le=30 * 86400, description="total time per request, all attempts and waits")
    attempt_timeout_s: float = Field(120.0, gt=0, le=86400, description="timeout of one HTTP attempt (remote endpoints)")
    circuit_breaker_threshold: int = Field(
        20, ge=0, le=1_000_000, description="stop sending after this many consecutive failures that are the endpoint's "
                              "(retryable ones, 401, 403, 404; 0: never)")


class TokenPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt_per_1k: float = Field(ge=0)
    completion_per_1k: float = Field(ge=0)


class PriceTable(BaseModel):
    """Prices in USD for the cost estimate. Local models cost machine time; remote ones cost tokens.

    The defaults are placeholders of the right order of magnitude (a small cloud CPU machine; a small hosted
    model); set your own with `--config` or `--price-per-hour`.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    local_per_hour: float = Field(0.10, ge=0, description="USD per hour of machine time for local models")
    remote_default: TokenPrice = TokenPrice(prompt_per_1k=0.00015, completion_per_1k=0.0006)
    remote: dict[str, TokenPrice] = Field(default_factory=dict, description="per remote model name")

    def for_remote(self, model: str | None) -> TokenPrice:
        return self.remote.get(model or "", self.remote_default)


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    retry: RetryPolicy = RetryPolicy()
    prices: PriceTable = PriceTable()
    concurrency: int = Field(8, ge=1, le=1024, description="requests in flight at once (remote endpoints)")
    batch_size: int = Field(64, ge=1, le=4096, description="requests per engine call (local models; the engine batches up to 64)")
    max_cost: float | None = Field(None, ge=0, description="stop cleanly once the estimated cost reaches this (USD)")
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", description="environment variable holding the remote API key")
    strategy: str | None = Field(None, max_length=200, description="inference strategy (rft.eval.inference) for every "
                                 "request of a local model that has no `rft.strategy` of its own, e.g. "
                                 "best_of_n:n=4,selector=majority or reasoning:budget=64")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v):
        if v is None:
            return v
        from rft.eval.inference import parse_strategy

        try:
            spec = parse_strategy(v, param="strategy")
        except RftError as e:
            raise ValueError(e.message.removeprefix("strategy: ")) from None
        if spec.uses_reference:
            raise ValueError(f"selector '{spec.selector}' reads reference answers, which batch requests do not have; "
                             "use selector=majority")
        return v


def _problems(err: ValidationError, source: str | None) -> list[Problem]:
    out = []
    for e in err.errors():
        path = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            model: Any = BatchConfig
            for part in e["loc"][:-1]:
                fld = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
                model = fld.annotation if fld is not None else None
            options = list(model.model_fields) if hasattr(model, "model_fields") else []
            msg = f"unknown key '{e['loc'][-1]}'{did_you_mean(str(e['loc'][-1]), options)}"
            if options:
                msg += f"; valid keys here: {', '.join(options)}"
        else:
            got = repr(e.get("input"))
            msg = f"{e['msg']} (got {got if len(got) <= 80 else got[:77] + '...'})"
        out.append(Problem(msg, file=source, field=path))
    return out


def build_config(raw: dict, *, source: str | None = None) -> BatchConfig:
    try:
        return BatchConfig.model_validate(raw)
    except ValidationError as e:
        raise RftError(f"invalid batch config{f' in {source}' if source else ''}", _problems(e, source)) from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> BatchConfig:
    """Read a YAML/JSON config file (or start from the defaults) and apply dotted overrides
    (`{"retry.max_attempts": 3}`); None values in `overrides` are ignored."""
    raw: dict = {}
    source = None
    if path is not None:
        source = str(path)
        # Missing, a directory, binary, not UTF-8, not valid JSON/YAML, too deep: one error naming the file.
        text = read_user_text(path, "batch config")
        loaded = parse_json(text, source, "batch config") if source.endswith(".json") else \
            parse_yaml(text, source, "batch config")
        if loaded is None:  # an empty file: the defaults
            loaded = {}
        if not isinstance(loaded, dict):
            raise RftError(f"{source}: a batch config must be a mapping (retry, prices, concurrency, ...), "
                           f"got {type(loaded).__name__}")
        raw = loaded
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RftError(f"{source}: field '{part}' must be a mapping, got {type(child).__name__}")
            node = child
        node[parts[-1]] = value
    return build_config(raw, source=source)
