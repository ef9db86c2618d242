"""Export a checkpoint as a plain transformers model directory: `rft checkpoints export CKPT DIR`.

What: `export_checkpoint(ref, out_dir)` takes a checkpoint (`ckpt:<id>`, a bare `ckpt-...` id, `alias:<name>`,
or a checkpoint or model directory), re-hashes its files against its manifest (and the registry's record of the
manifest), and writes to `out_dir`:
  - the weights as safetensors exactly as the checkpoint holds them: an rft checkpoint already stores LoRA
    training merged into the base weights (`rft.train.checkpoint`), so the exported model needs no peft; the
    `adapter/` folder and rft's own `manifest.json` / `rft_checkpoint.json` are left out;
  - `config.json`, `generation_config.json` (made from config.json's token ids when the checkpoint has none),
    and the tokenizer files (with the chat template);
  - `README.md`, a model card: where it came from (job, step, base model, datasets, grader, config and code
    version, with every hash: `rft.registry.lineage`), the evaluation numbers (validation accuracy with its
    95% CI, every recorded evaluation), the gate verdict and approvals, and how to load it;
  - `rft_lineage.json`, the same lineage as JSON (absent for a directory the registry does not know).
`transformers.AutoModelForCausalLM.from_pretrained(out_dir)` loads the result as is and computes the same
logits as rft does on the checkpoint (tests/test_export.py checks both a LoRA and a full checkpoint).
Output folder: refused when it holds files unless `force`; with `force`, files of the same names are replaced
and weight files already there (`*.safetensors`, the weights index) are removed first, so two exports' weights
never mix; nothing else there is deleted. Files are written to a temporary folder beside it and moved in last.
Simplified: the weights are copied, not converted (a checkpoint saved in bf16 exports in bf16); vLLM is not
installed where rft is tested, so only the transformers load is checked (vLLM reads the same directory layout).
How to run: `rft checkpoints export ckpt:ckpt-... exported/`, or `rft.export("alias:production", "exported/")`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rft import models
from rft.errors import RftError
from rft.fsutil import fsync_dir
from rft.hashing import sha256_file
from rft.userinput import check_output_dir, load_json_file

# rft's own files in a checkpoint: they describe the checkpoint, not the model
RFT_FILES = {"manifest.json", "rft_checkpoint.json", "rft_model.json"}
WEIGHT_GLOBS = ("*.safetensors", "model.safetensors.index.json")


def _normalise(ref: str) -> str:
    ref = str(ref)
    return f"ckpt:{ref}" if ref.startswith("ckpt-") and not Path(ref).exists() else ref


def _lineage(ref: str, resolved: models.ResolvedModel) -> dict | None:
    """The registry's lineage for a registered checkpoint (already verified by `resolve`), else None."""
    if resolved.kind != "checkpoint" or not ref.startswith(("ckpt:", "alias:", models.FT_PREFIX)):
        return None
    from rft.registry.lineage import lineage

    if ref.startswith(models.FT_PREFIX):
        ref = models.fine_tuned_checkpoint(ref)
    return lineage(ref, verify=False)


def _model_files(src: Path) -> list[Path]:
    """The files of the model directory that the export carries (top level only; no pickle, no rft files)."""
    out = []
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name in RFT_FILES or f.name.endswith(models.PICKLE_SUFFIXES):
            continue
        out.append(f)
    return out


def _generation_config(config: dict) -> dict:
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
    gen["_from_model_config"] = True
    return gen


def _fmt(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def _ci(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f"[{ci[0]:.4f}, {ci[1]:.4f}]"
    return "-"


def model_card(name: str, lin: dict | None, meta: dict | None, source: str) -> str:
    """The README.md of an export: YAML front matter for hubs, then lineage, evaluations and how to load it."""
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags:", "- rft", "- reinforcement-fine-tuning", "---", "", f"# {name}", ""]
    if lin is None:
        lines += [f"Exported by rft from `{source}`. The registry holds no record of this directory, so its "
                  "lineage is not known; the checkpoint's own notes follow where it has them.", ""]
        if meta:
            lines += ["```json", json.dumps(meta, indent=2, default=str), "```", ""]
    else:
        ck, job = lin["checkpoint"], lin["job"]
        lines += [f"Fine-tuned with [rft](https://pypi.org/project/rft/) (reinforcement fine-tuning): checkpoint "
                  f"`{ck['id']}` at step {ck['step']} of job `{job['id']}`"
                  + (" (its final checkpoint)" if ck.get("is_final") else "") + ". The weights are plain "
                  "safetensors (any LoRA training merged into the base weights).", ""]
        lines += ["## Evaluation", "",
                  f"Validation score of this checkpoint: **{_fmt(ck.get('validation_score'))}** "
                  f"(95% CI {_ci(ck.get('validation_ci95'))}).", ""]
        evs = lin.get("evaluations") or []
        if evs:
            lines += ["| evaluation | kind | accuracy | 95% CI | data sha256 |", "|---|---|---|---|---|"]
            for e in evs:
                lines.append(f"| `{e['id']}` | {e['kind']} | {_fmt(e.get('accuracy'))} | {_ci(e.get('accuracy_ci95'))} "
                             f"| `{(e.get('data_sha256') or '-')[:16]}` |")
            lines.append("")
        gv = lin.get("gate_verdict")
        if gv:
            lines += [f"Gate verdict `{gv['id']}`: **{'passed' if gv['passed'] else 'failed'}**.", ""]
            for c in gv.get("checks") or []:
                if isinstance(c, dict):
                    lines.append(f"- {c.get('name', '?')}: {'pass' if c.get('passed') else 'fail'}"
                                 + (f" ({c['message']})" if c.get("message") else ""))
            lines.append("")
        for a in lin.get("approvals") or []:
            lines.append(f"Approved by {a['by']}: {a['note']}" + (f" (override: {a['override_reason']})"
                                                                  if a.get("override_reason") else ""))
        lines += ["", "## Lineage", "", "| what | value | sha256 |", "|---|---|---|",
                  f"| base model | `{lin['base_model']['ref']}` | `{lin['base_model'].get('sha256') or '-'}` |"]
        for k, d in (lin.get("datasets") or {}).items():
            if d:
                lines.append(f"| {k} data | `{d.get('file') or '-'}` | `{d.get('sha256') or '-'}` |")
        for g in lin.get("graders") or []:
            lines.append(f"| grader | {g.get('type') or '-'} `{g.get('name') or ''}` | `{g.get('sha256') or '-'}` |")
        lines += [f"| resolved config | | `{(lin.get('config') or {}).get('sha256') or '-'}` |",
                  f"| code version | `{lin.get('code_version') or '-'}` | |",
                  f"| checkpoint manifest | `{ck['id']}` | `{ck.get('manifest_sha256') or '-'}` |", "",
                  "The full lineage (with the resolved job config) is in `rft_lineage.json`.", ""]
    lines += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "", 'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
              'tok = AutoTokenizer.from_pretrained("path/to/this/folder")',
              'ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, '
              'return_tensors="pt")', "print(tok.decode(model.generate(ids, max_new_tokens=32)[0]))", "```", ""]
    return "\n".join(lines)


def _prepare_out(out: Path, force: bool) -> None:
    if not force:
        check_output_dir(out, "export folder")
        return
    if out.exists() and not out.is_dir():
        raise RftError(f"{out}: is a file; the export folder must be a folder")
    anc = out.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise RftError(f"{out}: {anc} is a file, not a folder")


def export_checkpoint(ref: str, out_dir: str | os.PathLike, *, force: bool = False) -> dict:
    """Write checkpoint `ref` to `out_dir` as a plain transformers directory (see the module docstring).
    Returns {"path", "checkpoint", "source", "files": {name: sha256}, "lineage": bool}."""
    ref = _normalise(ref)
    out = Path(out_dir)
    _prepare_out(out, force)  # before hashing gigabytes: a refused folder is refused at once
    resolved = models.resolve(ref)  # verifies a checkpoint's files against its manifest (and the registry's hash)
    src = Path(resolved.path)
    lin = _lineage(ref, resolved)
    meta = None
    if (src / "rft_checkpoint.json").exists():
        meta = load_json_file(src / "rft_checkpoint.json", "checkpoint notes")
    files = _model_files(src)
    config = load_json_file(src / "config.json", "model config", max_bytes=16 * 1024 * 1024)
    name = f"rft export of {lin['checkpoint']['id']}" if lin else f"rft export of {src.name}"

    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        for f in files:
            shutil.copyfile(f, tmp / f.name)
        if not (tmp / "generation_config.json").exists():
            (tmp / "generation_config.json").write_text(json.dumps(_generation_config(config), indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(name, lin, meta, ref))
        if lin is not None:
            (tmp / "rft_lineage.json").write_text(json.dumps(lin, indent=2, default=str) + "\n")
        written = sorted(p.name for p in tmp.iterdir())
        hashes = {n: sha256_file(tmp / n) for n in written}
        if not out.exists():
            os.replace(tmp, out)
        else:
            for pattern in WEIGHT_GLOBS:  # an earlier export's shards must not mix with these weights
                for old in out.glob(pattern):
                    if old.is_file():
                        old.unlink()
            for n in written:
                os.replace(tmp / n, out / n)
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RftError(f"{out}: cannot write the export: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(out), "checkpoint": lin["checkpoint"]["id"] if lin else None, "source": str(src),
            "files": hashes, "lineage": lin is not None}
