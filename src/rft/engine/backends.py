"""The training loop's rollout engine, chosen by `rft.engine` (config.EngineConfig): one function, so setup and
preflight pick the same engine.

    check(cfg, device)                 raise RftError early (before any model loads) when the choice cannot run
    training_engine(cfg, model, tok, compute_dtype=..., model_path=..., seed=...)   the engine for a loaded policy

local: `LocalEngine` (on CUDA its static-cache decoder with CUDA graphs unless `cuda_graphs: false`; on CPU the
fast decoder, unchanged). vllm: `VLLMEngine` (engine/vllm_engine.py), CUDA only, needs `pip install 'rft[vllm]'`.
"""

from __future__ import annotations

import torch

from rft.config import EngineConfig
from rft.engine.local import LocalEngine
from rft.engine.vllm_engine import INSTALL_HINT, VLLMEngine, import_vllm
from rft.errors import RftError


def check(cfg: EngineConfig, device: str) -> None:
    """The engine choice can run on `device` ("cpu"/"cuda"): vllm needs CUDA and the vllm package."""
    if cfg.backend != "vllm":
        return
    if torch.device(device).type != "cuda":
        raise RftError(f"rft.engine.backend is vllm, which needs a CUDA GPU, but this job runs on {device}",
                       hint=INSTALL_HINT)
    import_vllm()


def training_engine(cfg: EngineConfig, model, tokenizer, *, compute_dtype: torch.dtype, model_path,
                    seed: int = 0, max_batch_size: int = 64, vllm_module=None):
    """The engine that samples a training run's rollouts from `model` (the trainer's policy, already restored)."""
    if cfg.backend == "vllm":
        return VLLMEngine(model, tokenizer, model_path=str(model_path), compute_dtype=compute_dtype,
                          gpu_memory_utilization=cfg.gpu_memory_utilization, seed=seed, vllm_module=vllm_module)
    return LocalEngine(model, tokenizer, compute_dtype=compute_dtype, cuda_graphs=cfg.cuda_graphs,
                       max_batch_size=max_batch_size)
