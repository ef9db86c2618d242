"""Shared fixtures: a throw-away RFT_HOME per test session (the converted-model cache stays shared), and a
randomly initialised 4-layer Llama for fast training tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REAL_CACHE = os.environ.get("RFT_CACHE_DIR") or str(Path(os.environ.get("RFT_HOME", Path.home() / ".rft")).expanduser() / "cache")


@pytest.fixture(autouse=True)
def _rft_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RFT_HOME", str(tmp_path / "rft_home"))
    monkeypatch.setenv("RFT_CACHE_DIR", _REAL_CACHE)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    yield


def char_tokenizer(extra: str = ""):
    """A character-level tokenizer (76 symbols, plus the characters in `extra`) with a ChatML template: small
    enough that a tiny random model can visibly learn a token preference in a few steps."""
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_letters + string.digits + " .,?!+*-=\n'" + extra)
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + chars)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 4-layer Llama with a character-level tokenizer, saved as an HF directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
