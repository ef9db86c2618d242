"""Peak-memory forecast for a training job, from the model's config alone (no weights are loaded), and the check
`rft train` and `rft preflight` run before loading the model.

    shape = model_shape(config_dict)                      sizes, parameter counts (a meta-device model: no memory)
    fc = forecast(job, shape, prompt_tokens=P, device="cpu")
    fc.peak, fc.components, fc.phases, fc.lines()         bytes; the breakdown as text
    check(job, inputs, device=)                           raises RftError when the peak exceeds the device's memory,
                                                          naming the settings that would fit, each with its forecast

What is counted (bytes; w = weights dtype size, c = compute dtype size, Nt = trainable parameters):
  persistent   weights (N x w, tied embeddings once; with rft.lora.quantize_base int8 the base linears LoRA wraps
               at 1 B a parameter + a 4 B scale a row), LoRA adapters (fp32), gradients (Nt x its dtype; they
               live from one step's backward to the next step's zero_grad), optimizer state (AdamW 8 B; 8-bit
               AdamW 2 B + an fp32 scale per 256 values a moment; tensors under 4096 elements fp32; bf16 weights
               + 2 B for the fp32 master's remainder), the engine's packed compute-dtype copy (fast decoder:
               every weight when dtypes differ or LoRA is merged in, else the fused qkv and gate/up; bf16 on CPU
               adds the matmuls' packed layout of every linear and the head), the frozen
               reference (beta > 0 without LoRA: N x c), with rft.train.overlap_rollouts the rollout thread's
               policy copy and engine, and the runtime (Python, torch, transformers).
  phases       (the largest one adds to the persistent part)
    rollout    the KV cache of one engine batch (rows = rollout_batch_size // G prompts x G) over prompt +
               max_new_tokens, and one layer's prefill activations
    training   one micro-batch: per-layer saved activations (prompt pass on unique prompts + completion pass
               with the prompt cache repeated G times), or with gradient checkpointing each layer's input for the
               whole sequence plus one layer recomputed; the LM-head stage (logits, log-softmax, its gradient);
               autocast's compute-dtype copy of the weights (weights dtype != compute dtype; not of int8 ones,
               whose one-layer dequantised transient is counted instead); and, full
               fine-tuning, the embedding's and head's dense gradients before they are summed
    load       (int8 base only) the full-precision base linears, read while their int8 copies are made
    optimizer  the step's temporaries (foreach AdamW: one fp32 buffer over all trainable parameters; the split
               master and bitsandbytes step one tensor at a time: bytes per element of the largest tensor, the
               8-bit one measured, see SPLIT_8BIT_STEP)

Device memory: CUDA's free memory, or the CPU's MemAvailable; `RFT_MEMORY_LIMIT_GB` overrides both (tests, or
to keep a job under a share of the machine).

Simplified: the per-token activation counts are for Llama-style decoder layers with SDPA attention (no T x T
score matrix kept) and are checked against measured peaks by `bench/memory.py`, not derived for every
architecture; mixture-of-experts layers are counted as if every token went through `num_experts_per_tok`
experts; allocator fragmentation and CUDA workspace are not modelled beyond a fixed runtime term.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

from rft.config import JobSpec
from rft.errors import RftError

GiB = 1024**3
LIMIT_ENV = "RFT_MEMORY_LIMIT_GB"
RUNTIME_CPU = int(0.75 * GiB)  # python + torch + transformers + rft imported, tokenizer and data loaded (measured)
RUNTIME_CUDA = int(0.5 * GiB)  # CUDA context and cuBLAS workspace on the device
BNB_BLOCK = 256  # bitsandbytes' blockwise quantisation: one fp32 absmax per block
BNB_MIN_8BIT = 4096  # bitsandbytes keeps fp32 moments for smaller tensors
# Bytes per element of the largest tensor that one optimizer step's temporaries take. Split master + 8-bit AdamW:
# from the measured peaks of bench/memory.py on CPU (2026-12-02: 34-36 B on both SmolLM2-135M and a Qwen2.5-0.5B
# shape: the fp32 master and gradient, bitsandbytes' dequantised moments and its own buffers; one step on one
# 64M-element tensor alone measures 28 B, with the split's buffers built in place or not). Split master + AdamW:
# the fp32 master built in place (4), the fp32 gradient (4), AdamW's one buffer (4); the split afterwards reuses
# the master and one int32 buffer (rft.train.optim.SplitMaster._step_one): 12 B, measured the same on one
# 64M-element tensor (it was 20 B with out-of-place joins and splits). Bitsandbytes on fp32 weights: counted, not
# measured.
SPLIT_8BIT_STEP = 36
SPLIT_ADAMW_STEP = 12
BNB_STEP = 16


@dataclass(frozen=True)
class ModelShape:
    """What the forecast reads from a model config: sizes, and parameter counts from a meta-device model."""

    model_type: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int  # per expert for MoE (the routed MLP's width times the experts a token visits)
    n_params: int  # every parameter, tied embeddings once
    tensors: tuple[int, ...]  # element count of every parameter tensor (for the 8-bit optimizer's small-tensor rule)
    linears: tuple[tuple[str, int, int], ...] = ()  # (module leaf name, in, out) of every nn.Linear, for LoRA
    fast_engine: bool = True  # the fast decoder runs it (keeps a packed copy of the weights)


def _text_config(cfg: dict) -> dict:
    return cfg["text_config"] if isinstance(cfg.get("text_config"), dict) else cfg


def model_shape(config: dict) -> ModelShape:
    """The shape of the model `config` (a config.json dict) describes. Parameter counts come from instantiating
    it on the meta device (no memory is allocated)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rft.engine import archs

    tc = _text_config(config)
    try:
        rest = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
        cfg = AutoConfig.for_model(config["model_type"], **rest)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot build this model config on the meta device: {type(e).__name__}: {e}") from None
    tensors = tuple(p.numel() for p in model.parameters())
    linears = tuple((n.rsplit(".", 1)[-1], m.in_features, m.out_features) for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear))
    heads = int(tc["num_attention_heads"])
    E = int(tc["hidden_size"])
    experts_per_tok = int(tc.get("num_experts_per_tok") or 0)
    inter = int(tc.get("intermediate_size") or 4 * E)
    if experts_per_tok and tc.get("moe_intermediate_size"):
        inter = experts_per_tok * int(tc["moe_intermediate_size"]) + int(tc.get("shared_expert_intermediate_size") or 0)
    return ModelShape(model_type=str(tc.get("model_type", "")), vocab=int(tc["vocab_size"]), hidden=E,
                      layers=int(tc["num_hidden_layers"]), heads=heads,
                      kv_heads=int(tc.get("num_key_value_heads") or heads),
                      head_dim=int(tc.get("head_dim") or E // heads), intermediate=inter,
                      n_params=sum(tensors), tensors=tensors, linears=linears,
                      fast_engine=archs.engine_for(tc)[0] == archs.FAST)


# ------------------------------------------------------------------------------------------------ forecast
@dataclass(frozen=True)
class Forecast:
    """Bytes: `components` persist for the whole run, `phases` are the transient peaks of each part of a step;
    `peak` = sum(components) + max(phases)."""

    device: str
    components: dict[str, int]
    phases: dict[str, int]
    settings: dict[str, Any]
    limit: int | None = None  # the device's memory, when known
    limit_source: str = ""
    fixes: list[dict] = field(default_factory=list)  # settings that would make it fit, each with its forecast

    @property
    def peak(self) -> int:
        return sum(self.components.values()) + max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    @property
    def fits(self) -> bool:
        return self.limit is None or self.peak <= self.limit

    def as_dict(self) -> dict:
        return {"device": self.device, "peak_bytes": self.peak, "peak_gib": round(self.peak / GiB, 3),
                "peak_phase": self.peak_phase, "limit_bytes": self.limit, "limit_source": self.limit_source,
                "fits": self.fits, "components": dict(self.components), "phases": dict(self.phases),
                "settings": dict(self.settings), "fixes": list(self.fixes)}

    def lines(self) -> list[str]:
        lim = f" of {gib(self.limit)} ({self.limit_source})" if self.limit is not None else ""
        out = [f"memory forecast on {self.device}: peak {gib(self.peak)}{lim}, in {self.peak_phase}"]
        out.append("  persistent: " + ", ".join(f"{k} {gib(v)}" for k, v in self.components.items() if v))
        out.append("  transient (largest adds): " + ", ".join(f"{k} {gib(v)}" for k, v in self.phases.items()))
        return out


def gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def _lora_params(shape: ModelShape, rank: int, targets: list[str]) -> tuple[int, int]:
    """(adapter parameters, base parameters the adapters sit on) for LoRA on the `targets` linears."""
    hit = [(i, o) for n, i, o in shape.linears if n in targets]
    return sum(rank * (i + o) for i, o in hit), sum(i * o for i, o in hit)


def _int8_params(shape: ModelShape, targets: list[str]) -> tuple[int, int]:
    """(parameters, output rows) of the base linears LoRA wraps, which rft.lora.quantize_base stores in int8."""
    hit = [(i, o) for n, i, o in shape.linears if n in targets]
    return sum(i * o for i, o in hit), sum(o for _, o in hit)


def _adam8bit_bytes(tensors) -> int:
    out = 0
    for n in tensors:
        if n < BNB_MIN_8BIT:
            out += 8 * n
        else:  # two uint8 moments, an fp32 absmax per block each, two 256-entry fp32 code maps
            out += 2 * n + 2 * 4 * math.ceil(n / BNB_BLOCK) + 2 * 256 * 4
    return out


def _act_per_token_layer(s: ModelShape, c: int, w: int) -> int:
    """Bytes one token keeps per decoder layer for the backward (SDPA attention, SiLU-gated MLP): the residual
    stream and norm inputs in the weight dtype, matmul inputs/outputs, q/k/v, rotary outputs, attention output
    and MLP intermediates in the compute dtype."""
    qd, kd = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return w * 4 * s.hidden + c * (2 * s.hidden + 3 * qd + 4 * kd + 4 * s.intermediate) + 8  # + rms statistics


def forecast(job: JobSpec, shape: ModelShape, *, prompt_tokens: int, device: str = "cpu",
             prompts_per_step: int | None = None, group: int | None = None) -> Forecast:
    """The forecast for `job` on `device` ("cpu" or "cuda"); `prompt_tokens`: the longest rendered prompt;
    `prompts_per_step`/`group`: the resolved values (default: the job's rft.train.prompts_per_step, rft.sampling.n)."""
    t, lc, o, a = job.rft.train, job.rft.lora, job.rft.optimizer, job.rft.algorithm
    N = prompts_per_step or t.prompts_per_step
    G = group or job.rft.sampling.n
    w = 2 if t.weights_dtype == "bfloat16" else 4
    compute_bf16 = t.dtype == "bfloat16" or (t.dtype == "auto" and (t.weights_dtype == "bfloat16" or device == "cuda"
                                                                      or _cpu_bf16()))
    c = 2 if compute_bf16 else 4
    s = shape
    P, Lc = max(1, prompt_tokens), job.rft.sampling.max_new_tokens

    # persistent --------------------------------------------------------------------------------------
    comp: dict[str, int] = {"weights": s.n_params * w}
    n_int8 = 0  # base parameters stored in int8 (rft.lora.quantize_base)
    if lc.enabled and lc.quantize_base == "int8":  # 1 byte each, plus bitsandbytes' fp32 absmax per output row
        n_int8, rows_int8 = _int8_params(s, lc.targets)
        comp["weights"] = (s.n_params - n_int8) * w + n_int8 + 4 * rows_int8
    if lc.enabled:
        n_lora, _ = _lora_params(s, lc.rank, lc.targets)
        trainable = [n_lora]  # counted as one tensor: adapters are small, the 8-bit rule is moot
        comp["lora"] = n_lora * 4
        comp["gradients"] = n_lora * 4
        t_bytes, master = n_lora, 0
    else:
        trainable = list(s.tensors)
        comp["gradients"] = s.n_params * w
        t_bytes, master = s.n_params, (2 * s.n_params if w == 2 else 0)
    comp["optimizer"] = (8 * t_bytes if o.name == "adamw" else _adam8bit_bytes(trainable)) + master
    layer_linears = s.layers * (2 * s.hidden * s.heads * s.head_dim + 2 * s.hidden * s.kv_heads * s.head_dim
                                + 3 * s.hidden * s.intermediate)  # q, o, k, v, gate, up, down
    if s.fast_engine:
        if lc.enabled or c != w:
            comp["engine_weights"] = s.n_params * c
        else:  # same dtype: only the concatenated qkv and gate/up are new tensors
            comp["engine_weights"] = s.layers * (s.hidden * (s.heads + 2 * s.kv_heads) * s.head_dim
                                                 + 2 * s.hidden * s.intermediate) * c
        if device == "cpu" and c == 2:  # bf16 on CPU: the matmuls' packed layout (VNNI or oneDNN), head included
            comp["engine_weights"] += (layer_linears + s.vocab * s.hidden) * c
    else:  # the transformers decoder runs a copy of the weights in the compute dtype when it is narrower
        comp["engine_weights"] = (s.n_params + (n_lora if lc.enabled else 0)) * c if c < w else 0
    comp["reference"] = s.n_params * c if (a.beta > 0 and not lc.enabled) else 0
    overlap = bool(getattr(t, "overlap_rollouts", False))
    # overlapped rollouts (rft.train.step.ThreadRollouts): a second policy copy (LoRA included) with its own engine
    comp["rollout_copy"] = (comp["weights"] + comp.get("lora", 0) + comp["engine_weights"]) if overlap else 0
    comp["runtime"] = RUNTIME_CUDA if device == "cuda" else RUNTIME_CPU

    # phases ------------------------------------------------------------------------------------------
    kvd = s.kv_heads * s.head_dim
    per_batch = max(1, t.rollout_batch_size // G)  # unique prompts a batch; each becomes G rows
    u_roll = min(N, per_batch)
    rows = u_roll * G
    kv = s.layers * rows * 2 * kvd * (P + Lc) * c
    prefill = u_roll * P * (4 * s.hidden + 2 * s.intermediate) * c + rows * s.vocab * 4 * 2
    rollout = kv + prefill

    B = N * G
    per_mb = min(math.ceil(N / o.grad_accumulation), max(1, (t.micro_batch_size or B) // G))
    u, b = per_mb, per_mb * G  # unique prompts, sequences in one micro-batch
    act = _act_per_token_layer(s, c, w)
    if t.gradient_checkpointing:  # full sequences, no prompt sharing: layer inputs kept, one layer recomputed
        tokens = b * (P + Lc)
        layers_b = s.layers * tokens * s.hidden * w + tokens * act
    else:  # prompt pass on u prompts; completion pass keeps the prompt K/V repeated G times in every layer
        layers_b = s.layers * (u * P * act + b * Lc * act + b * P * 2 * kvd * c)
    head = b * Lc * s.vocab * (12 + c)  # logits, log-softmax, its gradient (fp32), head output
    training = layers_b + head
    if c != w:  # autocast keeps a compute-dtype copy of every weight it casts until the backward has used it
        training += (s.n_params - n_int8) * c  # (not of int8 ones: dequantised per matmul, not a leaf it caches)
    if n_int8:  # each int8 matmul dequantises its weight into a transient (forward and backward), one at a time
        training += max(i * o for n, i, o in s.linears if n in lc.targets) * 4
    if not lc.enabled:  # the embedding's dense gradient and the head's, summed (tied) and cast: transient
        training += s.vocab * s.hidden * (4 + c)
    if a.beta > 0:  # the reference's forward runs (no grad) before the policy's: its logits stage can peak alone
        training = max(training, b * Lc * s.vocab * (8 + c))

    if w == 2 and not lc.enabled:  # the split master steps one tensor at a time (rft.train.optim.SplitMaster)
        optimizer = (SPLIT_8BIT_STEP if o.name == "adamw_8bit" else SPLIT_ADAMW_STEP) * max(s.tensors)
    elif o.name == "adamw":
        optimizer = 4 * sum(trainable)  # foreach AdamW: one fp32 temporary over all parameters
    else:
        optimizer = BNB_STEP * max(trainable)  # bitsandbytes steps one tensor at a time
    if overlap:  # the next step's rollout runs while this one trains
        training += rollout
    phases = {"rollout": rollout, "training": training, "optimizer": optimizer}
    if n_int8:  # converting: the full-precision base linears are read (resident) next to their int8 copies
        phases["load"] = n_int8 * w
    settings = {"weights_dtype": t.weights_dtype, "compute_dtype": "bfloat16" if c == 2 else "float32",
                "optimizer": o.name, "lora": lc.enabled, "int8_base": bool(n_int8), "gradient_checkpointing": t.gradient_checkpointing,
                "micro_batch_sequences": b, "rollout_rows": rows, "prompt_tokens": P, "completion_tokens": Lc,
                "prompts_per_step": N, "group": G, "reference": comp["reference"] > 0 or (a.beta > 0 and lc.enabled)}
    return Forecast(device=device, components=comp, phases=phases, settings=settings)


def _cpu_bf16() -> bool:
    from rft.engine.local import best_cpu_dtype

    import torch

    return best_cpu_dtype() == torch.bfloat16


# ------------------------------------------------------------------------------------ the device's memory
def device_limit(device: str) -> tuple[int | None, str]:
    """(bytes, where the number came from) for the device: RFT_MEMORY_LIMIT_GB, CUDA free memory, or
    MemAvailable. (None, reason) when it cannot be read."""
    env = os.environ.get(LIMIT_ENV)
    if env:
        try:
            v = float(env)
        except ValueError:
            raise RftError(f"{LIMIT_ENV}={env!r} is not a number of GiB") from None
        if not (v > 0 and math.isfinite(v)):
            raise RftError(f"{LIMIT_ENV}={env!r} must be a positive number of GiB")
        return int(v * GiB), LIMIT_ENV
    if device == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int(free), "CUDA free memory"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable"
    except OSError:
        pass
    return None, "unknown"


# ----------------------------------------------------------------------------------- fixes and the check
def _variants(job: JobSpec, group: int) -> list[tuple[str, dict]]:
    """(what to set, overrides) for each setting that lowers memory and is not already on."""
    t, out = job.rft.train, []
    if not t.gradient_checkpointing:
        out.append(("rft.train.gradient_checkpointing: true", {"train": {"gradient_checkpointing": True}}))
    if not job.rft.lora.enabled:
        out.append(("rft.lora.enabled: true", {"lora": {"enabled": True}}))
    if job.rft.lora.quantize_base != "int8":
        label = "rft.lora.quantize_base: int8" if job.rft.lora.enabled else \
            "rft.lora.enabled: true + rft.lora.quantize_base: int8"
        out.append((label, {"lora": {"enabled": True, "quantize_base": "int8"}}))
    if t.weights_dtype != "bfloat16":
        out.append(("rft.train.weights_dtype: bfloat16", {"train": {"weights_dtype": "bfloat16"}}))
    if job.rft.optimizer.name != "adamw_8bit":
        out.append(("rft.optimizer.name: adamw_8bit", {"optimizer": {"name": "adamw_8bit"}}))
    if (t.micro_batch_size or 1 << 30) > group:
        out.append((f"rft.train.micro_batch_size: {group}", {"train": {"micro_batch_size": group}}))
    if t.rollout_batch_size > group:
        out.append((f"rft.train.rollout_batch_size: {group}", {"train": {"rollout_batch_size": group}}))
    return out


def with_settings(job: JobSpec, overrides: dict) -> JobSpec:
    rft = job.rft
    for section, values in overrides.items():
        rft = replace_model(rft, **{section: replace_model(getattr(rft, section), **values)})
    return replace_model(job, rft=rft)


def replace_model(m, **kw):
    return m.model_copy(update=kw)


def fixes(job: JobSpec, shape: ModelShape, fc: Forecast, **kw) -> list[dict]:
    """Each memory setting not yet on that lowers the peak, alone, with its forecast; then all of them together
    when none alone fits. Sorted by peak."""
    out = []
    variants = _variants(job, fc.settings["group"])
    for label, ov in variants:
        f = forecast(with_settings(job, ov), shape, **kw)
        if f.peak < fc.peak:
            out.append({"set": label, "peak_bytes": f.peak, "saves_bytes": fc.peak - f.peak,
                        "fits": fc.limit is None or f.peak <= fc.limit})
    if variants and not any(x["fits"] for x in out):
        merged: dict = {}
        for _, ov in variants:
            for sec, vals in ov.items():
                merged.setdefault(sec, {}).update(vals)
        f = forecast(with_settings(job, merged), shape, **kw)
        out.append({"set": "all of the above", "peak_bytes": f.peak, "saves_bytes": fc.peak - f.peak,
                    "fits": fc.limit is None or f.peak <= fc.limit})
    return sorted(out, key=lambda x: x["peak_bytes"])


def longest_prompt_tokens(model_path, rows: list[dict], k: int = 8) -> int:
    """Tokens of the longest rendered prompt among the `k` rows with the longest messages (by characters): the
    tokenizer only, no weights."""
    import json

    from transformers import AutoTokenizer

    from rft.engine.local import render_prompt

    rows = [r if "messages" in r else {**r, "messages": (r.get("input") or {}).get("messages", [])} for r in rows]  # DPO rows
    cand = sorted(rows, key=lambda r: len(json.dumps(r.get("messages"), ensure_ascii=False)), reverse=True)[:k]
    tok = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    return max((len(render_prompt(tok, r["messages"], r.get("tools"))) for r in cand), default=1)


def job_forecast(job: JobSpec, inputs, *, device: str) -> Forecast:
    """The forecast for a job whose inputs are loaded (`rft.train.setup.load_inputs`) on `device` ("cpu" or
    "cuda": `rft.train.setup.device_for(job)`), with the device's limit and, when it does not fit, the settings
    that would."""
    from rft.userinput import load_json_file

    dev = device
    cfg = load_json_file(inputs.model_ref.path / "config.json", "model config", max_bytes=16 * 1024 * 1024)
    shape = model_shape(cfg)
    rows = list(inputs.train_ds.rows) + (list(inputs.val_ds.rows) if inputs.val_ds is not None else [])
    P = longest_prompt_tokens(inputs.model_ref.path, rows)
    kw = dict(prompt_tokens=P, device=dev, prompts_per_step=inputs.values.prompts_per_step,
              group=inputs.values.completions_per_prompt)
    fc = forecast(job, shape, **kw)
    limit, source = device_limit(dev)
    fc = replace(fc, limit=limit, limit_source=source)
    if not fc.fits:
        fc = replace(fc, fixes=fixes(job, shape, fc, **kw))
    return fc


def refusal(fc: Forecast) -> RftError:
    """The error for a forecast that does not fit: one line, the numbers, the settings that would fit."""
    lines = fc.lines()[1:]
    fit = [x for x in fc.fixes if x["fits"]]
    if fit:
        lines.append("settings that would fit (forecast peak each):")
    else:
        lines.append("no single memory setting fits; the closest (forecast peak each):")
    for x in (fit or fc.fixes[:3]):
        lines.append(f"  set {x['set']} ({gib(x['peak_bytes'])}, -{gib(x['saves_bytes'])})")
    return RftError(f"this job will not fit in memory: forecast peak {gib(fc.peak)} > {gib(fc.limit or 0)} "
                    f"available on {fc.device} ({fc.limit_source})\n" + "\n".join(lines),
                    hint="rft.train.memory_check=false runs it anyway (the forecast may be pessimistic)")


def check(job: JobSpec, inputs, *, device: str, log=None) -> Forecast | None:
    """The memory check before any weights are loaded: the forecast, raised as an RftError (see `refusal`)
    when it does not fit and rft.train.memory_check is on; logged as a warning when it is off. A model the
    forecast cannot read (an architecture transformers cannot build on the meta device) is not refused: None,
    with a warning."""
    try:
        fc = job_forecast(job, inputs, device=device)
    except RftError:
        raise
    except Exception as e:  # noqa: BLE001 - a forecast is advice; its failure must not stop a job
        if log is not None:
            log(f"warning: no memory forecast for this model ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        return None
    if not fc.fits:
        if job.rft.train.memory_check:
            raise refusal(fc)
        if log is not None:
            log(f"warning: {str(refusal(fc)).splitlines()[0]} (rft.train.memory_check is off)")
    return fc
