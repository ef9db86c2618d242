"""Predicted outputs (speculative decoding with a user draft) and streaming on the local engine.

The bar: with a prediction the output is what decoding without one gives (greedy: the same tokens; sampling:
the same distribution), logprobs are the same quantities, and the prediction counts add up."""

from __future__ import annotations

import math

import pytest
import torch

from rft.engine import SamplingParams, predicted
from rft.engine.local import LocalEngine, render_prompt
from rft.engine.sampling import sampling_probs
from rft.models import ResolvedModel, load

MSGS = [{"role": "user", "content": "Hi"}]
OTHER = [{"role": "user", "content": "Count: one two three four five"}]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and several test processes on few cores don't thrash."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def varied(tiny_model_dir):
    """The tiny Llama with its matrices re-drawn at a larger scale (seeded): the stock random init greedily
    repeats one character forever, which would make alignment and edit tests trivial. This one writes
    varied character strings and sometimes ends with EOS."""
    m, tok = load(ResolvedModel(str(tiny_model_dir), tiny_model_dir, "directory"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.25)
    return m, tok


def _eng(varied, fast=True, dtype=torch.float32):
    m, tok = varied
    return LocalEngine(m, tok, compute_dtype=dtype, fast=fast)


def _same(a, b):
    """Same tokens, text, finish reason and (bit for bit: verify reproduces decode exactly) logprobs."""
    assert a.token_ids == b.token_ids
    assert a.text == b.text and a.finish_reason == b.finish_reason and a.prompt_tokens == b.prompt_tokens
    assert a.logprobs == b.logprobs


def _edit(ids: list[int], at: int, new: list[int]) -> list[int]:
    return ids[:at] + new + ids[at + 2 :]  # replace two tokens with `new`


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_verify_then_rewind_equals_single_steps_bit_for_bit(varied, dtype):
    m, tok = varied
    eng = LocalEngine(m, tok, compute_dtype=dtype, fast=True)
    dec = eng.decoder
    ids = torch.tensor([render_prompt(eng.tokenizer, MSGS)])  # [1, L]
    toks = [5, 17, 30, 8, 41, 12, 7, 7, 60]
    _, s1 = dec.prefill(ids, torch.ones_like(ids), 16)
    singles = torch.stack([dec.decode(torch.tensor([t]), s1)[0] for t in toks])  # [9, V]
    _, s2 = dec.prefill(ids, torch.ones_like(ids), 16)
    multi = torch.cat([dec.verify(torch.tensor([toks[:2]]), s2)[0], dec.verify(torch.tensor([toks[2:]]), s2)[0]])
    assert torch.equal(multi, singles)  # bit for bit: greedy near-ties must resolve the same way
    t = s1.t
    assert s2.t == t and torch.equal(s2.cache.k[:, :, :, :t], s1.cache.k[:, :, :, :t])
    # keep the first 3, rewind 6, continue with other tokens: as if the rejected ones were never seen
    dec.rewind(s2, 6)
    again = dec.verify(torch.tensor([[9, 10, 11]]), s2)[0]  # [3, V]
    _, s3 = dec.prefill(ids, torch.ones_like(ids), 16)
    ref = torch.stack([dec.decode(torch.tensor([x]), s3)[0] for x in toks[:3] + [9, 10, 11]])[3:]  # [3, V]
    assert torch.equal(again, ref)
    assert torch.equal(dec.decode(torch.tensor([3]), s2), dec.decode(torch.tensor([3]), s3))
    with pytest.raises(ValueError, match="overflow"):
        dec.verify(torch.tensor([list(range(20))]), s2)


@pytest.mark.parametrize("fast,dtype", [(True, torch.float32), (True, torch.bfloat16), (False, torch.float32)])
def test_greedy_output_identical_with_any_prediction(varied, fast, dtype):
    eng = _eng(varied, fast, dtype)
    p = SamplingParams(temperature=0.0, max_new_tokens=40)
    for msgs in (MSGS, OTHER) if fast else (OTHER,):
        prompt = render_prompt(eng.tokenizer, msgs)
        ref = eng.generate_ids([prompt], p)[0][0]
        out = list(ref.token_ids)
        assert len(set(out)) > 5  # a varied output, so alignment is really exercised
        garbage = [(t * 7 + 3) % len(eng.tokenizer) for t in out[::-1]]
        cases = {"exact": out, "edited": _edit(out, 20, [out[25], out[3], out[9]]), "garbage": garbage,
                 "empty": [], "longer": out + out[:10], "shifted": out[5:]}
        if not fast:  # the transformers fallback decodes plainly and only tracks the prediction for the counts
            cases = {k: cases[k] for k in ("exact", "edited", "empty")}
        for name, pred in cases.items():
            got = eng.generate_ids_predicted(prompt, p, pred)
            _same(got, ref)
            if not fast:
                assert got.rejected_prediction_tokens == 0
                if name in ("exact", "empty"):
                    assert got.accepted_prediction_tokens == (len(out) if name == "exact" else 0)
                continue
            if name in ("exact", "longer"):
                assert (got.accepted_prediction_tokens, got.rejected_prediction_tokens) == (len(out), 0)
            if name == "empty":
                assert (got.accepted_prediction_tokens, got.rejected_prediction_tokens) == (0, 0)
            if name == "edited":  # one edit costs a few tokens, not the rest of the prediction
                assert got.accepted_prediction_tokens >= len(out) - 6
                assert 1 <= got.rejected_prediction_tokens <= 32 + 8  # at most about one full draft
            assert got.accepted_prediction_tokens <= len(out)
        if fast:  # the text API: the prediction is the answer's text
            _same(eng.generate_predicted(msgs, p, ref.text), ref)
            _same(eng.generate_predicted(msgs, p, "zzz " + ref.text[:10] + "Q" + ref.text[12:]), ref)


def test_edited_prediction_keeps_most_tokens_accepted(varied):
    eng = _eng(varied)
    p = SamplingParams(temperature=0.0, max_new_tokens=64)
    prompt = render_prompt(eng.tokenizer, OTHER)
    ref = eng.generate_ids([prompt], p)[0][0]
    out = list(ref.token_ids)
    for pred in (out[:30] + out[33:],  # a deletion
                 out[:30] + [out[1], out[2]] + out[30:],  # an insertion
                 _edit(out, 30, [out[4]])):  # a replacement
        got = eng.generate_ids_predicted(prompt, p, pred)
        _same(got, ref)
        assert got.accepted_prediction_tokens >= len(out) - 8, got
        assert got.rejected_prediction_tokens <= 32 + 8  # at most about one full draft (k_max = 32)


def test_stop_strings_and_eos_as_in_normal_decoding(varied):
    eng = _eng(varied)
    prompt = render_prompt(eng.tokenizer, OTHER)
    full = eng.generate_ids([prompt], SamplingParams(temperature=0.0, max_new_tokens=48))[0][0]
    out = list(full.token_ids)
    # a stop string taken from the middle of the output: the text is cut before it, finish "stop"
    stop = full.text[20:22]
    p = SamplingParams(temperature=0.0, max_new_tokens=48, stop=(stop, "never-there"))
    ref = eng.generate_ids([prompt], p)[0][0]
    assert ref.finish_reason == "stop" and stop not in ref.text
    for pred in (out, out[:10], []):
        got = eng.generate_ids_predicted(prompt, p, pred)
        _same(got, ref)
        # draft tokens verified past the stop are not kept, so they count as rejected
        assert got.accepted_prediction_tokens + got.rejected_prediction_tokens <= len(out) + 8
    # EOS: make a token of the output an end-of-sequence token for this engine
    eos_tok = out[15]
    eng.eos = eng.eos | {eos_tok}
    p = SamplingParams(temperature=0.0, max_new_tokens=48)
    ref = eng.generate_ids([prompt], p)[0][0]
    assert ref.finish_reason == "stop" and ref.token_ids[-1] == eos_tok and len(ref.token_ids) <= 16
    for pred in (out, [t for t in out if t != eos_tok]):
        _same(eng.generate_ids_predicted(prompt, p, pred), ref)
    # max_new_tokens shorter than the prediction
    p = SamplingParams(temperature=0.0, max_new_tokens=7)
    ref = eng.generate_ids([prompt], p)[0][0]
    got = eng.generate_ids_predicted(prompt, p, out)
    _same(got, ref)
    assert ref.finish_reason == "length" and got.accepted_prediction_tokens == 7


def test_stream_deltas_concatenate_to_generate_text(varied):
    eng = _eng(varied)
    for params in (SamplingParams(temperature=0.0, max_new_tokens=40),
                   SamplingParams(temperature=0.8, max_new_tokens=40, seed=5)):
        ref = eng.generate([OTHER], params)[0][0]
        for pred in (None, ref.text, ref.text[:15] + "ab" + ref.text[17:]):
            parts = list(eng.stream(OTHER, params, pred))
            assert parts[-1][0] == "" and parts[-1][1] is not None
            assert all(c is None for _, c in parts[:-1]) and all(d for d, _ in parts[:-1])
            comp = parts[-1][1]
            assert "".join(d for d, _ in parts) == comp.text
            if pred is None or params.temperature == 0:  # without a prediction even the seeded sample is the same
                _same(comp, ref)
            if pred is None:
                assert len(parts) - 1 >= len(comp.token_ids) // 2  # deltas come as tokens are produced
        stop = ref.text[8:10]
        p2 = SamplingParams(temperature=params.temperature, max_new_tokens=40, seed=params.seed, stop=(stop,))
        ref2 = eng.generate([OTHER], p2)[0][0]
        parts = list(eng.stream(OTHER, p2))
        assert "".join(d for d, _ in parts) == ref2.text == parts[-1][1].text


class _ByteTok:
    """Byte-level fake tokenizer: token i < 256 is byte i; decoding shows split UTF-8 as U+FFFD."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_text_deltas_hold_back_partial_characters_and_stop_prefixes():
    text = "héllo wörld: €5 END"
    ids = list(text.encode())
    d = predicted.TextDeltas(_ByteTok(), stop=("END",))
    parts = [d.push(ids[: i + 1]) for i in range(len(ids) - 1)]  # up to "...€5 EN"; then "D" completes the stop
    assert all("\ufffd" not in p for p in parts)
    final = text[: text.index("END")]  # what the engine returns when the stop string hits
    assert "".join(parts) == final  # "E" and "EN" were held back: they could have begun the stop string
    assert d.finish(final) == ""
    # a held-back stop prefix that turns out not to be a stop is released later
    d = predicted.TextDeltas(_ByteTok(), stop=("ENDX",))
    out = [d.push(ids[: i + 1]) for i in range(len(ids))]
    assert "".join(out) + d.finish(text) == text and "".join(out) == text[:-3]


def test_cursor_realigns_after_an_edit():
    pred = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    c = predicted.DraftCursor(pred, k_init=4)
    out = [1]
    assert c.update(0, 0, [1]) == 1 and c.propose(out, 100) == [2, 3, 4, 5]
    out += [2, 3, 50]  # accepted 2, 3; the model wrote 50 instead of 4
    assert c.update(4, 2, [2, 3, 50]) == 2 and c.pos is None
    assert c.propose(out, 100) == []  # 50 is not in the prediction: plain decode step
    out += [51]
    c.update(0, 0, [51])
    out += [5]
    c.update(0, 0, [5])
    assert c.propose(out, 3) == [6, 7]  # re-aligned after 5 (k halved to 2 after the rejection)
    # repeated material: prefer the longest suffix match, then the occurrence after the divergence point
    c = predicted.DraftCursor([7, 1, 2, 9, 1, 2, 8, 1, 2, 5])
    c.pos, c.anchor = None, 5
    assert c.propose([3, 1, 2], 1) == [8]  # "1 2" thrice: the first occurrence continuing after the anchor
    c.pos = None
    assert c.propose([3, 7, 1, 2], 1) == [9]  # "7 1 2" occurs once, before the anchor: longest match wins
    # a single-token match far from where the output left the prediction is ignored
    c = predicted.DraftCursor(list(range(100)), window=8)
    c.pos, c.anchor = None, 10
    assert c.propose([200, 60], 4) == []
    assert c.propose([200, 14], 4) == [15, 16]  # near the anchor: taken, with a short draft


# -- temperature > 0: the output distribution is unchanged -------------------------------------------------
def _chi2(counts: dict, dist: dict, n: int) -> float:
    assert set(counts) <= set(dist), set(counts) - set(dist)
    return sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in dist.items())


def _target(rows, draft, params):
    """The distribution accept_draft must produce: plain sampling, token by token, as long as it follows the
    draft (cells: the emitted sequences)."""
    _, probs = sampling_probs(rows, params)
    q = (probs / probs.sum(-1, keepdim=True)).tolist()  # [k+1][V]
    dist, pre = {}, 1.0
    for i in range(len(draft) + 1):
        for t, p in enumerate(q[i]):
            if p > 0 and (i == len(draft) or t != draft[i]):
                dist[tuple(draft[:i]) + (t,)] = pre * p
        if i < len(draft):
            pre *= q[i][draft[i]]
    return dist


def _biased_accept(rows, draft, params, gen):
    """A wrong rule for the power check: keeps a draft token with probability sqrt(q) instead of q."""
    _, probs = sampling_probs(rows, params)
    q = probs / probs.sum(-1, keepdim=True)
    for i, d in enumerate(draft):
        if float(torch.rand((1,), generator=gen)) >= math.sqrt(float(q[i, d])):
            res = q[i].clone()
            res[d] = 0
            t = int(torch.multinomial(res, 1, generator=gen))
            return draft[:i] + [t], [0.0] * (i + 1), i
    t = int(torch.multinomial(q[len(draft)], 1, generator=gen))
    return draft + [t], [0.0] * (len(draft) + 1), len(draft)


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.9, top_k=4),
                                    SamplingParams(temperature=1.3, top_p=0.8)])
def test_acceptance_rule_samples_the_model_distribution(params):
    torch.manual_seed(0)
    rows = torch.randn(3, 6) * 1.5  # [k+1, V]: two draft positions and the bonus row
    # draft tokens: one likely and one less likely under their rows, so every branch runs
    q = _target(rows[:1], [], params)
    draft = [max(q, key=q.get)[0], sorted(_target(rows[1:2], [], params).items(), key=lambda x: x[1])[-2][0][0]]
    dist = _target(rows, draft, params)
    N = 6000
    for rule, ok in ((predicted.accept_draft, True), (_biased_accept, False)):
        g = torch.Generator().manual_seed(7)
        counts: dict = {}
        for _ in range(N):
            toks, lps, n_acc = rule(rows, draft, params, g)
            assert toks[:n_acc] == draft[:n_acc] and len(toks) == n_acc + 1
            counts[tuple(toks)] = counts.get(tuple(toks), 0) + 1
        stat = _chi2(counts, dist, N)
        dof = len(dist) - 1
        # P(chi2 > dof + 12 sqrt(2 dof)) is about 1e-9 for these dof; the generator is seeded: deterministic
        if ok:
            assert stat < dof + 12 * math.sqrt(2 * dof), (stat, dof)
        else:
            assert stat > 3 * (dof + 12 * math.sqrt(2 * dof)), (stat, dof)
    # the logprobs are log p under the temperature-scaled distribution, before truncation
    toks, lps, _ = predicted.accept_draft(rows, draft, params, torch.Generator().manual_seed(1))
    ref = torch.log_softmax(rows / params.temperature, -1)[torch.arange(len(toks)), torch.tensor(toks)]
    assert torch.allclose(torch.tensor(lps), ref)


def _exact_joint(m, prompt, params, n_tok):
    """Exact distribution of the first n_tok sampled tokens (over the top-k support) by enumeration."""
    dist = {(): 1.0}
    for _ in range(n_tok):
        nxt = {}
        for seq, pr in dist.items():
            with torch.no_grad():
                logits = m(torch.tensor([prompt + list(seq)])).logits[:, -1].float()  # [1, V]
            _, probs = sampling_probs(logits, params)
            probs = probs[0] / probs[0].sum()
            for t in torch.nonzero(probs).flatten().tolist():
                nxt[seq + (t,)] = pr * float(probs[t])
        dist = nxt
    return dist


def test_sampling_with_prediction_keeps_the_distribution_end_to_end(varied):
    """Through the engine (verify, rewind, bonus token, cursor): the first three tokens' joint distribution
    with a prediction matches the exact one enumerated from the model."""
    m, _ = varied
    eng = _eng(varied)
    prompt = render_prompt(eng.tokenizer, OTHER)
    params = SamplingParams(temperature=2.0, top_k=2, max_new_tokens=3)
    dist = _exact_joint(m, prompt, params, 3)  # 8 cells
    assert len(dist) == 8 and min(dist.values()) > 0.01, dist
    # the prediction: the likelier first token, then its less likely follower, then anything
    t1 = max({k[0] for k in dist}, key=lambda a: sum(p for k, p in dist.items() if k[0] == a))
    f2 = min({k[1] for k in dist if k[0] == t1}, key=lambda b: sum(p for k, p in dist.items() if k[:2] == (t1, b)))
    pred = [t1, f2, 4]
    N = 1000
    counts, acc, rej = {}, 0, 0
    for seed in range(N):
        c = eng.generate_ids_predicted(prompt, SamplingParams(**{**params.__dict__, "seed": seed}), pred)
        counts[c.token_ids] = counts.get(c.token_ids, 0) + 1
        acc += c.accepted_prediction_tokens
        rej += c.rejected_prediction_tokens
    assert acc > 0 and rej > 0  # both branches of the acceptance rule ran
    # 7 degrees of freedom: P(chi2 > 45) ~ 1.4e-7, and the seeds are fixed, so this is deterministic
    assert _chi2(counts, dist, N) < 45, (_chi2(counts, dist, N), counts, dist)
    # logprobs of emitted tokens are the temperature-scaled log p (before top-k), as in plain decoding
    c = eng.generate_ids_predicted(prompt, SamplingParams(**{**params.__dict__, "seed": 3}), pred)
    with torch.no_grad():
        logits = m(torch.tensor([prompt + list(c.token_ids)])).logits[0, len(prompt) - 1 : -1] / params.temperature
    lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(lp, torch.tensor(c.logprobs), atol=1e-4)
