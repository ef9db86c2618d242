"""Optional vLLM rollout engine: rft's `InferenceEngine` on vLLM's offline `LLM`, colocated with the trainer.

    pip install 'rft[vllm]'            # on a machine with a CUDA GPU
    rft.engine.backend: vllm           # in the job spec (rft.config.EngineConfig)

What it does:
- `generate(prompts, params)` renders chat prompts with the model's chat template (as the local engine does),
  passes the token ids to `LLM.generate` with one `vllm.SamplingParams` per call (`to_vllm_params`), and turns
  each `RequestOutput` into rft `Completion`s (`to_completions`);
- `sync_weights()` (called by the training step after every optimizer step) loads the trainer's current weights
  into vLLM's model in place: `load_weights` with (name, tensor) pairs taken from the trainer's parameters on the
  same GPU, cast to the engine's dtype there (device to device, never through the CPU), LoRA adapters merged, peft
  names mapped back to the checkpoint's (`hf_weight_name`); then vLLM's prefix cache is reset (its cached K/V were
  computed with the old weights);
- vLLM runs in the trainer's process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), taking `gpu_memory_utilization` of the
  GPU for its weights and KV cache.

Log-probabilities: vLLM's sampling log-probs are NOT used for the loss. They come from vLLM's own kernels (and,
depending on the version, before temperature scaling), so they differ from what the trainer computes. The
trainer recomputes the policy's log-probs with its own forward pass: with `num_iterations == 1` (the default) the
update's forward pass is the old policy already, so the importance ratio is exactly 1 at the first pass; with more
iterations the training step must recompute the old log-probs before the update (`exact_logprobs = False` says
so). `Completion.logprobs` holds vLLM's values, for information.

Simplified, and stated plainly: this adapter has NOT run against real vLLM yet (vllm is not installable where it
was written, and no GPU was lent). Its pure logic (request building, output conversion, weight-name mapping, the
weight-sync call sequence) is tested with a fake `vllm` module (tests/test_vllm_engine.py). No constrained
decoding (response_format) or tools on this engine; no predicted outputs or streaming; one GPU.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator, Sequence

import torch

from rft.engine.fast_llama import _unwrap, effective_weight
from rft.engine.local import render_prompt
from rft.engine.protocol import GenerationStats, SamplingParams
from rft.engine.sampling import eos_ids
from rft.errors import RftError
from rft.types import Completion

INSTALL_HINT = "pip install 'rft[vllm]' on a machine with a CUDA GPU, or set rft.engine.backend=local"


def import_vllm():
    """The vllm module, or an RftError a user can act on."""
    try:
        import vllm  # type: ignore[import-not-found]
    except ImportError as e:
        raise RftError(f"rft.engine.backend is vllm but vllm is not installed ({e})",
                       hint=INSTALL_HINT) from None
    return vllm


# -- pure pieces (tested with a fake vllm module) -------------------------------------------------------------
def to_vllm_params(vllm, params: SamplingParams, *, want_logprobs: bool = True):
    """rft SamplingParams -> vllm.SamplingParams. top_k 0 (off) is -1 in vLLM; logprobs=0 asks for the sampled
    token's log-prob only."""
    if params.constraint is not None:
        raise RftError("constrained decoding (response_format) is not supported on the vllm engine",
                       hint="use rft.engine.backend=local for this job")
    return vllm.SamplingParams(
        n=max(1, params.n), temperature=max(0.0, params.temperature), top_p=params.top_p,
        top_k=params.top_k if params.top_k > 0 else -1, max_tokens=params.max_new_tokens,
        stop=list(params.stop) or None, seed=params.seed, logprobs=0 if want_logprobs else None,
        skip_special_tokens=True)


def to_completions(output, prompt_len: int) -> list[Completion]:
    """One vLLM `RequestOutput` -> its rft Completions, in sample order. finish_reason: vLLM's "stop" (EOS or a
    stop string) and "length" map to themselves; anything else (e.g. "abort") becomes "length"."""
    outs = []
    for o in sorted(output.outputs, key=lambda c: c.index):
        toks = tuple(int(t) for t in o.token_ids)
        lps: tuple[float, ...] = ()
        if o.logprobs is not None:
            lps = tuple(float(step[t].logprob) for step, t in zip(o.logprobs, toks))
        finish = o.finish_reason if o.finish_reason in ("stop", "length") else "length"
        outs.append(Completion(text=o.text, token_ids=toks, logprobs=lps, finish_reason=finish,
                               prompt_tokens=prompt_len))
    return outs


def hf_weight_name(name: str) -> str | None:
    """A trainer parameter's name -> the checkpoint name vLLM's `load_weights` expects, or None to skip it.

    transformers models already use checkpoint names (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`).
    peft wraps them: `base_model.model.` in front, `.base_layer` inside LoRA-wrapped linears, and the adapters'
    own `lora_A`/`lora_B`/`lora_embedding_*` and `lora_dropout` entries, which are skipped (they are merged into the
    base weight by `weight_items`)."""
    if ".lora_" in name or name.startswith("lora_"):
        return None
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    return name.replace(".base_layer.", ".")


def weight_items(model, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, tensor) for every weight of the trainer's model, LoRA merged, cast to `dtype` on the
    model's device (`.to` on the same device: no CPU copy). A tied output head is not sent twice."""
    base = _unwrap(model)
    merged = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "base_layer") and hasattr(mod, "get_delta_weight"):
            hf = hf_weight_name(f"{name}.base_layer.weight")
            if hf is not None:
                merged[hf] = mod
    tied = bool(getattr(base.config, "tie_word_embeddings", False))
    for name, p in model.named_parameters():
        hf = hf_weight_name(name)
        if hf is None or (tied and hf == "lm_head.weight"):
            continue
        t = effective_weight(merged[hf]) if hf in merged else p
        yield hf, t.detach().to(dtype)


def vllm_model(llm) -> Any:
    """The torch module inside an in-process vLLM `LLM` (V1 with multiprocessing off, or V0); the same path TRL's
    colocate mode uses, with V1's engine-core route as a fallback."""
    eng = llm.llm_engine
    ex = getattr(eng, "model_executor", None) or eng.engine_core.engine_core.model_executor
    worker = ex.driver_worker
    worker = getattr(worker, "worker", worker)  # V1 wraps the worker once more
    return worker.model_runner.model


# -- the engine ----------------------------------------------------------------------------------------------
class VLLMEngine:
    """vLLM-backed rollouts for a trainer-owned model (see the module docstring). `model_path` is the directory
    vLLM loads the architecture and tokenizer from (the job's model); the weights are replaced by the trainer's at
    construction and after every optimizer step."""

    backend = "vllm"
    exact_logprobs = False  # Completion.logprobs are vLLM's: the trainer recomputes them (module docstring)

    def __init__(self, model, tokenizer, *, model_path: str, compute_dtype: torch.dtype = torch.bfloat16,
                 gpu_memory_utilization: float = 0.3, max_model_len: int | None = None, seed: int = 0,
                 vllm_module=None):
        vllm = vllm_module if vllm_module is not None else import_vllm()
        self.vllm = vllm
        self.model = model
        self.tokenizer = tokenizer
        self.compute_dtype = compute_dtype
        self.eos = eos_ids(tokenizer, model)
        self.device = next(model.parameters()).device
        self.last_stats = GenerationStats()
        self.attn_implementation = "vllm"
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in process: load_weights needs the module
        kwargs = dict(model=str(model_path), tokenizer=str(model_path), dtype=str(compute_dtype).removeprefix("torch."),
                      gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True, seed=seed)
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kwargs)
        self.sync_weights()

    def sync_weights(self) -> None:
        """Load the trainer's current weights into vLLM in place, then drop its now-stale prefix cache."""
        with torch.no_grad():
            vllm_model(self.llm).load_weights(weight_items(self.model, self.compute_dtype))
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()

    def generate(self, prompts: Sequence[list[dict]], params: SamplingParams, *,
                 tools: Sequence[list | None] | None = None) -> list[list[Completion]]:
        if tools is not None and any(tools):
            raise RftError("tools are not supported on the vllm engine", hint="use rft.engine.backend=local")
        return self.generate_ids([render_prompt(self.tokenizer, m) for m in prompts], params)

    def generate_ids(self, prompt_ids: Sequence[list[int]], params: SamplingParams) -> list[list[Completion]]:
        t0 = time.perf_counter()
        sp = to_vllm_params(self.vllm, params)
        requests: list[Any] = [{"prompt_token_ids": list(p)} for p in prompt_ids]
        outputs = self.llm.generate(requests, sp, use_tqdm=False)
        results = [to_completions(o, len(p)) for o, p in zip(outputs, prompt_ids)]
        self.last_stats = GenerationStats(
            prompt_tokens=sum(len(p) for p in prompt_ids) * max(1, params.n),
            completion_tokens=sum(len(c.token_ids) for g in results for c in g),
            seconds=time.perf_counter() - t0)
        return results
