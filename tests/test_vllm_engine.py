"""The vLLM rollout engine's own logic, against a fake `vllm` module (vllm is not installable here and no GPU ran
these): request building, output conversion, weight-name mapping (plain and peft/LoRA, merged), the weight-sync
sequence (load_weights, then the prefix cache reset), the error when vllm is missing, and the config choice.
Nothing here proves the adapter works with real vLLM; bench/gpu_check.sh is where that is checked."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
import torch

from rft.config import EngineConfig
from rft.engine import SamplingParams, backends
from rft.engine.constrain import from_response_format
from rft.engine.local import LocalEngine, render_prompt
from rft.engine.vllm_engine import VLLMEngine, hf_weight_name, to_completions, to_vllm_params, weight_items
from rft.errors import RftError
from tests.conftest import char_tokenizer


# -- a fake vllm module: records what the adapter asks of it ------------------------------------------------------
@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list
    logprobs: list | None
    finish_reason: str


@dataclass
class RequestOutput:
    outputs: list


class FakeModel:
    def __init__(self):
        self.loads: list[dict] = []

    def load_weights(self, weights):
        self.loads.append({n: t.clone() for n, t in weights})


def fake_vllm():
    mod = types.SimpleNamespace()
    mod.instances = []

    class SP:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            self.kw = kw
            self.model = FakeModel()
            self.calls: list = []
            worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=self.model))
            self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(
                driver_worker=types.SimpleNamespace(worker=worker)))
            mod.instances.append(self)

        def reset_prefix_cache(self):
            self.calls.append("reset_prefix_cache")

        def generate(self, requests, sp, use_tqdm=True):
            self.calls.append(("generate", requests, sp.kw))
            outs = []
            for r in requests:
                n = sp.kw["n"]
                last = r["prompt_token_ids"][-1]
                # sample j: tokens [last, j], log-probs -0.5 and -(j + 1); listed in reverse to test the ordering
                outs.append(RequestOutput([CompletionOutput(j, f"t{j}", [last, j], [{last: Logprob(-0.5)},
                                           {j: Logprob(-(j + 1.0))}], "abort" if j == 2 else "stop")
                                           for j in reversed(range(n))]))
            return outs

    mod.SamplingParams, mod.LLM = SP, LLM
    return mod


def tiny(tie=True):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg), tok


# -- pure pieces ------------------------------------------------------------------------------------------------
def test_sampling_params_map_to_vllms():
    vllm = fake_vllm()
    sp = to_vllm_params(vllm, SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=33,
                                             stop=("\n\n",), seed=11))
    assert sp.kw == {"n": 4, "temperature": 0.7, "top_p": 0.9, "top_k": -1, "max_tokens": 33, "stop": ["\n\n"],
                     "seed": 11, "logprobs": 0, "skip_special_tokens": True}
    sp = to_vllm_params(vllm, SamplingParams(temperature=0.0, top_k=5), want_logprobs=False)
    assert (sp.kw["temperature"], sp.kw["top_k"], sp.kw["stop"], sp.kw["logprobs"]) == (0.0, 5, None, None)
    c = from_response_format({"type": "json_object"})
    with pytest.raises(RftError, match="not supported on the vllm engine"):
        to_vllm_params(vllm, SamplingParams(constraint=c))


def test_outputs_convert_in_sample_order_with_the_sampled_tokens_logprobs():
    out = RequestOutput([CompletionOutput(1, "b", [5, 6], [{5: Logprob(-0.1), 9: Logprob(-3.0)}, {6: Logprob(-0.2)}],
                                          "length"),
                         CompletionOutput(0, "a", [7], [{7: Logprob(-1.5)}], "abort"),
                         CompletionOutput(2, "c", [8], None, "stop")])
    a, b, c = to_completions(out, prompt_len=12)
    assert (a.text, a.token_ids, a.logprobs, a.finish_reason, a.prompt_tokens) == ("a", (7,), (-1.5,), "length", 12)
    assert (b.token_ids, b.logprobs, b.finish_reason) == ((5, 6), (-0.1, -0.2), "length")
    assert (c.logprobs, c.finish_reason) == ((), "stop")


def test_weight_names_map_peft_back_to_checkpoint_names():
    assert hf_weight_name("model.layers.0.self_attn.q_proj.weight") == "model.layers.0.self_attn.q_proj.weight"
    assert hf_weight_name("base_model.model.model.layers.3.mlp.down_proj.base_layer.weight") == \
        "model.layers.3.mlp.down_proj.weight"
    assert hf_weight_name("base_model.model.model.norm.weight") == "model.norm.weight"
    assert hf_weight_name("base_model.model.lm_head.weight") == "lm_head.weight"
    for skipped in ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight",
                    "base_model.model.model.embed_tokens.lora_embedding_A.default"):
        assert hf_weight_name(skipped) is None


def test_weight_items_are_the_checkpoint_in_the_engine_dtype_on_the_models_device():
    model, _ = tiny(tie=True)
    items = dict(weight_items(model, torch.bfloat16))
    want = {k for k in model.state_dict() if k != "lm_head.weight"}  # tied: sent once, as the embedding
    assert set(items) == want
    for name, t in items.items():
        p = model.get_parameter(name)
        assert t.dtype == torch.bfloat16 and t.device == p.device
        assert torch.equal(t, p.detach().to(torch.bfloat16))
    model2, _ = tiny(tie=False)
    assert "lm_head.weight" in dict(weight_items(model2, torch.float32))


def test_lora_is_merged_into_the_base_weight():
    from peft import LoraConfig, get_peft_model

    model, _ = tiny()
    names = set(model.state_dict()) - {"lm_head.weight"}
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # B starts at zero: make the adapter do something
    items = dict(weight_items(pm, torch.float32))
    assert set(items) == names
    q = pm.base_model.model.model.layers[1].self_attn.q_proj
    base = q.base_layer.weight
    delta = q.get_delta_weight("default")
    assert delta.abs().max() > 0
    assert torch.allclose(items["model.layers.1.self_attn.q_proj.weight"], base + delta)
    assert torch.equal(items["model.layers.1.self_attn.k_proj.weight"],
                       pm.base_model.model.model.layers[1].self_attn.k_proj.weight)


# -- the engine on the fake ---------------------------------------------------------------------------------------
def test_engine_builds_generates_and_syncs_in_place(tmp_path):
    vllm = fake_vllm()
    model, tok = tiny()
    eng = VLLMEngine(model, tok, model_path=tmp_path, compute_dtype=torch.bfloat16, gpu_memory_utilization=0.25,
                     seed=3, vllm_module=vllm)
    llm = vllm.instances[0]
    assert llm.kw == {"model": str(tmp_path), "tokenizer": str(tmp_path), "dtype": "bfloat16",
                      "gpu_memory_utilization": 0.25, "enable_prefix_caching": True, "seed": 3}
    assert len(llm.model.loads) == 1 and llm.calls == ["reset_prefix_cache"]  # the trainer's weights, at once
    assert (eng.backend, eng.exact_logprobs) == ("vllm", False)

    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "What is 2+2?"}]]
    out = eng.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=1))
    _, requests, kw = llm.calls[-1]
    assert requests == [{"prompt_token_ids": render_prompt(tok, p)} for p in prompts]
    assert kw["n"] == 3 and kw["max_tokens"] == 8
    assert [[c.text for c in g] for g in out] == [["t0", "t1", "t2"]] * 2
    assert out[1][1].logprobs == (-0.5, -2.0) and out[1][2].finish_reason == "length"
    assert out[0][0].prompt_tokens == len(render_prompt(tok, prompts[0]))
    assert eng.last_stats.completion_tokens == 12

    with torch.no_grad():  # an optimizer step
        for p in model.parameters():
            p.add_(1.0)
    eng.sync_weights()
    assert len(llm.model.loads) == 2 and llm.calls[-1] == "reset_prefix_cache"
    new = llm.model.loads[-1]["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(new, model.model.layers[0].mlp.up_proj.weight.detach().to(torch.bfloat16))
    assert not torch.equal(new, llm.model.loads[0]["model.layers.0.mlp.up_proj.weight"])


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    model, tok = tiny()
    with pytest.raises(RftError) as e:
        VLLMEngine(model, tok, model_path="x")
    assert "vllm is not installed" in str(e.value) and "pip install 'rft[vllm]'" in str(e.value)
    with pytest.raises(RftError, match="vllm is not installed"):
        backends.check(EngineConfig(backend="vllm"), "cuda")


def test_backend_choice_by_config(tmp_path):
    model, tok = tiny()
    backends.check(EngineConfig(), "cpu")
    with pytest.raises(RftError, match="needs a CUDA GPU"):
        backends.check(EngineConfig(backend="vllm"), "cpu")
    local = backends.training_engine(EngineConfig(), model, tok, compute_dtype=torch.float32, model_path=tmp_path)
    assert isinstance(local, LocalEngine) and local.backend == "fast"
    v = backends.training_engine(EngineConfig(backend="vllm", gpu_memory_utilization=0.5), model, tok,
                                 compute_dtype=torch.bfloat16, model_path=tmp_path, vllm_module=fake_vllm())
    assert isinstance(v, VLLMEngine) and v.llm.kw["gpu_memory_utilization"] == 0.5


def test_config_selects_the_engine():
    from rft.config import apply_overrides
    from rft.jobcheck import parse_job

    base = {"training_file": "builtin:arithmetic", "method": {"type": "reinforcement", "reinforcement": {"grader": {
        "type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}}}}
    assert parse_job(base, "job.yaml").rft.engine.backend == "local"
    assert parse_job(apply_overrides(base, ["rft.engine.backend=vllm"]), "job.yaml").rft.engine.backend == "vllm"
    with pytest.raises(RftError, match="rft.engine.backend"):
        parse_job(apply_overrides(base, ["rft.engine.backend=vlm"]), "job.yaml")
    with pytest.raises(RftError, match="rft.engine.gpu_memory_utilization"):
        parse_job(apply_overrides(base, ["rft.engine.gpu_memory_utilization=1.5"]), "job.yaml")
