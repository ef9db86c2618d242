"""The sandbox's shared vocabulary: limits, results, the environment a grader sees, and message framing.

What: `SandboxLimits` (per-call limits), `SandboxResult` (what one call produced), `SCRUBBED_ENV`, and the framing
both ends of the worker's pipes speak (`send_message`/`recv_message`: a 4-byte big-endian length, then JSON).

Simplified: JSON only; a message is at most `MAX_MESSAGE` bytes.

This module is imported by the pool (`rft.graders.sandbox.pool`) and loaded by path by the worker
(`rft.graders.sandbox.worker`, run as `python -I worker.py`), so it imports only the standard library.
How to run: nothing to run; see the package docstring.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import struct
import time
from dataclasses import dataclass

MAX_SOURCE_BYTES = 256 * 1024
HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """Per-call limits. `cpu_s=None` means `timeout_s` + 1 s (CPU seconds, rounded up). `isolation`: "auto" uses namespaces where
    the kernel allows and falls back to "basic"; "namespaces" fails if they are not available; "basic" never
    tries them."""

    timeout_s: float = 120.0
    cpu_s: float | None = None
    memory_mb: int = 2048
    nproc: int = 64
    fsize_mb: int = 1024
    scratch_mb: int = 1024
    output_bytes: int = 64 * 1024
    isolation: str = "auto"

    def __post_init__(self) -> None:
        if self.isolation not in ("auto", "namespaces", "basic"):
            raise ValueError(f"isolation must be auto, namespaces or basic, got {self.isolation!r}")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


@dataclass(frozen=True)
class SandboxResult:
    """What one call produced.

    status: "ok" (value is a finite float), "error" (the grader raised, returned a non-number, or its module
    failed to load; a python_grader_runtime_error), or "timeout" / "crash" / "cpu_limit" (the sandbox killed
    or lost the call; a python_grader_server_error).
    """

    status: str
    value: float | None = None
    error: str = ""
    traceback: str = ""
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def is_server_error(self) -> bool:
        return self.status in ("timeout", "crash", "cpu_limit")


def send_message(fd: int, obj) -> None:
    data = json.dumps(obj, allow_nan=False, default=_json_default).encode()
    buf = memoryview(HEADER.pack(len(data)) + data)
    while buf:
        n = os.write(fd, buf)
        buf = buf[n:]


def _json_default(o):
    # Samples and items come from JSON, but be lenient with tuples and the like.
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def _wait_readable(fd: int, timeout: float) -> bool:
    # poll(), not select(): the parent may hold more than 1024 file descriptors (select's limit).
    if hasattr(select, "poll"):
        p = select.poll()
        p.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        return bool(p.poll(max(0, int(timeout * 1000) + 1)))
    r, _, _ = select.select([fd], [], [], timeout)
    return bool(r)


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """Read exactly n bytes; None on EOF; raises TimeoutError past the deadline."""
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not _wait_readable(fd, left):
                raise TimeoutError
        try:
            chunk = os.read(fd, n - got)
        except InterruptedError:
            continue
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_message(fd: int, deadline: float | None = None):
    head = _read_exact(fd, HEADER.size, deadline)
    if head is None:
        return None
    (n,) = HEADER.unpack(head)
    if n > MAX_MESSAGE:
        raise ValueError(f"message too large ({n} bytes)")
    body = _read_exact(fd, n, deadline)
    if body is None:
        return None
    return json.loads(body)


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


# The environment a grader sees. Thread pools are pinned to one thread: each one reserves address space
# (RLIMIT_AS) and counts against RLIMIT_NPROC.
SCRUBBED_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}
