"""Cost of a strategy: the price table the user sets, and the arithmetic from measurements to dollars.

The price table (`--prices prices.yaml`, every key optional, USD):

    per_million_generated_tokens: 0.0   # what a generated token costs where you deploy (a hosted API's output price)
    per_machine_hour: 0.10              # what this machine costs per hour (a cloud CPU or GPU instance)

Inference cost per 1,000 requests, from one strategy's run over n validation requests:

    tokens_per_1k   = 1000 * tokens generated / n             (every sample and every phase counts)
    seconds_per_1k  = 1000 * engine seconds / n               (wall time inside the batch engine on this machine)
    usd_per_1k      = tokens_per_1k / 1e6 * per_million_generated_tokens + seconds_per_1k / 3600 * per_machine_hour

Training cost (a one-off, not per request): train_usd = train_seconds / 3600 * per_machine_hour.

Both terms are kept so either pricing model works: set per_machine_hour to 0 to price tokens only (an API),
or per_million_generated_tokens to 0 to price machine time only (self-hosted, the default).
Simplified: prompt tokens are not priced (the strategies differ in what they generate; reasoning's second phase
re-reads its thinking as prompt, which costs compute that the seconds column does include).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rft.errors import Problem, RftError, did_you_mean


class Prices(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    per_million_generated_tokens: float = Field(0.0, ge=0, le=1e6)
    per_machine_hour: float = Field(0.10, ge=0, le=1e6)


def _line_of(text: str, key: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(f"{key}:") or f'"{key}"' in line:
            return i
    return None


def load_prices(path: str | None) -> Prices:
    """The price table from a YAML/JSON file (None: the defaults). Errors name the file, line and field."""
    if path is None:
        return Prices()
    from rft.userinput import load_mapping_file, read_user_text

    raw = load_mapping_file(path, "price table")
    try:
        return Prices(**raw)
    except ValidationError as e:
        text = read_user_text(path, "price table")
        problems = []
        for err in e.errors():
            key = str(err["loc"][0]) if err["loc"] else ""
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown key{did_you_mean(key, list(Prices.model_fields))}; valid keys: " \
                      f"{', '.join(Prices.model_fields)}"
            problems.append(Problem(msg, file=str(path), line=_line_of(text, key), field=key))
        raise RftError(f"invalid price table in {path}", problems) from None


def per_1k(total: float, n: int) -> float:
    """`total` over n requests, scaled to 1,000 requests."""
    return 1000.0 * total / n if n else float("nan")


def inference_cost(tokens: int, seconds: float, n_requests: int, prices: Prices) -> dict[str, Any]:
    """Per-1,000-request tokens, seconds and USD (see the module docstring)."""
    tok, sec = per_1k(tokens, n_requests), per_1k(seconds, n_requests)
    usd = tok / 1e6 * prices.per_million_generated_tokens + sec / 3600.0 * prices.per_machine_hour
    return {"tokens_per_request": tokens / n_requests if n_requests else float("nan"), "tokens_per_1k": tok,
            "seconds_per_1k": sec, "usd_per_1k": usd if not math.isnan(usd) else float("nan")}


def training_cost(seconds: float, prices: Prices) -> float:
    return seconds / 3600.0 * prices.per_machine_hour
