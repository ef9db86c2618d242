"""The local engine: the fast decoder matches transformers, sampling is seeded, stop rules hold."""

from __future__ import annotations

import torch

from rft.engine import SamplingParams
from rft.engine.local import LocalEngine
from rft.engine.sampling import sample_next
from rft.models import ResolvedModel, load

PROMPTS = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Hi"}],
           [{"role": "user", "content": "Count: one two three four five"}]]


def _engine(path, fast):
    m, tok = load(ResolvedModel(str(path), path, "directory"))
    return LocalEngine(m, tok, compute_dtype=torch.float32, fast=fast), m, tok


def test_fast_decoder_matches_transformers_generate(tiny_model_dir):
    fast, m, tok = _engine(tiny_model_dir, True)
    assert fast.backend == "fast"
    outs = fast.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=12))
    for msgs, o in zip(PROMPTS, outs):
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ref = m.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        ref_new = ref[0, ids["input_ids"].shape[1]:].tolist()
        assert list(o[0].token_ids) == ref_new[: len(o[0].token_ids)]
    hf = LocalEngine(m, tok, compute_dtype=torch.float32, fast=False)
    outs2 = hf.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=12))
    for a, b in zip(outs, outs2):
        assert a[0].token_ids == b[0].token_ids
        assert max(abs(x - y) for x, y in zip(a[0].logprobs, b[0].logprobs)) < 1e-4


def test_logprobs_match_a_full_forward(tiny_model_dir):
    eng, m, tok = _engine(tiny_model_dir, True)
    out = eng.generate(PROMPTS[:1], SamplingParams(n=3, temperature=0.7, max_new_tokens=6, seed=3))[0]
    ids = tok.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    for c in out:
        seq = torch.tensor([list(ids) + list(c.token_ids)])
        with torch.no_grad():
            logits = m(seq).logits[0, len(ids) - 1 : -1] / 0.7
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(lp, torch.tensor(c.logprobs), atol=1e-4)


def test_seeded_sampling_is_reproducible_and_n_completions(tiny_model_dir):
    eng, _, _ = _engine(tiny_model_dir, True)
    p = SamplingParams(n=4, temperature=1.0, max_new_tokens=8, seed=11)
    a = eng.generate(PROMPTS, p)
    b = eng.generate(PROMPTS, p)
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    assert all(len(g) == 4 for g in a)
    assert len({c.token_ids for c in a[0]}) > 1  # samples differ within a group


def test_stop_strings_and_lengths(tiny_model_dir):
    eng, _, _ = _engine(tiny_model_dir, True)
    outs = eng.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=10, seed=1))
    for g in outs:
        for c in g:
            assert len(c.token_ids) <= 10 and len(c.logprobs) == len(c.token_ids)
            assert c.finish_reason in ("stop", "length")
    # pick a character the model emits and use it as a stop string
    text = outs[0][0].text
    stop_char = next((ch for ch in text if ch.isalpha()), None)
    if stop_char:
        again = eng.generate(PROMPTS[:1], SamplingParams(n=2, temperature=1.0, max_new_tokens=10, seed=1, stop=(stop_char,)))
        assert stop_char not in again[0][0].text and again[0][0].finish_reason == "stop"


def test_top_k_one_is_greedy():
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    g = torch.Generator().manual_seed(0)
    tok, lp = sample_next(logits, SamplingParams(temperature=1.0, top_k=1), g)
    assert torch.equal(tok, logits.argmax(-1))
    assert torch.allclose(lp, torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1))
    tok2, _ = sample_next(logits, SamplingParams(temperature=1.0, top_p=1e-6), g)
    assert torch.equal(tok2, logits.argmax(-1))
