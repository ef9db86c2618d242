"""sha256 helpers shared by lineage, checkpoints, training states and the model cache.

A manifest maps file names (relative to a folder) to their sha256 and size; `manifest_problems` lists every
file that is missing or differs, so model checkpoints and exact-resume states are verified the same way."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entries(root: Path, names) -> dict[str, dict]:
    """{name: {"sha256", "size"}} for the files `names` (relative to `root`)."""
    root = Path(root)
    return {str(n): {"sha256": sha256_file(root / n), "size": (root / n).stat().st_size} for n in names}


def manifest_problems(root: Path, files: dict[str, dict], required=()) -> list[str]:
    """What is wrong with the folder `root` against a manifest's `files` (empty when everything matches). Sizes
    are compared first, so a truncated file is found without hashing it."""
    root = Path(root)
    bad = [f"{n}: not in the manifest" for n in required if n not in files]
    for name, info in files.items():
        p = root / name
        if not p.exists():
            bad.append(f"{name}: missing")
        elif p.stat().st_size != info["size"]:
            bad.append(f"{name}: size {p.stat().st_size} != {info['size']}")
        elif sha256_file(p) != info["sha256"]:
            bad.append(f"{name}: sha256 does not match")
    return bad


def verified_manifest(root: Path, what: str, required=(), missing: str = "the save did not finish") -> dict:
    """The folder's manifest.json if every file matches it; otherwise raise RftError naming `what` and each
    problem (no manifest, unreadable manifest, or the files `manifest_problems` lists)."""
    from rft.errors import RftError

    root = Path(root)
    mf = root / "manifest.json"
    if not mf.exists():
        raise RftError(f"{what} has no manifest.json ({missing})")
    try:
        manifest = json.loads(mf.read_text())
    except ValueError as e:
        raise RftError(f"{what}: manifest.json is not valid JSON: {e}") from None
    bad = manifest_problems(root, manifest.get("files", {}), required=required)
    if bad:
        raise RftError(f"{what} failed verification (tampered or corrupt): " + "; ".join(bad))
    return manifest
