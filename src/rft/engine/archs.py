"""Which decoder an architecture gets, and why: the one place that decides fast decoder vs transformers path.

    engine_for(config) -> ("fast" | "transformers", reason)     config: a transformers config or config.json dict
    layer_windows(config) -> [window or None per layer]            the sliding-window size each layer attends with
    describe(config) -> "fast: qwen3 (q/k norms ...)"              the one line the local engine logs

The fast decoder (`engine/fast_llama.py`) covers the pre-norm, RMSNorm, SwiGLU, rotary family:
- llama (Llama 2/3, SmolLM), qwen2 (Qwen2/2.5: q/k/v biases), qwen3 (q/k RMSNorm per head, before rotary),
  mistral (sliding-window attention; windowed in PyTorch ops once a sequence exceeds the window),
  phi3 (fused qkv and gate_up weights, which are already in the packed layout).
Everything else runs on the transformers forward (`engine/decoder.HFDecoder`), with the reason named:
- gemma2 / gemma3_text: four norms per layer with (1 + w) weights, GELU, embedding scale, attention and final logit
  soft-capping, and (Gemma 3) a second rotary table for local layers: each is small, together they are a second
  decoder; not worth it at this project's size;
- mixture-of-experts families (qwen2_moe, qwen3_moe, olmoe, mixtral): routed experts are a different MLP;
- and the variants of covered families the fast decoder does not pack: o_proj or MLP biases, partial rotary
  (Phi-4-mini), non-SiLU activations.
Simplified: the decision reads the config only (not the weights); a LoRA wrapper is irrelevant to it.
Run: `python -c "from transformers import Qwen3Config as C; from rft.engine.archs import engine_for; print(engine_for(C()))"`.
"""

from __future__ import annotations

from typing import Any

FAST = "fast"
TRANSFORMERS = "transformers"

# model_type -> what the fast decoder does specially for it
FAST_TYPES = {
    "llama": "Llama family",
    "qwen2": "q/k/v biases",
    "qwen3": "q/k norms per head",
    "mistral": "sliding window",
    "phi3": "fused qkv / gate_up weights used as packed",
}
SLOW_REASONS = {
    "gemma": "Gemma: (1 + w) norms, GELU and embedding scale are not in the fast decoder",
    "gemma2": "Gemma 2: four norms per layer, GELU, attention and logit soft-capping are not in the fast decoder",
    "gemma3_text": "Gemma 3: four norms per layer, GELU, q/k norms, local/global rotary tables are not in the fast decoder",
    "gemma3": "Gemma 3 (multimodal): not in the fast decoder",
    "qwen2_moe": "mixture of experts (routed MLP) is not in the fast decoder",
    "qwen3_moe": "mixture of experts (routed MLP) is not in the fast decoder",
    "olmoe": "mixture of experts (routed MLP) is not in the fast decoder",
    "mixtral": "mixture of experts (routed MLP) is not in the fast decoder",
}


def _get(cfg: Any, key: str, default=None):
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _rope_params(cfg: Any) -> dict:
    rp = _get(cfg, "rope_parameters") or _get(cfg, "rope_scaling") or {}
    return rp if isinstance(rp, dict) else {}


def layer_windows(cfg: Any) -> list[int | None]:
    """Per layer: the sliding-window size (a query sees the keys less than that many positions back) or None
    (full attention). transformers' rule: `layer_types` where the config has them, else every layer of a
    config with `sliding_window` set (Mistral, Phi-3); `use_sliding_window: false` (Qwen2/3) turns it off."""
    n = int(_get(cfg, "num_hidden_layers", 0) or 0)
    sw = _get(cfg, "sliding_window")
    if not sw or _get(cfg, "use_sliding_window") is False:
        return [None] * n
    lt = _get(cfg, "layer_types")
    if lt:
        return [int(sw) if t == "sliding_attention" else None for t in lt]
    return [int(sw)] * n


def engine_for(cfg: Any) -> tuple[str, str]:
    """(engine, reason) for a model config: "fast" (engine/fast_llama.py) or "transformers" (engine/decoder.py);
    the reason starts with the model_type: `("transformers", "olmoe: mixture of experts ...")`."""
    mt = _get(cfg, "model_type")
    if mt not in FAST_TYPES:
        return TRANSFORMERS, f"{mt}: " + SLOW_REASONS.get(mt, "not a Llama-family architecture the fast decoder covers")
    act = _get(cfg, "hidden_act", "silu")
    if act != "silu":
        return TRANSFORMERS, f"{mt}: activation {act} (the fast decoder runs SiLU-gated MLPs)"
    if _get(cfg, "mlp_bias"):
        return TRANSFORMERS, f"{mt}: MLP biases are not in the fast decoder"
    if mt != "qwen2" and _get(cfg, "attention_bias"):
        return TRANSFORMERS, f"{mt}: attention output biases are not in the fast decoder"
    prf = _rope_params(cfg).get("partial_rotary_factor", _get(cfg, "partial_rotary_factor", 1.0))
    if prf is not None and float(prf) < 1.0:
        return TRANSFORMERS, f"{mt}: partial rotary ({prf}) is not in the fast decoder"
    why = FAST_TYPES[mt]
    windows = {w for w in layer_windows(cfg) if w}
    if windows:
        why = f"sliding window {min(windows)}: exact (PyTorch ops) once a sequence exceeds it"
    elif mt == "mistral":
        why = "no sliding window"
    return FAST, f"{mt}: {why}"


def describe(cfg: Any) -> str:
    """The one log line: `engine fast (qwen3: q/k norms per head)`."""
    name, reason = engine_for(cfg)
    return f"engine {name} ({reason})"


def engine_for_dir(path) -> tuple[str, str]:
    """engine_for of a model directory's config.json; ("?", why) when it cannot be read."""
    from pathlib import Path

    from rft.errors import RftError
    from rft.userinput import load_json_file

    cfg_path = Path(path) / "config.json"
    if not cfg_path.exists():
        return "?", "no config.json yet"
    try:
        cfg = load_json_file(cfg_path, "model config", max_bytes=16 * 1024 * 1024)
    except RftError as e:
        return "?", e.message
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    return engine_for(cfg)


def with_engines(rows: list[dict]) -> list[dict]:
    """`rft.models.list_local()` rows with "engine" and "reason" added (the embedded model before its first
    preparation: the Llama family it is)."""
    out = []
    for r in rows:
        if r.get("kind") == "embedded" and r.get("status") != "ready":
            name, reason = engine_for({"model_type": "llama"})
        else:
            name, reason = engine_for_dir(r["path"])
        out.append({**r, "engine": name, "reason": reason})
    return out


# ------------------------------------------------------------------------------------ random models of each family
# model_type -> transformers config class name, for `random_config` (tests and bench/architectures.py build
# randomly initialised models of every family from these; nothing is downloaded).
FAMILIES = {
    "llama": "LlamaConfig",
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
    "mistral": "MistralConfig",
    "phi3": "Phi3Config",
    "gemma2": "Gemma2Config",
    "gemma3_text": "Gemma3TextConfig",
    "qwen2_moe": "Qwen2MoeConfig",
}


def random_config(model_type: str, *, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4,
                  kv_heads: int = 2, intermediate: int = 128, window: int | None = None, **token_ids):
    """A small transformers config of a family with its distinguishing features switched on: qwen2 q/k/v
    biases (always), qwen3 q/k norms (always), mistral / gemma sliding windows (`window`), phi3 fused
    projections, gemma2 soft-capping, qwen2_moe 4 experts (top 2) plus a shared expert. `token_ids`:
    bos_token_id / eos_token_id / pad_token_id."""
    import transformers

    head_dim = hidden // heads
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=512, tie_word_embeddings=model_type != "phi3", **token_ids)
    extra: dict = {}
    if model_type in ("qwen3", "gemma2", "gemma3_text"):
        extra["head_dim"] = head_dim
    if model_type == "mistral":
        extra["sliding_window"] = window
    if model_type in ("gemma2", "gemma3_text"):
        extra.update(sliding_window=window or 4096, query_pre_attn_scalar=head_dim)
    if model_type == "gemma2":
        extra.update(attn_logit_softcapping=50.0, final_logit_softcapping=1.0)
    if model_type == "phi3":
        extra.update(sliding_window=window, original_max_position_embeddings=512)
    if model_type == "qwen2_moe":
        extra.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=intermediate // 2,
                     shared_expert_intermediate_size=intermediate, decoder_sparse_step=1, mlp_only_layers=[])
    cfg = getattr(transformers, FAMILIES[model_type])(**common, **extra)
    return cfg
