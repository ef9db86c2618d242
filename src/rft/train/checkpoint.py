"""Checkpoints: a model directory (safetensors weights, config, tokenizer) usable as a model reference,
plus `rft_checkpoint.json` (job, step, eval) and `manifest.json` (sha256 and size of every file), written
last: a checkpoint without a matching manifest is incomplete and is never loaded.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path

import torch

from rft.hashing import file_entries, verified_manifest


def save_model_checkpoint(model, tokenizer, out: Path, meta: dict, *, dtype: str = "float32") -> dict:
    """Write the (LoRA-merged) model to `out` atomically; return the manifest."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    to_save = model
    if hasattr(model, "peft_config"):
        model.save_pretrained(tmp / "adapter", safe_serialization=True)
        to_save = copy.deepcopy(model).merge_and_unload()
    target_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    if next(to_save.parameters()).dtype != target_dtype:
        to_save = copy.deepcopy(to_save).to(target_dtype)
    to_save.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "rft_checkpoint.json").write_text(json.dumps(meta, indent=2, default=str))
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": file_entries(tmp, [p.relative_to(tmp) for p in files]),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return manifest


def verify_checkpoint(path: Path) -> dict:
    """Check every file against manifest.json; raise RftError on any mismatch."""
    return verified_manifest(path, f"checkpoint {path}", missing="it is incomplete and will not be loaded")
