"""Predicted outputs: speculative decoding with a user-supplied draft, and single-request streaming.

A request may carry a prediction of its answer (for example the previous version of a file it asks to edit).
The prediction's tokens are used as draft tokens: each step feeds the last sampled token plus up to k draft
tokens through the decoder in one forward (`verify`), compares the model's distribution at every position
with the draft, keeps the longest agreeing prefix plus one token of the model's own, and rewinds the KV cache
past the rejected draft tokens (`rewind`). The output distribution is the one plain decoding has:

- temperature 0: a draft token is kept iff it is the argmax, and the first disagreement emits the argmax, so
  the tokens are those of greedy decoding. This needs the m-token forward to give bit for bit the logits and
  K/V of m single-token steps (in bf16 a one-ulp difference flips near-ties): `FastDecoder.verify` is built
  that way (attention query by query with decode's shapes; a weight product on all m rows at once only where
  a probe found its kernel rounds those rows as it rounds one).
  The transformers fallback has no such verify, so there predicted requests decode plainly (same output,
  no speedup; the counts still say how much of the output followed the prediction);
- temperature > 0: the exact speculative-sampling rule for a deterministic draft. With q the sampling
  distribution (temperature, top-k, top-p), draft token d is kept with probability q(d); otherwise a token
  is drawn from q with d removed and renormalised. So each emitted token is distributed exactly as q.
  (It is not the same *sample* as plain decoding with the same seed: the randoms are consumed differently.)
- the logprob of every emitted token is log p under the temperature-scaled distribution before truncation,
  the same quantity plain decoding reports.

After a rejection the output has left the prediction; `DraftCursor` re-aligns by finding the longest suffix
of the output (up to 8 tokens) in the prediction, preferring the occurrence nearest after the place where
they parted, and drafts on from there. A prediction edited in one place thus loses a step or two at the edit.
Steps without a draft are plain single-token decode steps (the same code and sampling as `generate`), so a
request with an empty or useless prediction costs what plain decoding costs, plus any rejected verifies.

Counts: `accepted_prediction_tokens` are output tokens that agreed with the prediction where the output
stood in it (draft tokens the model kept, plus the model's own tokens that happened to continue the
prediction, such as the first token, which comes from the prefill); so an exact prediction of the output
counts every one of its tokens as accepted. `rejected_prediction_tokens` are draft tokens sent for
verification and not kept (including any verified but cut off by a stop string). Prediction tokens that were
never drafted (e.g. past the end of the output) count as neither.

Simplifications: one request at a time (no batching of predicted requests), n = 1; a request with a constraint
(response_format) decodes without drafts.
"""

from __future__ import annotations

from typing import Iterator

import torch

from rft.engine import constrain
from rft.engine.protocol import SamplingParams
from rft.engine.sampling import make_generator, sample_next, sampling_probs, stop_text
from rft.types import Completion


class DraftCursor:
    """Tracks where the generated output stands in the prediction and proposes draft tokens.

    `pos` is the index in the prediction of the token expected next, or None after a divergence (then the
    next `propose` re-aligns). The draft length adapts: it doubles after a fully accepted draft (up to
    `k_max`) and halves after a rejection (down to `k_min`), so good predictions are verified in long
    chunks and poor ones waste little compute."""

    def __init__(self, prediction: list[int], *, k_init: int = 8, k_min: int = 2, k_max: int = 32,
                 max_ngram: int = 8, window: int = 32):
        self.pred = list(prediction)
        self.pos: int | None = 0
        self.anchor = 0  # where in the prediction the output last agreed with it
        self.k = k_init
        self.k_min, self.k_max, self.max_ngram = k_min, k_max, max_ngram
        self.window = window
        self.where: dict[int, list[int]] = {}  # token -> its indices in the prediction
        for i, t in enumerate(self.pred):
            self.where.setdefault(t, []).append(i)

    def propose(self, out: list[int], limit: int) -> list[int]:
        """Up to `limit` draft tokens to follow the output `out`."""
        if not self.pred:
            return []
        if self.pos is None:
            found = self._realign(out)
            if found is None:
                return []
            self.pos, n = found
            # a short match is a weak guess: verify a short draft first (it doubles while it is accepted)
            self.k = max(self.k_min, min(self.k, 2**n))
        return self.pred[self.pos : self.pos + max(0, min(self.k, limit))]

    def update(self, drafted: int, accepted: int, emitted: list[int]) -> int:
        """After a step that drafted `drafted` tokens, kept `accepted` of them and emitted `emitted` (the kept
        draft tokens followed by the model's own token). Returns how many leading emitted tokens agree with
        the prediction (the accepted draft, plus the model's own token when it continues the prediction)."""
        if drafted:
            self.k = min(self.k * 2, self.k_max) if accepted == drafted else max(self.k // 2, self.k_min)
        if self.pos is None:
            return 0
        p = self.pos + accepted
        own = emitted[accepted]  # the model's own token (correction or bonus)
        if accepted == drafted and p < len(self.pred) and self.pred[p] == own:
            self.pos = self.anchor = p + 1  # it continues the prediction: still aligned
            return accepted + 1
        self.pos, self.anchor = None, p  # diverged at prediction index p: re-align on the next propose
        return accepted

    def _realign(self, out: list[int]) -> tuple[int, int] | None:
        """(index after the best match, match length) for the longest suffix of `out` found in the prediction,
        the occurrence nearest after the anchor first. A single-token match counts only near the anchor
        (within `window` tokens): anywhere else a common token would send the draft to a random place."""
        if not out:
            return None
        best, best_key = None, None
        n_max = min(self.max_ngram, len(out))
        for i in self.where.get(out[-1], ()):
            n = 1
            while n < n_max and i - n >= 0 and self.pred[i - n] == out[-1 - n]:
                n += 1
            q = i + 1  # the prediction continues here
            if q >= len(self.pred) or (n == 1 and not -4 <= q - self.anchor <= self.window):
                continue
            key = (n, q >= self.anchor, -abs(q - self.anchor))
            if best_key is None or key > best_key:
                best, best_key = (q, n), key
        return best


def accept_draft(rows: torch.Tensor, draft: list[int], params: SamplingParams, gen: torch.Generator | None,
                 allowed: torch.Tensor | None = None) -> tuple[list[int], list[float], int]:
    """rows [k+1, V] fp32 (row i: the model's logits for the token after draft[:i]), draft of k tokens ->
    (emitted tokens, their logprobs, number of draft tokens accepted). Emits the accepted draft prefix and
    one token of the model's own (the correction at the first rejection, or a bonus token after all k).
    `allowed` [1, V]: a constraint's mask, only for k = 0 (constrained requests do not draft)."""
    k = len(draft)
    if k == 0:
        tok, lp = sample_next(rows, params, gen, allowed)  # exactly a plain decode step
        return [int(tok[0])], [float(lp[0])], 0
    d = torch.tensor(draft, dtype=torch.long, device=rows.device)  # [k]
    ar = torch.arange(k + 1, device=rows.device)
    if params.temperature <= 0:
        best = rows.argmax(dim=-1)  # [k+1]
        n_acc = int((best[:k] == d).long().cumprod(0).sum())
        toks = draft[:n_acc] + [int(best[n_acc])]
        logp = torch.log_softmax(rows[: n_acc + 1], dim=-1)  # [a+1, V]
        lps = logp[ar[: n_acc + 1], torch.tensor(toks, device=rows.device)].tolist()
        return toks, lps, n_acc
    logp, probs = sampling_probs(rows, params)  # [k+1, V], [k+1, V]
    # probs is renormalised only when top-k/top-p truncated it; divide by the row sum so q sums to 1 exactly
    # as the inverse-CDF draw in sample_next treats it.
    q_d = probs[ar[:k], d] / probs[:k].sum(-1)  # [k] sampling probability of each draft token
    u = torch.rand((k,), generator=gen, device=rows.device)  # [k]
    n_acc = int((u < q_d).long().cumprod(0).sum())
    if n_acc == k:
        tok, _ = sample_next(rows[k:], params, gen)  # bonus token from the last row, as plain decoding
        toks = draft + [int(tok[0])]
    else:
        residual = probs[n_acc].clone()  # [V] q with the rejected draft token removed
        residual[draft[n_acc]] = 0.0
        cdf = residual.cumsum(0)  # [V]
        r = torch.rand((1,), generator=gen, device=rows.device) * cdf[-1:]  # [1]
        # right=True: a zero-probability token (the removed one included) is never chosen, even for r = 0
        tok = int(torch.searchsorted(cdf, r, right=True)[0])
        last = int(torch.nonzero(residual)[-1, 0])  # r rounded up to cdf[-1]: take the last possible token
        toks = draft[:n_acc] + [min(tok, last)]
    lps = logp[ar[: n_acc + 1], torch.tensor(toks, device=rows.device)].tolist()
    return toks, lps, n_acc


def run(engine, prompt_ids: list[int], params: SamplingParams, prediction_ids: list[int]
        ) -> Iterator[tuple[list[int], Completion | None]]:
    """Generate one completion for `prompt_ids` with `prediction_ids` as the draft source. Yields
    (tokens so far, None) after every step and finally (tokens, Completion). `engine` is a `LocalEngine` (its
    decoder, tokenizer, EOS ids and device)."""
    if params.n > 1:
        raise ValueError("predicted outputs and streaming support n = 1 only")
    dev = engine.device
    gen = make_generator(params, dev)
    dec, tokenizer, eos = engine.decoder, engine.tokenizer, engine.eos
    # Drafts need a verify step whose results equal single-token decoding bit for bit (FastDecoder). On the
    # transformers fallback a multi-token forward rounds differently, which can flip greedy near-ties, so there
    # the prediction is only tracked (for the counts) and decoding is plain.
    # A constraint (engine/constrain.py) masks every draw with the sequence's grammar state: no drafts then (a
    # draft would need the mask at every drafted position); the prediction is still tracked for the counts.
    guide = constrain.guide_for(engine) if params.constraint is not None else None
    matcher = guide.matchers(params.constraint, 1)[0] if guide is not None else None
    drafting = dec.exact_verify and guide is None
    stop = tuple(params.stop)
    max_new = params.max_new_tokens
    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=dev)  # [1, L]
    rows, state = dec.prefill(input_ids, torch.ones_like(input_ids), max_new)  # [1, V]
    cursor = DraftCursor(prediction_ids)
    toks: list[int] = []
    lps: list[float] = []
    finish, text = "length", None
    accepted = rejected = 0
    done = max_new <= 0
    # The first step checks the draft against the prefill's logits plus one forward over the draft itself.
    draft = cursor.propose(toks, limit=max_new - 1 if drafting else 0)
    if draft:
        rows = torch.cat([rows, dec.verify(torch.tensor([draft], dtype=torch.long, device=dev), state)[0]])  # [k+1, V]
    while not done:
        allowed = guide.allowed([matcher], rows.shape[-1], rows.device) if guide is not None else None  # [1, V]
        new, new_lps, n_acc = accept_draft(rows, draft, params, gen, allowed)
        if matcher is not None:
            for t in new:
                guide.advance(matcher, t)
        if draft:
            dec.rewind(state, len(draft) - n_acc)  # the cache ends with the draft: keep its accepted part
        kept = 0
        for t, lp in zip(new, new_lps):
            toks.append(t)
            lps.append(lp)
            kept += 1
            if t in eos:
                finish, done = "stop", True
            elif stop and (cut := stop_text(tokenizer, toks, stop)) is not None:
                finish, done, text = "stop", True, cut
            if done or len(toks) >= max_new:
                done = True
                break
        matched = cursor.update(len(draft), n_acc, new)
        accepted += min(matched, kept)
        rejected += len(draft) - min(n_acc, kept)
        if done:
            break
        yield toks, None
        # A step emits at most len(draft) + 1 tokens: never draft past max_new (this also bounds the cache).
        draft = cursor.propose(toks, limit=max_new - len(toks) - 1 if drafting else 0)
        last = torch.tensor([toks[-1]], dtype=torch.long, device=dev)  # [1]
        if draft:
            step = torch.cat([last, torch.tensor(draft, dtype=torch.long, device=dev)])[None]  # [1, k+1]
            rows = dec.verify(step, state)[0]  # [k+1, V]
        else:
            rows = dec.decode(last, state)  # [1, V]
    if text is None:
        text = tokenizer.decode(toks, skip_special_tokens=True)
    yield toks, Completion(text=text, token_ids=tuple(toks), logprobs=tuple(lps), finish_reason=finish,
                           prompt_tokens=len(prompt_ids), accepted_prediction_tokens=accepted,
                           rejected_prediction_tokens=rejected)


class TextDeltas:
    """Turns a growing token list into text deltas whose concatenation is the final completion text.

    Each push decodes the whole list (so merges across tokens come out as in the final decode) and emits
    the new suffix, holding back: a trailing U+FFFD (a multi-byte character split across tokens), any tail
    that could be the start of a stop string (the final text is cut before a stop string), and, for
    tokenizers that clean up spaces before punctuation, trailing whitespace (a later token may remove it)."""

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.cleanup = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self.sent = ""

    def push(self, toks: list[int]) -> str:
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        end = len(text)
        while end and text[end - 1] == "\ufffd":
            end -= 1
        hold = 0
        for s in self.stop:
            for j in range(min(len(s) - 1, end), hold, -1):
                if text.endswith(s[:j], 0, end):
                    hold = j
                    break
        end -= hold
        if self.cleanup:
            while end and text[end - 1].isspace():
                end -= 1
        if end <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta = text[len(self.sent) : end]
        self.sent = text[:end]
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of the final text. (Only if a tokenizer decoded an emitted prefix differently later could
        the concatenation differ from `final_text`; the hold-backs above cover the known cases.)"""
        if final_text.startswith(self.sent):
            delta = final_text[len(self.sent) :]
        else:  # pragma: no cover - unreachable with the hold-backs for known tokenizers
            delta = ""
        self.sent = final_text
        return delta
