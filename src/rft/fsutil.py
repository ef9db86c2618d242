"""Durable file writes shared by the training state, the batch runner and the registry's file artifacts.

`write_atomic(path, data)`: write a temp file beside `path`, fsync it, rename it over `path`, fsync the folder.
A reader sees the old content or the new, never a torn file; after the call returns the new content survives
a power cut (on filesystems that honour fsync); a write that fails (a full disk) removes its temp file.

`save_error(e, path, what)`: the one-line `RftError` for a save that failed on the file system (disk full,
quota, read-only, no permission), naming the path and the free space; None for other exceptions, which the
caller re-raises. Catalogue C6: checkpoint and state saves use it after removing their partial directory.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory (its entries: renames, new files). Some filesystems refuse; that is not an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding `path` (or its nearest existing parent); None if unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def save_error(e: BaseException, path: Path, what: str):
    """An RftError for a failed save of `what` at `path`, or None when `e` is not a file-system failure.
    Libraries that write in native code (safetensors) report a full disk as their own error type, so the message
    is checked as well as the errno."""
    from rft.errors import RftError

    text = str(e)
    full = (isinstance(e, OSError) and e.errno in _FULL) or "No space left" in text or "StorageFull" in text \
        or "Disk quota" in text
    if full:
        return RftError(f"no space left on the device to save {what} at {path} ({_size(free_bytes(path))} free); "
                        "the save was abandoned and its partial files removed",
                        hint="free some space (old runs: `rft jobs list`, remove their run folders) and resume the job")
    if isinstance(e, OSError):
        return RftError(f"cannot save {what} at {path}: {e.strerror or e} ({_size(free_bytes(path))} free); "
                        "the save was abandoned and its partial files removed")
    return None
