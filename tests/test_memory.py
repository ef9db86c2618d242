"""Memory: the forecast's components against hand-computed values for a tiny config, the split fp32 master of bf16
weights, exact resume for every optimizer, and the refusal through the installed `rft` with a small fake device
(RFT_MEMORY_LIMIT_GB).

Run: .venv/bin/python -m pytest -q tests/test_memory.py
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from rft.jobcheck import parse_job
from rft.train import memory, optim

# The tiny config: vocab 79, hidden 64, 4 layers, 4 heads of 16, 2 KV heads, intermediate 128, tied embeddings.
TINY = {"model_type": "llama", "vocab_size": 79, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True,
        "max_position_embeddings": 512}
# By hand: embedding 79*64 = 5056 (the head is tied); a layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 = 12288,
# gate/up/down 3 * 64*128 = 24576, two norms 128 -> 36992; four layers 147968; final norm 64.
N_TINY = 5056 + 4 * 36992 + 64  # 153088
GRADER = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}


def _job(**rft):
    base = {"sampling": {"n": 4, "max_new_tokens": 10}, "train": {"dtype": "float32", "prompts_per_step": 2}}
    for k, v in rft.items():
        base[k] = {**base.get(k, {}), **v}
    return parse_job({"training_file": "builtin:arithmetic", "method": {"type": "reinforcement", "reinforcement": {
        "grader": GRADER}}, "rft": base}, "job.yaml")


def test_model_shape_counts_parameters_from_the_config():
    s = memory.model_shape(TINY)
    assert (s.vocab, s.hidden, s.layers, s.heads, s.kv_heads, s.head_dim, s.intermediate) == (79, 64, 4, 4, 2, 16, 128)
    assert s.n_params == N_TINY and s.fast_engine
    assert sorted(n for n, _, _ in s.linears if n == "q_proj") == ["q_proj"] * 4


def test_forecast_components_match_hand_computed_values():
    s = memory.model_shape(TINY)
    P, Lc, N, G = 20, 10, 2, 4
    fc = memory.forecast(_job(), s, prompt_tokens=P, device="cpu")
    comp = fc.components
    assert comp["weights"] == N_TINY * 4 and comp["gradients"] == N_TINY * 4 and comp["optimizer"] == N_TINY * 8
    # fp32 weights and fp32 compute: the fast decoder only makes the fused qkv (64 x 128) and gate/up (64 x 256)
    assert comp["engine_weights"] == 4 * (64 * 128 + 64 * 256) * 4
    assert comp["reference"] == 0 and comp["runtime"] == memory.RUNTIME_CPU and comp["rollout_copy"] == 0
    # rollout: 2 prompts x 4 rows; KV = layers x rows x (K and V) x 32 x (P + Lc) x 4 bytes
    kv = 4 * 8 * 2 * 32 * (P + Lc) * 4
    prefill = 2 * P * (4 * 64 + 2 * 128) * 4 + 8 * 79 * 4 * 2
    assert fc.phases["rollout"] == kv + prefill
    # training, one micro-batch = the step (2 prompts, 8 sequences). Per token and layer: 4*64 fp32 residual/norm
    # inputs + 4 * (2*64 + 3*64 + 4*32 + 4*128) + 8 = 1024 + 3840 + 8 = 4872 bytes.
    act = 4 * 4 * 64 + 4 * (2 * 64 + 3 * 64 + 4 * 32 + 4 * 128) + 8
    assert act == 4872
    layers = 4 * (2 * P * act + 8 * Lc * act + 8 * P * 2 * 32 * 4)
    head = 8 * Lc * 79 * (12 + 4)
    emb = 79 * 64 * (4 + 4)  # the embedding's and the head's dense gradients, before they are summed
    assert fc.phases["training"] == layers + head + emb
    assert fc.phases["optimizer"] == 4 * N_TINY  # foreach AdamW's fp32 temporary
    assert fc.peak == sum(comp.values()) + max(fc.phases.values())

    # gradient checkpointing: whole sequences (P + Lc tokens), only layer inputs kept, one layer recomputed
    ck = memory.forecast(_job(train={"gradient_checkpointing": True}), s, prompt_tokens=P)
    tokens = 8 * (P + Lc)
    assert ck.phases["training"] == 4 * tokens * 64 * 4 + tokens * act + head + emb
    # micro-batches of one group (4 sequences): the 2 prompts one at a time
    mb = memory.forecast(_job(train={"micro_batch_size": 4}), s, prompt_tokens=P)
    assert mb.phases["training"] == 4 * (P * act + 4 * Lc * act + 4 * P * 2 * 32 * 4) + 4 * Lc * 79 * 16 + emb
    # a bounded engine batch: one prompt's 4 rows at a time
    rb = memory.forecast(_job(train={"rollout_batch_size": 4}), s, prompt_tokens=P)
    assert rb.phases["rollout"] == 4 * 4 * 2 * 32 * (P + Lc) * 4 + P * (4 * 64 + 2 * 128) * 4 + 4 * 79 * 4 * 2


def test_forecast_of_lora_bf16_8bit_and_the_reference():
    s = memory.model_shape(TINY)
    # LoRA rank 2 on q and v: per layer 2*(64+64) + 2*(64+32) = 448 adapter parameters, fp32, AdamW
    lo = memory.forecast(_job(lora={"enabled": True, "rank": 2, "targets": ["q_proj", "v_proj"]}), s, prompt_tokens=20)
    assert lo.components["lora"] == 4 * 448 * 4 and lo.components["gradients"] == 4 * 448 * 4
    assert lo.components["optimizer"] == 4 * 448 * 8 and lo.components["weights"] == N_TINY * 4
    assert lo.components["engine_weights"] == N_TINY * 4  # LoRA merged into the engine's copy
    # bf16 weights + 8-bit AdamW: 2 B weights and grads; the master's 2 B remainder; tensors >= 4096 elements
    # quantised (2 B + two fp32 absmax per 256 + two 256-entry code maps), smaller ones fp32 moments
    b8 = memory.forecast(_job(train={"weights_dtype": "bfloat16", "dtype": "auto"}, optimizer={"name": "adamw_8bit"}),
                         s, prompt_tokens=20)
    sizes = [5056] + [4096, 2048, 2048, 4096, 8192, 8192, 8192, 64, 64] * 4 + [64]
    assert sum(sizes) == N_TINY
    q = sum(2 * n + 8 * math.ceil(n / 256) + 2048 if n >= 4096 else 8 * n for n in sizes)
    assert b8.components["optimizer"] == q + 2 * N_TINY
    assert b8.components["weights"] == 2 * N_TINY and b8.components["gradients"] == 2 * N_TINY
    assert b8.settings["compute_dtype"] == "bfloat16" and b8.phases["optimizer"] == memory.SPLIT_8BIT_STEP * 8192
    # bf16 on CPU: the fused qkv and gate/up, plus the packed layout of every linear and the head (bf16)
    assert b8.components["engine_weights"] == 4 * (64 * 128 + 64 * 256) * 2 + (4 * 36864 + 79 * 64) * 2
    # fp32 weights computing in bf16: autocast's bf16 copy of every weight in the training phase
    mixed = memory.forecast(_job(train={"dtype": "bfloat16"}), s, prompt_tokens=20)
    f32 = memory.forecast(_job(), s, prompt_tokens=20)
    assert mixed.components["engine_weights"] == N_TINY * 2 + (4 * 36864 + 79 * 64) * 2
    assert mixed.phases["training"] - N_TINY * 2 < f32.phases["training"]
    # overlapped rollouts: a second copy of the policy and its engine; the rollout runs during training
    ov = memory.forecast(_job(train={"overlap_rollouts": True}), s, prompt_tokens=20)
    f32 = memory.forecast(_job(), s, prompt_tokens=20)
    assert ov.components["rollout_copy"] == N_TINY * 4 + f32.components["engine_weights"]
    assert ov.phases["training"] == f32.phases["training"] + f32.phases["rollout"]
    # beta > 0 without LoRA: a frozen copy in the compute dtype
    ref = memory.forecast(_job(algorithm={"beta": 0.1}), s, prompt_tokens=20)
    assert ref.components["reference"] == N_TINY * 4
    # each memory setting lowers the forecast of a large enough job
    big = _job(train={"prompts_per_step": 16, "rollout_batch_size": 64}, sampling={"n": 8, "max_new_tokens": 256})
    fc = memory.forecast(big, s, prompt_tokens=200)
    fc = memory.Forecast(fc.device, fc.components, fc.phases, fc.settings, limit=1)
    fixes = memory.fixes(big, s, fc, prompt_tokens=200)
    saves = {f["set"]: f["saves_bytes"] for f in fixes}
    assert all(v > 0 for v in saves.values()), saves  # only settings that lower the peak are offered
    for k in ("rft.train.gradient_checkpointing: true", "rft.train.micro_batch_size: 8", "rft.lora.enabled: true",
              "rft.train.weights_dtype: bfloat16", "rft.optimizer.name: adamw_8bit"):
        assert k in saves, (k, saves)
    assert [f["peak_bytes"] for f in fixes] == sorted(f["peak_bytes"] for f in fixes)
    assert any(f["set"] == "all of the above" for f in fixes)  # nothing fits a 1-byte device


def test_device_limit_reads_the_override(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "1.5")
    assert memory.device_limit("cpu") == (int(1.5 * memory.GiB), memory.LIMIT_ENV)
    monkeypatch.setenv(memory.LIMIT_ENV, "lots")
    with pytest.raises(Exception, match="not a number"):
        memory.device_limit("cpu")
    monkeypatch.delenv(memory.LIMIT_ENV)
    n, src = memory.device_limit("cpu")
    assert src == "MemAvailable" and n > 0


# ------------------------------------------------------------------------------------------ optimizers
def test_split_master_round_trips_every_float():
    x = torch.randn(10000) * torch.logspace(-30, 30, 10000)
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1.0, -1.0, 3.4e38, -3.4e38, 1e-45])])
    hi, lo = optim.split_master(x)
    assert hi.dtype == torch.bfloat16 and lo.dtype == torch.int16
    assert torch.equal(optim.join_master(hi, lo).view(torch.int32), x.view(torch.int32))
    n = 10000  # normal floats: the weight is the master rounded to bf16 (half a bf16 step at most)
    assert ((hi[:n].float() - x[:n]).abs() <= x[:n].abs() * 2.0**-8).all()
    assert (hi[:n] == x[:n].bfloat16()).float().mean() > 0.999  # torch's rounding but for exact ties


def test_split_master_trains_exactly_the_fp32_master():
    """bf16 weights through SplitMaster take the same steps as fp32 AdamW on the master (bit for bit), and the
    weight is always the master rounded."""
    torch.manual_seed(0)
    w0 = torch.randn(64, 32)
    ref = torch.nn.Parameter(w0.bfloat16().float())
    p = torch.nn.Parameter(w0.bfloat16())
    o_ref = torch.optim.AdamW([ref], lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, foreach=True)
    o = optim.make("adamw", [p], lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    assert isinstance(o, optim.SplitMaster)
    for _ in range(5):
        g = torch.randn(64, 32).bfloat16()
        ref.grad, p.grad = g.float(), g.clone()
        o_ref.step()
        o.step()
        master = optim.join_master(p.data, o.state[p]["master_lo"])
        assert torch.equal(master, ref.data)
        assert torch.equal(p.data, optim.split_master(ref.data)[0])
    assert not torch.equal(p.data.float(), w0.bfloat16().float())  # updates smaller than a bf16 step were kept


def _tiny_model(dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**{k: v for k, v in TINY.items() if k != "model_type"})
    return LlamaForCausalLM(cfg).to(dtype)


def _steps(model, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(0, 79, (2, 12), generator=g)
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()


@pytest.mark.parametrize("name,dtype", [("adamw", torch.float32), ("adamw_8bit", torch.float32),
                                        ("adamw", torch.bfloat16), ("adamw_8bit", torch.bfloat16)])
def test_resume_is_exact_for_every_optimizer(tmp_path, name, dtype):
    """Train 2 steps, save the training state, train 2 more; a fresh model and optimizer loaded from the state
    and trained the same 2 steps end bit-identical (weights and optimizer state, the fp32 master included)."""
    from rft.train.state import load_state, save_state

    def fresh():
        m = _tiny_model(dtype)
        return m, optim.make(name, list(m.parameters()), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01)

    m1, o1 = fresh()
    _steps(m1, o1, 2, seed=1)
    d = save_state(tmp_path / "state", 2, model=m1, opt=o1, trainer={})
    _steps(m1, o1, 2, seed=2)
    m2, o2 = fresh()
    load_state(d, model=m2, opt=o2)
    _steps(m2, o2, 2, seed=2)
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(a, b), n
    keys = {k for st in o1.state.values() for k in st}
    assert ("master_lo" in keys) == (dtype == torch.bfloat16) and (("state1" in keys) == (name == "adamw_8bit"))
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        for k, v in o1.state[p1].items():
            w = o2.state[p2][k]
            assert (torch.equal(torch.as_tensor(v), torch.as_tensor(w))), k


# --------------------------------------------------------------------------- the refusal, through the CLI
def _cli_job(tmp_path, model_dir, **rft):
    from tests.jobspecs import tiny_job_file

    return tiny_job_file(tmp_path, model_dir, learnability={"enabled": False}, **rft)


def test_preflight_and_train_refuse_a_job_that_does_not_fit(tmp_path, tiny_model_dir):
    """With a fake device a little smaller than the forecast, `rft preflight` and `rft train` exit 2 before
    loading the model, with one error line, the numbers and the settings that would fit, each with its forecast."""
    from rft.jobcheck import load_job
    from rft.train.setup import load_inputs
    from tests.clitools import assert_user_error, run_rft

    job_file = _cli_job(tmp_path, tiny_model_dir)
    job = load_job(job_file)
    inputs = load_inputs(job)
    try:
        fc = memory.job_forecast(job, inputs, device="cpu")
    finally:
        inputs.close()
    lora = memory.forecast(memory.with_settings(job, {"lora": {"enabled": True}}), memory.model_shape(
        json.loads((tiny_model_dir / "config.json").read_text())), prompt_tokens=fc.settings["prompt_tokens"],
        prompts_per_step=fc.settings["prompts_per_step"], group=fc.settings["group"])
    assert lora.peak < fc.peak
    limit_gb = (fc.peak + lora.peak) / 2 / memory.GiB  # fits with LoRA, not without
    env = {memory.LIMIT_ENV: repr(limit_gb)}
    for cmd in ("preflight", "train"):
        r = run_rft(cmd, str(job_file), env=env, cwd=tmp_path)
        assert_user_error(r, "error: this job will not fit in memory: forecast peak", f"({memory.LIMIT_ENV})",
                          "persistent: weights", "settings that would fit", "set rft.lora.enabled: true (")
    r = run_rft("preflight", str(job_file), "--json", env={memory.LIMIT_ENV: "1e-6"}, cwd=tmp_path)
    assert_user_error(r, "no single memory setting fits", "all of the above")
    # memory_check=false: the same job runs with a warning
    r = run_rft("preflight", str(job_file), "rft.train.memory_check=false", "--json", "--prompts", "2",
                env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["memory"]["fits"] is False and rep["memory"]["limit_source"] == memory.LIMIT_ENV
    assert "will not fit in memory" in r.stderr and "memory_check is off" in r.stderr


def test_a_step_trains_with_every_memory_setting_on(tiny_model_dir):
    """bf16 weights + 8-bit AdamW + gradient checkpointing + micro-batches of one group + an engine batch of one
    group, with a KL reference: a real GRPO step updates the weights (through the fp32 master) and stays finite."""
    from rft.train.setup import setup_training
    from rft.train.step import train_step

    job = parse_job({"model": str(tiny_model_dir), "training_file": "builtin:arithmetic", "seed": 0,
                     "method": {"type": "reinforcement", "reinforcement": {
                         "grader": {"type": "text_similarity", "input": "{{sample.output_text}}",
                                    "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"},
                         "hyperparameters": {"batch_size": 2}}},
                     "rft": {"sampling": {"n": 2, "max_new_tokens": 6}, "algorithm": {"beta": 0.05},
                             "optimizer": {"name": "adamw_8bit", "lr": 1e-2},
                             "train": {"max_steps": 2, "weights_dtype": "bfloat16", "gradient_checkpointing": True,
                                       "micro_batch_size": 2, "rollout_batch_size": 2},
                             "learnability": {"enabled": False}}}, "job.yaml")
    parts = setup_training(job)
    try:
        before = {n: p.detach().clone() for n, p in parts.model.named_parameters()}
        rows = parts.inputs.train_ds.rows[:2]
        st = train_step(1, rows, parts)
        assert st.update.updates == 1 and st.update.nonfinite is None, st.update
        changed = [n for n, p in parts.model.named_parameters() if not torch.equal(p, before[n])]
        assert len(changed) > len(before) // 2, changed
        assert all("master_lo" in parts.optimizer.state[p] for p in parts.params if p.grad is not None)
    finally:
        parts.inputs.close()
