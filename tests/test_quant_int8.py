"""LoRA on int8 base weights (`rft.lora.quantize_base: int8`, rft.models.quant): the int8 layer against the fp32
one within the absmax quantisation bound, training that moves only the adapters, the merge for serving (dense
fp32, the weights training saw), the fast engine reading the same weights, the forecast's 1 byte a parameter,
and the config and missing-package errors.

Run: .venv/bin/python -m pytest -q tests/test_quant_int8.py
"""

from __future__ import annotations

import copy
import pickle
import sys

import pytest
import torch

from rft.errors import RftError
from rft.jobcheck import parse_job
from rft.models import quant

GRADER = {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
          "evaluation_metric": "fuzzy_match"}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _job(model_dir, **lora):
    return parse_job({"model": str(model_dir), "training_file": "builtin:arithmetic", "seed": 0,
                      "method": {"type": "reinforcement", "reinforcement": {
                          "grader": GRADER, "hyperparameters": {"batch_size": 2}}},
                      "rft": {"sampling": {"n": 2, "max_new_tokens": 6}, "optimizer": {"lr": 1e-2},
                              "lora": {"enabled": True, "rank": 4, "quantize_base": "int8", **lora},
                              "train": {"dtype": "float32", "max_steps": 3},
                              "learnability": {"enabled": False}}}, "job.yaml")


def _peft(model_dir, rank=4):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    quant.quiet_bitsandbytes()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS))
    for n, p in model.named_parameters():  # non-zero B: the adapters change the output from the start
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    return model.train()


def _wrapped(model):
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]


# ---------------------------------------------------------------------------------------------- the layer
def test_int8_layer_matches_fp32_within_the_absmax_bound(tiny_model_dir):
    """Per output row o, W~ = round(127 W/absmax_o) absmax_o/127 after bitsandbytes' fp16 cast, so
    |W - W~| <= absmax_o (1/254 + 2**-11) elementwise and |y_o - y~_o| <= absmax_o (1/254 + 2**-11) sum_i |x_i|."""
    model = _peft(tiny_model_dir)
    lin = dict(_wrapped(model))["base_model.model.model.layers.0.mlp.up_proj"]
    W = lin.base_layer.weight.detach().clone()  # [128, 64] fp32
    with torch.no_grad():
        W[3] *= 40.0  # one row with a large range: its own scale, the other rows unaffected
        lin.base_layer.weight.copy_(W)
    assert quant.quantize_lora_base(model) == 4 * 7
    q = lin.base_layer
    assert quant.is_int8(q) and q.weight.dtype == torch.int8 and q.weight.numel() == W.numel()
    x = torch.randn(5, 64)
    with torch.no_grad():
        y, yq = x @ W.T, q(x)  # [5, 128]
    absmax = W.abs().amax(1)  # [128]
    step = absmax * (1 / 254 + 2.0**-11)  # [128]
    assert ((quant.dense_weight(q) - W).abs() <= step[:, None] * (1 + 1e-6)).all()
    bound = step[None, :] * x.abs().sum(1, keepdim=True) * (1 + 1e-5) + 1e-6  # [5, 128]
    err = (y - yq).abs()
    assert (err <= bound).all(), (err / bound).max()
    assert err.max() > 0  # it is quantised: not the fp32 layer
    assert (err / bound).max() > 0.01  # and the bound is not vacuous by orders of magnitude
    assert err[:, 3].mean() > 10 * err[:, [0, 1, 2, 4]].mean()  # the wide row's error is its own
    with torch.no_grad():  # weight-only on every path: eval mode computes the same (no activation quantisation)
        assert torch.equal(q.eval()(x), yq)
        assert torch.equal(pickle.loads(pickle.dumps(q))(x), yq)  # Ray ships models by pickle


def test_config_needs_lora_and_bitsandbytes(tiny_model_dir, monkeypatch):
    with pytest.raises(RftError, match="rft.lora.enabled: true"):
        parse_job({"training_file": "builtin:arithmetic", "method": {"type": "reinforcement", "reinforcement": {
            "grader": GRADER}}, "rft": {"lora": {"quantize_base": "int8"}}}, "job.yaml")
    with pytest.raises(RftError, match="did you mean|valid|int8"):
        parse_job({"training_file": "builtin:arithmetic", "method": {"type": "reinforcement", "reinforcement": {
            "grader": GRADER}}, "rft": {"lora": {"enabled": True, "quantize_base": "int4"}}}, "job.yaml")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # an import of it now fails
    with pytest.raises(RftError, match="rft.lora.quantize_base is int8 but bitsandbytes is not installed") as e:
        quant.quantize_lora_base(_peft(tiny_model_dir))
    assert "pip install" in e.value.hint


# ---------------------------------------------------------------------------------------------- training
def test_lora_on_int8_trains_only_the_adapters(tiny_model_dir):
    """3 real GRPO steps on the int8 base: adapters move, every int8 weight, scale and other base parameter stays
    bit for bit; then 3 AdamW steps of a language-model loss on one fixed batch lower that loss."""
    from rft.train.setup import load_inputs, load_policy, policy_parts
    from rft.train.step import train_step

    job = _job(tiny_model_dir)
    inputs = load_inputs(job)
    try:
        model, tok = load_policy(job, inputs.model_ref)
        assert quant.quantize_lora_base(model) == 0  # load_policy (rft.lora.quantize_base: int8) already did it
        assert all(quant.is_int8(m.base_layer) for _, m in _wrapped(model))
        parts = policy_parts(job, inputs, model, tok)
        assert parts.params and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
        before = {n: t.detach().clone() for n, t in list(model.named_parameters()) + list(model.named_buffers())}
        scales = {n: quant._scale(m.base_layer).clone() for n, m in _wrapped(model)}
        updates = 0
        for k in range(3):
            st = train_step(k + 1, parts.inputs.train_ds.rows[2 * k:2 * k + 2], parts)
            assert st.update.nonfinite is None, st.update
            updates += st.update.updates
        assert updates >= 1
        now = dict(list(model.named_parameters()) + list(model.named_buffers()))
        changed = {n for n, t in now.items() if not torch.equal(t, before[n])}
        assert changed and all("lora_" in n for n in changed), changed
        assert any("lora_B" in n for n in changed)
        assert all(torch.equal(quant._scale(m.base_layer), scales[n]) for n, m in _wrapped(model))
    finally:
        inputs.close()

    model = _peft(tiny_model_dir)
    quant.quantize_lora_base(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(3, 60, (2, 16), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(4):
        loss = model(input_ids=ids, labels=ids).loss
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[3] < losses[0] - 0.05, losses


# ------------------------------------------------------------------------------------------- merge, serve
def test_merge_dequantises_then_merges_and_serves_as_fp32(tiny_model_dir, tmp_path):
    """The checkpoint path (rft.train.checkpoint: a copy, dequantised, merged, saved): a dense fp32 model whose
    weights are W~ + B A, the same the fast engine packs (`effective_weight`) and the same outputs as the int8
    model; it reloads through rft.models.load as an ordinary model; the adapter saves on its own."""
    from safetensors import safe_open

    from rft import models
    from rft.engine.fast_llama import effective_weight

    model = _peft(tiny_model_dir)
    quant.quantize_lora_base(model)
    ids = torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits_int8 = model(input_ids=ids).logits  # [2, 12, V] (training mode: the dequantised matmul)
    packed = {n.replace("base_model.model.", ""): effective_weight(m) for n, m in _wrapped(model)}

    copy_ = copy.deepcopy(model)
    assert quant.dequantize_lora_base(copy_) == 4 * 7
    assert not any(quant.is_int8(m.base_layer) for _, m in _wrapped(copy_))
    merged = copy_.merge_and_unload()
    for name, w in packed.items():
        assert torch.equal(merged.get_submodule(name).weight, w), name  # engine and checkpoint agree exactly
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, logits_int8, atol=1e-4)
    assert all(quant.is_int8(m.base_layer) for _, m in _wrapped(model))  # the training model is untouched

    out = tmp_path / "ckpt"
    merged.save_pretrained(out, safe_serialization=True)
    model.save_pretrained(out / "adapter", safe_serialization=True)
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert f.keys() and all("lora_" in k for k in f.keys())
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert all(f.get_slice(k).get_dtype() in ("F32",) for k in f.keys())
        assert not any("SCB" in k or "weight_format" in k for k in f.keys())
    (out / "tokenizer.json").write_bytes((tiny_model_dir / "tokenizer.json").read_bytes())
    for extra in ("tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model_dir / extra).exists():
            (out / extra).write_bytes((tiny_model_dir / extra).read_bytes())
    served, _ = models.load(models.ResolvedModel(str(out), out, "directory"))
    assert "quantization_config" not in served.config.to_dict()
    with torch.no_grad():
        assert torch.allclose(served(input_ids=ids).logits, logits_int8, atol=1e-4)


# ------------------------------------------------------------------------------------------------ forecast
def test_forecast_counts_int8_base_weights_at_one_byte():
    from rft.train import memory
    from tests.test_memory import N_TINY, TINY

    s = memory.model_shape(TINY)
    job = lambda **lo: parse_job({"training_file": "builtin:arithmetic", "method": {  # noqa: E731
        "type": "reinforcement", "reinforcement": {"grader": GRADER}}, "rft": {
        "sampling": {"n": 4, "max_new_tokens": 10}, "train": {"dtype": "float32"},
        "lora": {"enabled": True, "rank": 2, "targets": ["q_proj", "v_proj"], **lo}}}, "job.yaml")
    fp = memory.forecast(job(), s, prompt_tokens=20)
    q8 = memory.forecast(job(quantize_base="int8"), s, prompt_tokens=20)
    # by hand: q 64x64 and v 64x32 in 4 layers = 24576 int8 parameters, 4 x (64 + 32) = 384 rows of fp32 scales
    assert q8.components["weights"] == (N_TINY - 24576) * 4 + 24576 * 1 + 384 * 4
    assert fp.components["weights"] - q8.components["weights"] == 24576 * 3 - 384 * 4
    assert q8.components["lora"] == fp.components["lora"] and q8.components["optimizer"] == fp.components["optimizer"]
    assert q8.phases["training"] == fp.phases["training"] + 64 * 64 * 4  # the largest layer dequantised, fp32
    assert q8.settings["int8_base"] and not fp.settings["int8_base"]
    assert q8.phases["load"] == 24576 * 4 and "load" not in fp.phases  # converting reads the fp32 originals
    big = memory.Forecast(fp.device, fp.components, fp.phases, fp.settings, limit=1)
    assert "rft.lora.quantize_base: int8" in {f["set"] for f in memory.fixes(job(), s, big, prompt_tokens=20)}


# ------------------------------------------------------------------------------------------- end to end


def test_rft_train_with_an_int8_base_writes_a_dense_checkpoint_that_serves(tiny_model_dir, tmp_path):
    """`rft train` with `rft.lora.quantize_base: int8`, through the installed entry point: the run says the base is
    int8 in its resolved config, the checkpoint is dense floating point (no int8 tensors, no quantisation keys) with
    the adapter beside it, and `rft eval` on the checkpoint runs."""
    import json

    from safetensors import safe_open

    from tests.clitools import run_rft
    from tests.jobspecs import tiny_job_file

    job = tiny_job_file(tmp_path, tiny_model_dir, lora={"enabled": True, "rank": 4, "quantize_base": "int8"},
                        learnability={"enabled": False})
    run = tmp_path / "run"
    r = run_rft("train", str(job), "-o", str(run), "--json", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "quantize_base: int8" in (run / "resolved_config.yaml").read_text()
    ckpts = sorted(p.parent for p in run.rglob("rft_checkpoint.json"))
    assert ckpts, list(run.rglob("*"))
    ck = ckpts[-1]
    assert (ck / "adapter").is_dir()
    with safe_open(str(ck / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert keys and not any("SCB" in k or "weight_format" in k for k in keys), keys[:10]
        assert all(f.get_tensor(k).is_floating_point() for k in keys)
    data = tmp_path / "data.jsonl"
    grader = tmp_path / "g.json"
    grader.write_text(json.dumps({"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                                  "reference": "{{item.answer}}", "operation": "eq"}))
    r = run_rft("eval", str(ck), "--data", str(data), "--grader", str(grader), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
