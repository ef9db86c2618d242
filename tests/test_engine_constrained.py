"""Constrained decoding (engine/constrain.py): a tiny *random* model, which left alone emits garbage, must produce
schema-valid JSON under a response_format; every sequence in a batch has its own parser state; unconstrained calls
never touch the mask code; streaming and the transformers fallback honour the constraint too."""

from __future__ import annotations

import json

import pytest
import torch

from rft.engine import SamplingParams
from rft.engine.constrain import Constraint, from_response_format, response_format_problems
from rft.errors import RftError

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "integer", "minimum": 0, "maximum": 999},
        "unit": {"type": "string", "enum": ["cm", "kg"]},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
    },
    "required": ["answer", "unit", "ok", "tags"],
    "additionalProperties": False,
}
RF = {"type": "json_schema", "json_schema": {"name": "measure", "schema": SCHEMA, "strict": True}}


def json_char_tokenizer():
    """The conftest's character-level tokenizer, with the symbols JSON needs (it has no braces or quotes)."""
    from tests.conftest import char_tokenizer

    return char_tokenizer(extra="{}[]\":_<>/")


def tiny_json_model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = json_char_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval(), tok


@pytest.fixture(scope="module")
def engine():
    from rft.engine.local import LocalEngine

    model, tok = tiny_json_model()
    return LocalEngine(model, tok, compute_dtype=torch.float32)


def valid(obj) -> bool:
    return (isinstance(obj, dict) and set(obj) == {"answer", "unit", "ok", "tags"}
            and isinstance(obj["answer"], int) and not isinstance(obj["answer"], bool) and 0 <= obj["answer"] <= 999
            and obj["unit"] in ("cm", "kg") and isinstance(obj["ok"], bool) and isinstance(obj["tags"], list)
            and len(obj["tags"]) <= 2 and all(isinstance(t, str) and len(t) <= 3 for t in obj["tags"]))


PROMPTS = [[{"role": "user", "content": "measure it"}], [{"role": "user", "content": "how heavy? answer in json"}]]


def test_random_model_emits_garbage_without_constraint(engine):
    out = engine.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=60, seed=1))
    texts = [c.text for g in out for c in g]
    parsed = []
    for t in texts:
        try:
            parsed.append(json.loads(t))
        except ValueError:
            parsed.append(None)
    assert not any(valid(p) for p in parsed)  # this is what makes the constrained test below strong


@pytest.mark.parametrize("temperature", [0.0, 1.0, 1.5])
def test_constrained_sampling_always_yields_schema_valid_json(engine, temperature):
    c = from_response_format(RF)
    sp = SamplingParams(n=4, temperature=temperature, max_new_tokens=120, seed=3, constraint=c)
    out = engine.generate(PROMPTS, sp)
    for group in out:
        assert len(group) == 4
        for comp in group:
            assert comp.finish_reason == "stop", comp.text  # the grammar ends the sequence with EOS
            assert valid(json.loads(comp.text)), comp.text
            # log-probs are those of the unmasked policy: finite, <= 0
            assert all(lp <= 0 and lp == lp and lp > -1e9 for lp in comp.logprobs)


def test_json_object_and_top_k_top_p(engine):
    c = from_response_format({"type": "json_object"})
    out = engine.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, top_k=20, top_p=0.9, max_new_tokens=60,
                                                  seed=5, constraint=c))
    for comp in (c for g in out for c in g):
        if comp.finish_reason == "stop":
            assert isinstance(json.loads(comp.text), dict)
        else:  # cut by max_new_tokens: a JSON prefix, never anything else
            assert comp.text.startswith("{")


def test_each_sequence_has_its_own_matcher(engine, monkeypatch):
    """Two prompts x n=4 in one batch: 8 matchers, each fed exactly its own sequence's tokens."""
    from rft.engine import constrain

    fed: dict[int, list[int]] = {}
    made = []
    real_matchers, real_advance = constrain.Guide.matchers, constrain.Guide.advance

    def matchers(self, c, count):
        ms = real_matchers(self, c, count)
        made.extend(ms)
        return ms

    def advance(matcher, token):
        fed.setdefault(id(matcher), []).append(int(token))
        real_advance(matcher, token)

    monkeypatch.setattr(constrain.Guide, "matchers", matchers)
    monkeypatch.setattr(constrain.Guide, "advance", staticmethod(advance))
    out = engine.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=120, seed=7,
                                                  constraint=from_response_format(RF)))
    comps = [c for g in out for c in g]
    assert len(made) == 8 and len({id(m) for m in made}) == 8
    assert [fed[id(m)] for m in made] == [list(c.token_ids) for c in comps]
    assert len({c.text for c in comps}) > 1  # different samples, each valid on its own
    assert all(valid(json.loads(c.text)) for c in comps)


def test_unconstrained_generation_never_builds_a_mask(engine, monkeypatch):
    from rft.engine import constrain

    def boom(*a, **k):
        raise AssertionError("mask code ran for an unconstrained call")

    monkeypatch.setattr(constrain.Guide, "allowed", boom)
    monkeypatch.setattr(constrain, "guide_for", boom)
    engine.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=1))
    list(engine.stream(PROMPTS[0], SamplingParams(temperature=0.0, max_new_tokens=8)))


def test_unconstrained_output_is_unchanged_by_the_feature(engine):
    """sample_next with allowed=None is the code path every unconstrained call takes: identical draws."""
    from rft.engine.sampling import sample_next

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    sp = SamplingParams(temperature=0.7, top_p=0.9)
    a = sample_next(logits, sp, torch.Generator().manual_seed(1))
    b = sample_next(logits, sp, torch.Generator().manual_seed(1), torch.ones(4, 50, dtype=torch.bool))
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_stream_and_predicted_honour_the_constraint(engine):
    c = from_response_format(RF)
    sp = SamplingParams(temperature=1.0, max_new_tokens=120, seed=11, constraint=c)
    deltas, done = [], None
    for d, comp in engine.stream(PROMPTS[0], sp, prediction='{"answer": 12, "unit": "cm"'):
        if comp is None:
            deltas.append(d)
        else:
            done = comp
    assert done is not None and "".join(deltas) == done.text
    assert valid(json.loads(done.text))
    g = engine.generate_predicted(PROMPTS[1], SamplingParams(temperature=0.0, max_new_tokens=120, constraint=c),
                                  '{"answer": 1, "unit": "kg", "ok": true, "tags": []}')
    assert valid(json.loads(g.text))


def test_transformers_fallback_decoder_is_constrained_too():
    from rft.engine.local import LocalEngine

    model, tok = tiny_json_model(seed=1)
    eng = LocalEngine(model, tok, compute_dtype=torch.float32, fast=False)
    out = eng.generate(PROMPTS[:1], SamplingParams(n=3, temperature=1.0, max_new_tokens=120, seed=2,
                                                   constraint=from_response_format(RF)))
    assert all(valid(json.loads(c.text)) for c in out[0])


def test_response_format_errors_name_the_field():
    assert from_response_format(None) is None and from_response_format({"type": "text"}) is None
    assert isinstance(from_response_format({"type": "json_object"}), Constraint)
    with pytest.raises(RftError, match="field 'response_format.type'"):
        from_response_format({"type": "xml"})
    with pytest.raises(RftError, match="not"):  # an unenforceable keyword is refused, never ignored
        from_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}})
    assert response_format_problems({"type": "json_schema"})[0][0] == "response_format.json_schema"
    assert response_format_problems({"type": "json_schema", "json_schema": {"name": "", "schema": 3}})
    # equal formats give equal (hashable) constraints, so such requests batch together
    assert hash(from_response_format(RF)) == hash(from_response_format(json.loads(json.dumps(RF))))
