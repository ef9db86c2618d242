"""sha256 helpers shared by lineage, checkpoints, training states and the model cache.

A manifest maps file names (relative to a folder) to their sha256 and size; `manifest_problems` lists every
file that is missing or differs, so model checkpoints and exact-resume states are verified the same way.
`verify_checkpoint` is the one check of a model checkpoint (also against the registry's manifest hash).
`check_safetensors` validates a safetensors header (bounded size and tensor count, offsets, dtypes, shapes)
before any library parses the file; `verified_manifest` applies it to every safetensors file it verifies.
How to run: `python -c "from rft.hashing import check_safetensors; print(len(check_safetensors('model.safetensors')))"`."""

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
        if not isinstance(info, dict) or not isinstance(info.get("size"), int) or not isinstance(info.get("sha256"), str):
            bad.append(f"{name}: the manifest entry is not {{sha256, size}}")
        elif Path(name).is_absolute() or ".." in Path(name).parts:
            bad.append(f"{name}: outside the folder")
        elif not p.is_file():
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
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        raise RftError(f"{what}: manifest.json is not an rft manifest (expected an object with 'files')")
    bad = manifest_problems(root, manifest.get("files", {}), required=required)
    if bad:
        raise RftError(f"{what} failed verification (tampered or corrupt): " + "; ".join(bad))
    # The hashes only say the files are what was written; the headers are checked before any library reads them.
    check_safetensors_files(root, manifest.get("files", {}))
    return manifest


def verify_checkpoint(path: str | Path, *, recorded_manifest_sha256: str | None = None,
                      name: str | None = None) -> dict:
    """A model checkpoint's manifest once every file matches it (`verified_manifest`); RftError otherwise.

    With `recorded_manifest_sha256` (the registry's record of the checkpoint), manifest.json itself must hash to
    it first: a manifest rewritten to match tampered files is refused too. `name` (e.g. "checkpoint ckpt-1 at
    /path") opens that message. Every loader of a checkpoint (a path, `ckpt:`, `alias:`, lineage) calls this."""
    from rft.errors import RftError

    path = Path(path)
    if recorded_manifest_sha256 is not None:
        mf = path / "manifest.json"
        if not mf.exists() or sha256_file(mf) != recorded_manifest_sha256:
            raise RftError(f"{name or f'checkpoint {path}'}: manifest.json is missing or differs from the one "
                           "recorded in the registry (tampered?); refusing to load it")
    return verified_manifest(path, f"checkpoint {path}", missing="it is incomplete and will not be loaded")


# ------------------------------------------------------------------------------------ safetensors headers
# A safetensors file is: 8 bytes little-endian header length N, N bytes of JSON header, then the data buffer.
# The header is checked here before any library parses the file, with bounds far below what an attacker can
# declare (catalogue A4): the safetensors library itself accepts headers up to 100 MB and would parse them.
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024  # bytes; a 50,000-tensor header is about 5 MB
MAX_SAFETENSORS_TENSORS = 50_000  # per file; large models shard far below this
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def check_safetensors(path: str | Path) -> dict:
    """The parsed header of a safetensors file, or RftError naming the file when the header is oversized, not a
    JSON object, declares too many tensors, an unknown dtype, a shape whose size differs from its byte range,
    offsets past the end of the file, or tensors that overlap or leave holes. Reads only the header.
    Simplified: the tensors' bytes are not read (sha256 in the manifest covers content)."""
    import struct

    from rft.errors import RftError

    p = Path(path)

    def bad(why: str) -> RftError:
        return RftError(f"{p}: not a valid safetensors file: {why}",
                        hint="rft only loads safetensors weights written by safetensors/transformers; "
                             "re-create the file, or use a checkpoint rft saved")

    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_SAFETENSORS_HEADER:
                raise bad(f"the header declares {n:,} bytes (limit {MAX_SAFETENSORS_HEADER:,})")
            if n > size - 8:
                raise bad(f"the header declares {n:,} bytes but the file has only {size - 8:,} after the length")
            raw = f.read(n)
    except OSError as e:
        raise RftError(f"{p}: cannot read the weights file: {e.strerror or e}") from None
    # Count entries before parsing: 100k dummy entries are refused without building 100k dicts.
    if raw.count(b"data_offsets") > MAX_SAFETENSORS_TENSORS:
        raise bad(f"more than {MAX_SAFETENSORS_TENSORS:,} tensors in one file")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # a pickle or other binary lands here
        raise bad(f"the header is not JSON ({type(e).__name__}); is it a pickle (.bin/.pt) file renamed?") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise bad("__metadata__ must map strings to strings")
    if len(header) > MAX_SAFETENSORS_TENSORS:
        raise bad(f"{len(header):,} tensors in one file (limit {MAX_SAFETENSORS_TENSORS:,})")
    data_len = size - 8 - n
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise bad(f"tensor {name[:80]!r}: its entry is not an object")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise bad(f"tensor {name[:80]!r}: unknown dtype {str(dtype)[:20]!r}")
        if not (isinstance(shape, list) and len(shape) <= 16
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise bad(f"tensor {name[:80]!r}: shape must be a list of at most 16 non-negative integers")
        if not (isinstance(offs, list) and len(offs) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise bad(f"tensor {name[:80]!r}: data_offsets must be [begin, end]")
        begin, end = offs
        if not 0 <= begin <= end:
            raise bad(f"tensor {name[:80]!r}: data_offsets {offs} are not 0 <= begin <= end")
        if end > data_len:
            raise bad(f"tensor {name[:80]!r}: data_offsets end {end:,} is past the end of the data ({data_len:,} bytes)")
        numel = 1
        for d in shape:
            numel *= d
        if numel * DTYPE_BYTES[dtype] != end - begin:
            raise bad(f"tensor {name[:80]!r}: {dtype} {shape} needs {numel * DTYPE_BYTES[dtype]:,} bytes, "
                      f"data_offsets give {end - begin:,}")
        spans.append((begin, end, name))
    # As the safetensors format requires: tensors tile the data buffer, in order, without overlap or holes.
    at = 0
    for begin, end, name in sorted(spans):
        if begin < at:
            raise bad(f"tensor {name[:80]!r} overlaps the one before it (begins at {begin:,}, before {at:,})")
        if begin > at:
            raise bad(f"a hole in the data before tensor {name[:80]!r} (bytes {at:,}..{begin:,})")
        at = end
    if at != data_len:
        raise bad(f"the tensors cover {at:,} of {data_len:,} data bytes")
    return header


def check_safetensors_files(root: Path, names) -> None:
    """check_safetensors on every `*.safetensors` among `names` (relative to `root`)."""
    for n in names:
        if str(n).endswith(".safetensors"):
            check_safetensors(Path(root) / n)
