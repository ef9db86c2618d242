"""The one engine loader: a model reference (or an already-resolved one) -> a ready `LocalEngine`.

Every place that needs an engine for a model reference (the library API, eval, batch, the HTTP server's worker,
model-graded graders, benchmarks) calls `rft.engine.load_engine`, so the recipe lives here once: resolve the
reference (`rft.models.resolve`: embedded names, directories, hub ids from the local hub cache, `ckpt:`/`alias:`/
`ft:`), load the fp32 master weights (`rft.models.load`), and generate in the fastest exact dtype for the CPU
(`best_cpu_dtype`). Which decoder the engine runs (the fast decoder or the transformers forward) is decided by
`rft.engine.archs.engine_for` from the model's config and logged in one line on the `rft.engine` logger.
Simplified: one device; the training loop, which owns its model (LoRA wrapping, resumed weights), builds its
`LocalEngine` from that model directly.

Run: `python -c "from rft.engine import load_engine; print(load_engine('smollm2-135m-instruct').backend)"`
"""

from __future__ import annotations

import torch

from rft import models
from rft.engine.local import LocalEngine, best_cpu_dtype


def load_engine(model: str | models.ResolvedModel, *, dtype: torch.dtype | None = None, device: str = "cpu",
                compute_dtype: torch.dtype | None = None, max_batch_size: int = 64) -> LocalEngine:
    """A `LocalEngine` for `model`: a reference string (resolved and verified here) or a `ResolvedModel` (used as
    is, so a caller that resolved once, e.g. the server pinning an alias, loads exactly what it resolved).

    dtype: the dtype the weights are loaded in (default float32: the master weights).
    compute_dtype: the dtype generation runs in (default: bf16 on CPUs with native bf16 matrix units, else fp32,
    see `best_cpu_dtype`; on other devices the load dtype). Raises RftError for a reference a user can fix."""
    resolved = model if isinstance(model, models.ResolvedModel) else models.resolve(model)
    weights_dtype = dtype or torch.float32
    net, tok = models.load(resolved, dtype=weights_dtype, device=device)
    if compute_dtype is None:
        compute_dtype = best_cpu_dtype() if torch.device(device).type == "cpu" else weights_dtype
    return LocalEngine(net, tok, compute_dtype=compute_dtype, max_batch_size=max_batch_size)
