"""Exact-resume training state: everything needed to continue a run as if it had never stopped.

A state directory `checkpoints/state/step_000123/` holds, as safetensors and JSON (never pickle):
    trainable.safetensors   fp32 master weights of every trainable parameter (LoRA: the adapter only)
    optimizer.safetensors   AdamW exp_avg / exp_avg_sq / step per parameter
    rng.safetensors         torch CPU generator state
    trainer_state.json      step, data cursor, counters, evaluations, checkpoint bookkeeping, monitor state,
                            python `random` state, optimizer hyperparameters, the hashes resume checks
    manifest.json           sha256 and size of every file above, written last

Save protocol: files go to `step_X.partial/`, each fsynced; the manifest is written and fsynced last; the
directory is renamed to `step_X` and the parent fsynced; then the `LATEST` pointer is replaced atomically
(write temp, fsync, rename). Resume reads `LATEST`, verifies the manifest and falls back to the newest older
complete state if the pointed-to one is missing or fails verification. Partial directories are never read.
A save that fails part-way (a full disk, catalogue C6) removes its partial directory and raises an RftError
naming the path and the free space; LATEST and the earlier states are untouched, so the job stays resumable.
Rotation keeps the newest `keep` complete states and always the one LATEST names.

Fault injection for tests: RFT_FAULT="<point>[:<n>]" SIGKILLs the process at a named point
(`after_save_file:<i>`, `before_manifest`, `before_rename`, `before_pointer_update`, `after_step:<k>`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rft.errors import RftError
from rft.fsutil import fsync_dir as _fsync_dir
from rft.fsutil import fsync_file as _fsync_file
from rft.fsutil import save_error, write_atomic
from rft.hashing import file_entries, verified_manifest

STATE_FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer_state.json")


@dataclass
class LoopState:
    """What the training loop carries from step to step; saved as trainer_state.json's "loop" and restored from it."""

    step: int = 0  # the last completed step
    t_train: float = 0.0  # seconds spent in steps
    trained_tokens: int = 0
    evals: list[dict] = field(default_factory=list)  # validation summaries, in order
    last: dict = field(default_factory=dict)  # the last step's metrics
    baseline: dict | None = None  # the step-0 validation report
    guard_baseline: dict | None = None
    skipped_steps: int = 0  # steps whose update was refused as non-finite (N1), in all
    nonfinite_streak: int = 0  # ... in a row, up to the last step
    warm_start: dict | None = None  # the supervised warm start's record (rft.train.warm_start), when one ran

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LoopState":
        """From a saved "loop"; counters a state saved before they existed start at their defaults."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def fault(point: str, n: int | None = None, *, step: int | None = None) -> None:
    """Test hook, a no-op unless RFT_FAULT names this point: then the process sends itself SIGKILL (or the signal
    in RFT_FAULT_SIGNAL, e.g. TERM). RFT_FAULT_STEP limits it to the save or step of that number."""
    spec = os.environ.get("RFT_FAULT")
    if not spec:
        return
    name, _, arg = spec.partition(":")
    if name != point or (arg and (n is None or int(arg) != n)):
        return
    at = os.environ.get("RFT_FAULT_STEP")
    if at and step is not None and int(at) != step:
        return
    sig = getattr(signal, "SIG" + os.environ.get("RFT_FAULT_SIGNAL", "KILL").upper())
    os.kill(os.getpid(), sig)


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=str).encode())


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(opt, names: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW state as flat tensors keyed by parameter name, plus the JSON-able hyperparameters."""
    tensors = {}
    params = [p for g in opt.param_groups for p in g["params"]]
    for name, p in zip(names, params):
        st = opt.state.get(p, {})
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"{name}::{k}"] = t.detach().cpu().contiguous().clone()
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return tensors, {"param_groups": _json_safe(groups), "n_params": len(params)}


def _json_safe(o):
    return json.loads(json.dumps(o, default=lambda x: list(x) if isinstance(x, tuple) else str(x)))


def save_state(state_root: Path, step: int, *, model, opt, trainer: dict, keep: int = 2) -> Path:
    """Write a complete, verified state for `step` and point LATEST at it. Returns its directory."""
    state_root = Path(state_root)
    state_root.mkdir(parents=True, exist_ok=True)
    final = state_root / f"step_{step:06d}"
    tmp = state_root / f"step_{step:06d}.partial"
    for stale in state_root.glob("step_*.partial"):  # left by a kill mid-save; never read, only in the way
        shutil.rmtree(stale, ignore_errors=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    opt_tensors, opt_meta = _optimizer_tensors(opt, names)
    trainer = dict(trainer) | {
        "step": step,
        "optimizer": opt_meta,
        "python_random": _py_random_state(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    writers = [
        ("trainable.safetensors", lambda p: save_file(trainable_state(model), str(p))),
        ("optimizer.safetensors", lambda p: save_file(opt_tensors, str(p)) if opt_tensors else
         save_file({"__empty__": torch.zeros(1)}, str(p))),
        ("rng.safetensors", lambda p: save_file(_rng_tensors(), str(p))),
        ("trainer_state.json", lambda p: p.write_text(json.dumps(trainer, indent=2, default=str))),
    ]
    try:
        tmp.mkdir()
        for i, (name, write) in enumerate(writers):
            write(tmp / name)
            _fsync_file(tmp / name)
            fault("after_save_file", i, step=step)
        fault("before_manifest", step=step)
        manifest = {"step": step, "kind": "rft-train-state", "files": file_entries(tmp, STATE_FILES)}
        with open(tmp / "manifest.json", "w") as f:
            f.write(json.dumps(manifest, indent=2))
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
    except BaseException as e:
        # C6: a failed save (a full disk) leaves no partial folder, and LATEST and every earlier state untouched.
        shutil.rmtree(tmp, ignore_errors=True)
        err = save_error(e, final, f"the training state for step {step}")
        if err is not None:
            raise err from None
        raise
    fault("before_rename", step=step)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(state_root)
    fault("before_pointer_update", step=step)
    try:
        write_json_atomic(state_root / "LATEST", {"step": step, "dir": final.name})
    except OSError as e:
        # The state itself is complete; resume would fall back to it or to the one LATEST still names.
        raise save_error(e, state_root / "LATEST", f"the LATEST pointer for step {step}") from None
    _prune(state_root, keep)
    return final


def _latest_name(state_root: Path) -> str | None:
    try:
        return json.loads((state_root / "LATEST").read_text())["dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _prune(state_root: Path, keep: int) -> None:
    """Keep the newest `keep` complete states (a manifest written) and the one LATEST names. Folders without a
    manifest are not counted, so rotation never removes the newest complete state in favour of a broken one."""
    if keep <= 0:
        return
    done = sorted(p for p in state_root.glob("step_*")
                  if p.is_dir() and not p.name.endswith(".partial") and (p / "manifest.json").exists())
    protect = {p.name for p in done[-keep:]} | {_latest_name(state_root)}
    for p in done:
        if p.name not in protect:
            shutil.rmtree(p, ignore_errors=True)


def verify_state(d: Path) -> dict:
    """The manifest if every file matches it; raise RftError naming what is wrong otherwise."""
    return verified_manifest(d, f"state {d}", required=STATE_FILES)


def find_latest_state(state_root: Path, warn=print) -> Path | None:
    """The state LATEST names, if it verifies; else the newest older complete state (with a warning)."""
    state_root = Path(state_root)
    if not state_root.exists():
        return None
    candidates = sorted((p for p in state_root.glob("step_*") if p.is_dir() and not p.name.endswith(".partial")),
                        reverse=True)
    ptr = state_root / "LATEST"
    if ptr.exists():
        try:
            name = json.loads(ptr.read_text())["dir"]
            if not (isinstance(name, str) and name.startswith("step_") and "/" not in name and name != ".."):
                raise ValueError(name)
            named = state_root / name
        except (OSError, ValueError, KeyError, TypeError):
            named = None
            warn(f"warning: {ptr} is unreadable; using the newest complete state instead")
        if named is not None:
            if not named.exists():
                warn(f"warning: {ptr} points at {named.name}, which does not exist; using the newest complete state")
            else:
                candidates = [named] + [c for c in candidates if c != named]
    for c in candidates:
        try:
            verify_state(c)
            return c
        except RftError as e:
            warn(f"warning: skipping {c.name}: {e}")
    return None


def load_state(d: Path, *, model, opt, verified: bool = False) -> dict:
    """Restore weights, optimizer and RNG from a state directory; return trainer_state.json. The files are
    verified first unless the caller just did (`verified=True`, e.g. the directory came from find_latest_state)."""
    if not verified:
        verify_state(d)
    try:
        return _load_state(d, model=model, opt=opt)
    except (KeyError, TypeError, ValueError, IndexError) as e:  # a well-hashed but hand-made or foreign state
        raise RftError(f"state {d} is not a training state this version of rft can load: "
                       f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None


def _load_state(d: Path, *, model, opt) -> dict:
    trainer = json.loads((d / "trainer_state.json").read_text())
    weights = load_file(str(d / "trainable.safetensors"))
    named = dict(model.named_parameters())
    missing = [n for n, p in named.items() if p.requires_grad and n not in weights]
    if missing:
        raise RftError(f"{d}: the saved state has no weights for {missing[:3]}...: it was saved from a different model "
                       "or LoRA configuration")
    with torch.no_grad():
        for n, t in weights.items():
            if n not in named:
                raise RftError(f"{d}: saved parameter {n} does not exist in the model")
            named[n].copy_(t)
    # optimizer: hyperparameters first, then per-parameter state
    meta = trainer["optimizer"]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for g in opt.param_groups for p in g["params"]]
    if meta["n_params"] != len(params):
        raise RftError(f"{d}: optimizer state covers {meta['n_params']} parameters, the model has {len(params)}")
    for g, saved in zip(opt.param_groups, meta["param_groups"]):
        for k, v in saved.items():
            g[k] = tuple(v) if isinstance(g.get(k), tuple) else v
    opt_t = load_file(str(d / "optimizer.safetensors"))
    opt.state.clear()
    for name, p in zip(names, params):
        st = {k.split("::", 1)[1]: v for k, v in opt_t.items() if k.split("::", 1)[0] == name}
        if st:  # moments live with the parameter; AdamW keeps its scalar `step` on the CPU
            opt.state[p] = {k: v if v.dim() == 0 else v.to(p.device) for k, v in st.items()}
    rng = load_file(str(d / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    _set_py_random_state(trainer["python_random"])
    return trainer


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i:02d}"] = st
    return out


def _py_random_state():
    v, state, gauss = random.getstate()
    return [v, list(state), gauss]


def _set_py_random_state(s) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))
