"""Sampling: how a token is drawn from logits, and when a completion stops.

- `sampling_probs` / `sample_next`: temperature, top-k and top-p over fp32 logits, drawn from a seeded
  `torch.Generator` (`make_generator`); every token reports log p under the temperature-scaled distribution
  *before* truncation, which is what the GRPO loss recomputes as the old policy.
- `eos_ids` / `stop_text`: the stop rules (end-of-sequence ids; stop strings cut the text before the first hit).

Used by plain batched decoding (engine/local.py) and by predicted outputs (engine/predicted.py), so both draw
with the same code. A constraint (engine/constrain.py) arrives as an `allowed` mask: draws are restricted to it,
reported log-probs are not (see constrain.py for why). Simplified: no repetition / frequency penalties, no min-p.
Run its tests: `.venv/bin/python -m pytest -q tests/test_engine.py tests/test_engine_predicted.py`.
"""

from __future__ import annotations

import torch

from rft.engine.protocol import SamplingParams


def make_generator(params: SamplingParams, device) -> torch.Generator | None:
    """The seeded random source for one request (None without a seed: torch's global generator)."""
    if params.seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(params.seed))
    return gen


def sampling_probs(logits: torch.Tensor, params: SamplingParams,
                   allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """temperature > 0: logits [B, V] (fp32) -> (logp [B, V] under the temperature-scaled distribution before
    truncation, probs [B, V] the distribution tokens are drawn from: after the constraint mask `allowed`
    ([B, V] bool, or None), top-k and top-p; not yet renormalised when no truncation applies (sums to 1 up to
    rounding), renormalised softmax otherwise)."""
    scaled = logits / params.temperature  # [B, V]
    logp = torch.log_softmax(scaled, dim=-1)  # [B, V]
    filt = scaled if allowed is None else scaled.masked_fill(~allowed, float("-inf"))  # [B, V]
    if params.top_k and params.top_k > 0 and params.top_k < filt.shape[-1]:
        kth = torch.topk(filt, params.top_k, dim=-1).values[:, -1:]  # [B, 1]
        filt = filt.masked_fill(filt < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, idx = torch.sort(filt, descending=True, dim=-1)  # [B, V]
        probs = torch.softmax(sorted_logits, dim=-1)  # [B, V]
        cum = probs.cumsum(-1)  # [B, V]
        remove = cum - probs > params.top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        filt = torch.full_like(filt, float("-inf")).scatter(-1, idx, sorted_logits)  # [B, V]
    probs = logp.exp() if filt is scaled else torch.softmax(filt, dim=-1)  # [B, V]
    return logp, probs


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None,
                allowed: torch.Tensor | None = None):
    """logits [B, V] (fp32) -> (token [B], logprob [B]) under the temperature-scaled distribution.
    `allowed` ([B, V] bool, from a constraint): tokens are drawn among these only; the logprob stays the
    unmasked one (the mask is a truncation, like top-k)."""
    if params.temperature <= 0:
        logp = torch.log_softmax(logits, dim=-1)  # [B, V]
        tok = (logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))).argmax(dim=-1)  # [B]
        return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
    logp, probs = sampling_probs(logits, params, allowed)  # [B, V], [B, V]
    # Inverse-CDF draw: one uniform per row and a binary search in the cumulative distribution. On CPU at
    # vocabulary sizes this is ~30x faster than torch.multinomial (which draws its randoms serially).
    cdf = probs.cumsum(dim=-1)  # [B, V]
    u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device) * cdf[:, -1:]  # [B, 1]
    tok = torch.searchsorted(cdf, u).squeeze(-1).clamp(max=probs.shape[-1] - 1)  # [B]
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def eos_ids(tokenizer, model) -> set[int]:
    """The token ids that end a completion: the tokenizer's EOS and the model's generation config's."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None) if gc is not None else None
    if isinstance(e, int):
        ids.add(e)
    elif isinstance(e, (list, tuple)):
        ids.update(int(x) for x in e)
    return ids


def stop_text(tokenizer, toks: list[int], stop: tuple[str, ...]) -> str | None:
    """The completion's text cut before the earliest stop string in it, or None when none occurs yet.
    Decodes the whole list each time: a stop string may span tokens."""
    text = tokenizer.decode(toks, skip_special_tokens=True)
    hits = [text.find(x) for x in stop if x in text]
    return text[: min(hits)] if hits else None
