"""`rft.engine.load_engine`: the one loader from a model reference to a LocalEngine, and the decoder state both
decoders share."""

from __future__ import annotations

import pytest
import torch

from rft.engine import SamplingParams, load_engine
from rft.engine.decoder import DecoderState
from rft.engine.local import LocalEngine, best_cpu_dtype
from rft.engine.sampling import stop_text
from rft.errors import RftError
from rft.models import ResolvedModel, resolve

HI = [{"role": "user", "content": "Hi"}]


def test_load_engine_from_a_reference_or_a_resolved_model(tiny_model_dir):
    eng = load_engine(str(tiny_model_dir))
    assert isinstance(eng, LocalEngine) and eng.backend == "fast"
    assert eng.compute_dtype == best_cpu_dtype()  # the CPU's fastest exact dtype by default
    assert next(eng.model.parameters()).dtype == torch.float32  # fp32 master weights
    again = load_engine(resolve(str(tiny_model_dir)), compute_dtype=torch.float32, max_batch_size=3)
    assert again.compute_dtype == torch.float32 and again.max_batch_size == 3
    p = SamplingParams(temperature=0.0, max_new_tokens=6)
    ref = LocalEngine(again.model, again.tokenizer, compute_dtype=torch.float32).generate([HI], p)
    assert again.generate([HI], p)[0][0].token_ids == ref[0][0].token_ids


def test_load_engine_weights_dtype(tiny_model_dir):
    eng = load_engine(ResolvedModel(str(tiny_model_dir), tiny_model_dir, "directory"), dtype=torch.bfloat16,
                      compute_dtype=torch.bfloat16)
    assert next(eng.model.parameters()).dtype == torch.bfloat16 and eng.compute_dtype == torch.bfloat16


def test_load_engine_bad_reference_is_a_user_error(tmp_path):
    with pytest.raises(RftError):
        load_engine(str(tmp_path / "no-such-model"))


@pytest.mark.parametrize("fast", [True, False])
def test_both_decoders_keep_a_decoder_state(tiny_model_dir, fast):
    eng = load_engine(str(tiny_model_dir), compute_dtype=torch.float32)
    eng = LocalEngine(eng.model, eng.tokenizer, compute_dtype=torch.float32, fast=fast)
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])  # [2, 4], row 1 left-padded
    attn = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    logits, st = eng.decoder.prefill(ids, attn, 3)
    assert isinstance(st, DecoderState) and logits.shape[0] == 2
    assert st.t == 4 and st.pos.tolist() == [4, 2] and st.valid[:, :4].tolist() == attn.bool().tolist()
    st = eng.decoder.repeat(st, 2)
    eng.decoder.decode(torch.tensor([1, 2, 3, 4]), st)
    assert st.t == 5 and st.pos.tolist() == [5, 5, 3, 3] and bool(st.valid[:, 4].all())
    st = eng.decoder.select(st, torch.tensor([0, 3]))
    assert st.pos.tolist() == [5, 3] and st.valid.shape[0] == 2


def test_stop_text_cuts_before_the_earliest_stop_string(tiny_model_dir):
    tok = load_engine(str(tiny_model_dir)).tokenizer
    ids = tok("ab.cd!ef", add_special_tokens=False)["input_ids"]
    assert stop_text(tok, ids, ("!", ".")) == "ab"
    assert stop_text(tok, ids, ("zz",)) is None
