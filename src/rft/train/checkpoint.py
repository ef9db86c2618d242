"""Checkpoints: a model directory (safetensors weights, config, tokenizer) usable as a model reference,
plus `rft_checkpoint.json` (job, step, eval) and `manifest.json` (sha256 and size of every file), written
last: a checkpoint without a matching manifest is incomplete and is never loaded. A save that fails part-way
(a full disk) removes its `.partial` folder and leaves every earlier checkpoint as it was.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path

import torch

from rft.fsutil import fsync_dir, fsync_file, save_error, write_atomic
from rft.hashing import file_entries
from rft.models import quant


def save_model_checkpoint(model, tokenizer, out: Path, meta: dict, *, dtype: str = "float32") -> dict:
    """Write the (LoRA-merged) model to `out` atomically; return the manifest.

    Everything goes to `out.partial/` first. If any write fails (a full disk: catalogue C6), the partial folder
    is removed and an RftError names the path and the free space; `out` and every other checkpoint are untouched.
    Only a complete folder (manifest written and fsynced) is renamed into place; a re-saved `out` is moved
    aside before the rename and removed after it, so a complete copy exists at every moment."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        _write_checkpoint(model, tokenizer, tmp, meta, dtype)
        manifest = {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": file_entries(tmp, [p.relative_to(tmp) for p in sorted(p for p in tmp.rglob("*") if p.is_file())]),
        }
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_file(f)
        write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        err = save_error(e, out, f"the model checkpoint {out.name}")
        if err is not None:
            raise err from None
        raise
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _write_checkpoint(model, tokenizer, tmp: Path, meta: dict, dtype: str) -> None:
    to_save = model
    if hasattr(model, "peft_config"):
        model.save_pretrained(tmp / "adapter", safe_serialization=True)
        to_save = copy.deepcopy(model)
        quant.dequantize_lora_base(to_save)  # int8 base layers back to dense first: the merge is W~ + B A
        to_save = to_save.merge_and_unload()
    target_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    if next(to_save.parameters()).dtype != target_dtype:
        to_save = copy.deepcopy(to_save).to(target_dtype)
    to_save.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "rft_checkpoint.json").write_text(json.dumps(meta, indent=2, default=str))

