"""Every architecture family rft claims, end to end on a tiny randomly initialised model (no downloads):
llama, qwen2 (q/k/v biases), qwen3 (q/k norms), mistral (sliding window 8, exceeded), phi3 (fused projections,
sliding window 8), gemma2 (soft-capping, alternating windows), gemma3_text, qwen2_moe (mixture of experts).

For each family (2 layers, hidden 64, the character tokenizer of conftest.py):
- the engine choice: `archs.engine_for` names the engine the family should get, `LocalEngine` uses it, and the
  choice is logged in one line;
- greedy identity: the rft engine in fp32 emits the same tokens as `transformers` `generate` (three prompts of
  different lengths in one left-padded batch, 12 new tokens, so windows of 8 are exceeded);
- log-probs: `rft.train.policy.completion_logprobs` (the training forward: prompt once, KV cache repeated)
  against a plain full forward over prompt + completion, max abs error printed and below 1e-4, and the rollout
  log-probs the engine returned against the same forward;
- training: three `train_step`s on the parts `setup_training` builds (every group made learnable) change the
  parameters; the model is saved as an rft checkpoint, resolved and loaded again by path (weights equal) and
  the loaded engine answers a chat (what the server does for a model reference).
Run: `.venv/bin/python -m pytest -q -s tests/test_architectures.py` (-s prints the log-prob errors).
"""

from __future__ import annotations

import logging

import pytest
import torch

from tests.conftest import char_tokenizer
from rft import algo, models
from rft.config import parse_job
from rft.data import load_dataset
from rft.engine import archs, load_engine
from rft.engine.local import LocalEngine, render_prompt
from rft.engine.protocol import SamplingParams
from rft.train.checkpoint import save_model_checkpoint
from rft.train.policy import build_batch, completion_logprobs
from rft.train.setup import setup_training
from rft.train.step import train_step

EXPECTED = {"llama": "fast", "qwen2": "fast", "qwen3": "fast", "mistral": "fast", "phi3": "fast",
            "gemma2": "transformers", "gemma3_text": "transformers", "qwen2_moe": "transformers"}
FAMILIES = list(EXPECTED)
PROMPTS = ["Say red", "Say something blue, please", "Hi"]
REAL_ADVANTAGES = algo.compute_advantages


def _model(model_type: str):
    import transformers

    tok = char_tokenizer()
    cfg = archs.random_config(model_type, vocab_size=len(tok), window=8, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():  # transformers initialises biases to 0 and norms to 1 (or 0 for (1 + w)): randomise
        for n, p in model.named_parameters():  # them, or a decoder that skipped them would pass
            if n.endswith("bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.5)
    return model, tok


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Each family saved as a model directory (what a user points rft at)."""
    out = {}
    for mt in FAMILIES:
        model, tok = _model(mt)
        d = tmp_path_factory.mktemp(mt)
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        out[mt] = d
    return out


def _prompt_ids(tok) -> list[list[int]]:
    return [render_prompt(tok, [{"role": "user", "content": p}]) for p in PROMPTS]


@pytest.mark.parametrize("mt", FAMILIES)
def test_each_family_gets_its_engine_and_the_choice_is_logged(mt, caplog):
    model, tok = _model(mt)
    name, reason = archs.engine_for(model.config)
    assert name == EXPECTED[mt], reason
    assert reason.startswith(f"{mt}: ")
    with caplog.at_level(logging.INFO, logger="rft.engine"):
        eng = LocalEngine(model, tok, compute_dtype=torch.float32)
    assert eng.backend == EXPECTED[mt]
    assert archs.describe(model.config) == f"engine {name} ({reason})"
    lines = [r.getMessage() for r in caplog.records if r.name == "rft.engine"]
    assert lines == [f"engine {name} ({reason})"]


def test_engine_for_reads_config_json_dicts_and_refuses_what_the_fast_decoder_lacks():
    assert archs.engine_for({"model_type": "qwen2", "sliding_window": 32768, "use_sliding_window": False,
                             "num_hidden_layers": 2}) == ("fast", "qwen2: q/k/v biases")
    assert archs.engine_for({"model_type": "llama", "attention_bias": True})[0] == "transformers"
    assert archs.engine_for({"model_type": "llama", "mlp_bias": True})[0] == "transformers"
    assert archs.engine_for({"model_type": "phi3", "partial_rotary_factor": 0.75})[0] == "transformers"
    assert archs.engine_for({"model_type": "llama", "hidden_act": "gelu"})[0] == "transformers"
    name, reason = archs.engine_for({"model_type": "olmoe"})
    assert name == "transformers" and "experts" in reason
    assert archs.engine_for({"model_type": "gpt2"})[1] == "gpt2: not a Llama-family architecture the fast decoder covers"
    assert archs.layer_windows({"num_hidden_layers": 3, "sliding_window": 8,
                                "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}) == [8, None, 8]
    assert archs.layer_windows({"num_hidden_layers": 2, "sliding_window": 8}) == [8, 8]


@pytest.mark.parametrize("mt", FAMILIES)
def test_greedy_tokens_equal_transformers_generate_in_fp32(mt):
    model, tok = _model(mt)
    prompts = _prompt_ids(tok)
    eng = LocalEngine(model, tok, compute_dtype=torch.float32)
    ours = [list(c[0].token_ids) for c in eng.generate_ids(prompts, SamplingParams(temperature=0, max_new_tokens=12))]
    L = max(len(p) for p in prompts)
    inp = torch.tensor([[tok.pad_token_id] * (L - len(p)) + p for p in prompts])  # [3, L] left-padded
    attn = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])  # [3, L]
    with torch.no_grad():
        out = model.generate(input_ids=inp, attention_mask=attn, do_sample=False, max_new_tokens=12)  # [3, L+12]
    theirs = []
    for row in out[:, L:].tolist():
        theirs.append(row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row)
    assert ours == theirs
    assert max(len(p) for p in prompts) + 12 > 8  # the sliding windows (8) were exceeded


@pytest.mark.parametrize("dtype,kernels,bound", [(torch.float32, None, 1e-4), (torch.bfloat16, None, 0.05),
                                                 (torch.bfloat16, False, 0.05)], ids=["fp32", "bf16-c-kernels", "bf16-torch"])
@pytest.mark.parametrize("mt", [f for f in FAMILIES if EXPECTED[f] == "fast"])
def test_fast_decoder_logits_track_the_model_forward(mt, dtype, kernels, bound):
    """The fast decoder (fp32; bf16 on the C kernels where the CPU has them and on PyTorch ops) over a prompt and
    12 forced tokens (sliding windows of 8 exceeded): every step's logits against the fp32 model's full forward,
    within 1e-4 (fp32) or 0.05 (bf16; logits' std here is about 0.2, and a missing bias, q/k norm or window is far
    outside either bound: greedy tokens alone can miss a window on a random model)."""
    from rft.engine.fast_llama import FastDecoder

    model, tok = _model(mt)
    prompts = _prompt_ids(tok)
    L = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (L - len(p)) + p for p in prompts])  # [3, L]
    attn = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])  # [3, L]
    forced = torch.randint(3, len(tok), (3, 12), generator=torch.Generator().manual_seed(0))  # [3, 12]
    full_ids = torch.cat([ids, forced], 1)  # [3, L+12]
    full_attn = torch.cat([attn, torch.ones_like(forced)], 1)  # [3, L+12]
    with torch.no_grad():
        ref = model(input_ids=full_ids, attention_mask=full_attn,
                    position_ids=(full_attn.cumsum(-1) - 1).clamp(min=0)).logits[:, L - 1 :]  # [3, 13, V]
    dec = FastDecoder(model, dtype, kernels=kernels)
    logits, state = dec.prefill(ids, attn, 12)  # [3, V]
    got = [logits]
    for j in range(12):
        got.append(dec.decode(forced[:, j], state))  # [3, V]
    err = (torch.stack(got, 1) - ref).abs().max().item()
    assert err < bound, err


@pytest.mark.parametrize("mt", FAMILIES)
def test_training_logprobs_match_a_full_forward(mt):
    model, tok = _model(mt)
    prompts = _prompt_ids(tok)
    eng = LocalEngine(model, tok, compute_dtype=torch.float32)
    G = 2
    outs = eng.generate_ids(prompts, SamplingParams(n=G, temperature=1.0, max_new_tokens=10, seed=0))
    comps = [(list(c.token_ids), list(c.logprobs)) for group in outs for c in group]
    batch = build_batch(prompts, comps, torch.zeros(len(comps)), tok.pad_token_id, G)
    with torch.no_grad():
        logp, _ = completion_logprobs(model, batch, temperature=1.0, compute_dtype=torch.float32)  # [B, Lc]
    err_train = err_rollout = 0.0
    for i, (ids, lps) in enumerate(comps):
        p = prompts[i // G]
        full = torch.tensor([p + ids])  # [1, P + n]
        with torch.no_grad():
            logits = model(input_ids=full).logits[0, len(p) - 1 : -1].float()  # [n, V]
        ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None])[:, 0]  # [n]
        err_train = max(err_train, (logp[i, : len(ids)] - ref).abs().max().item())
        err_rollout = max(err_rollout, (torch.tensor(lps) - ref).abs().max().item())
    print(f"\n{mt}: log-prob max abs error, training forward {err_train:.2e}, rollout {err_rollout:.2e}")
    assert err_train < 1e-5  # gemma2: soft-capping at 1.0 makes a missing cap far larger
    assert err_rollout < 1e-5


@pytest.fixture
def learnable(monkeypatch):
    """Every group gets rewards 0, 1, 2, ... so each step updates (a random model earns no reward)."""
    monkeypatch.setattr(algo, "compute_advantages", lambda name, r: REAL_ADVANTAGES(
        name, torch.arange(r.numel(), dtype=torch.float32).view_as(r)))


def _job(model_dir):
    return parse_job({
        "model": str(model_dir), "training_file": "builtin:arithmetic", "seed": 0,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": {"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}", "reference": "e",
                       "operation": "like"},
            "hyperparameters": {"batch_size": 2, "learning_rate_multiplier": 10.0}}},
        "rft": {"sampling": {"n": 2, "max_new_tokens": 6}, "train": {"max_steps": 3, "dtype": "float32"},
                "algorithm": {"beta": 0.0}, "learnability": {"enabled": False}}})


@pytest.mark.parametrize("mt", FAMILIES)
def test_three_steps_train_save_load_and_serve(mt, model_dirs, learnable, tmp_path):
    parts = setup_training(_job(model_dirs[mt]))
    try:
        assert parts.engine.backend == EXPECTED[mt]
        before = {n: p.detach().clone() for n, p in parts.model.named_parameters()}
        rows = load_dataset("builtin:arithmetic", n=6).rows
        for k in range(1, 4):
            st = train_step(k, rows[2 * k - 2 : 2 * k], parts)
            assert st.update.updates == 1
        changed = [n for n, p in parts.model.named_parameters() if not torch.equal(before[n], p.detach())]
        assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} tensors changed"
        out = tmp_path / "ckpt"
        save_model_checkpoint(parts.model, parts.tokenizer, out, {"step": 3})
        trained = {n: p.detach().clone() for n, p in parts.model.named_parameters()}
    finally:
        parts.inputs.close()
    resolved = models.resolve(str(out))
    assert resolved.kind == "checkpoint"
    eng = load_engine(resolved, compute_dtype=torch.float32)
    assert eng.backend == EXPECTED[mt]
    for n, p in eng.model.named_parameters():
        assert torch.equal(p.detach(), trained[n]), n
    [[c]] = eng.generate([[{"role": "user", "content": "Say red"}]], SamplingParams(temperature=0, max_new_tokens=5))
    assert c.token_ids and c.finish_reason in ("stop", "length")


@pytest.mark.parametrize("mt", ["gemma2", "qwen2_moe"])
def test_transformers_path_in_bf16_runs_a_bf16_copy_that_sync_refreshes(mt):
    """The transformers decoder asked for bf16 on an fp32 model decodes with a bf16 copy (not autocast, which
    re-cast every weight each forward): its greedy tokens equal transformers' generate on the model cast to bf16;
    after the trainer's weights change, `sync_weights()` makes the copy follow (the same tokens as a fresh engine
    on the changed model), and the trainer's own model stays fp32."""
    import copy

    model, tok = _model(mt)
    prompts = _prompt_ids(tok)
    greedy = SamplingParams(temperature=0, max_new_tokens=10)
    eng = LocalEngine(model, tok, compute_dtype=torch.bfloat16)
    dec = eng.decoder
    assert dec.model is not model and all(p.dtype == torch.bfloat16 for p in dec.model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())

    def ids(e):
        return [list(c[0].token_ids) for c in e.generate_ids(prompts, greedy)]

    def hf(m):
        L = max(len(p) for p in prompts)
        inp = torch.tensor([[tok.pad_token_id] * (L - len(p)) + p for p in prompts])  # [3, L] left-padded
        attn = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])  # [3, L]
        with torch.no_grad():
            out = copy.deepcopy(m).to(torch.bfloat16).generate(input_ids=inp, attention_mask=attn, do_sample=False,
                                                                max_new_tokens=10)  # [3, L+10]
        return [r[: r.index(tok.eos_token_id) + 1] if tok.eos_token_id in r else r for r in out[:, L:].tolist()]

    before = ids(eng)
    assert before == hf(model)
    with torch.no_grad():  # an "optimizer step" that changes what the model says
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert ids(eng) == before  # the copy is stale until synced
    eng.sync_weights()
    after = ids(eng)
    assert after == ids(LocalEngine(model, tok, compute_dtype=torch.bfloat16)) and after != before
