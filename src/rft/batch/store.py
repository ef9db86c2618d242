"""The batch folder `$RFT_HOME/batches/<batch_id>/` and the durable files a batch writes.

Layout:
- `state.json`   the batch object (status, counts, usage, cost, config); replaced atomically (write a temp
                 file, fsync, rename, fsync the folder), so a crash leaves the old or the new state, never half;
- `input.jsonl`  the validated copy of the input file, so editing the original cannot change a running batch;
- `lock`         held with `flock` by the process that runs the batch: one runner at a time, and `show`
                 can tell a running batch from one that was killed;
- `cancel`       a marker `rft batch cancel` leaves for a running batch.

Results go to the output and error JSONL files with `JsonlAppender`: each finished record is appended and
flushed to disk (fsync) before the next group starts. `read_records` is the recovery path: a last line
without its newline (or one that does not parse) is a torn write and is cut off; a bad line anywhere else is
corruption and an error naming the file and line.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from pathlib import Path

from rft.errors import RftError, did_you_mean
from rft.fsutil import write_atomic  # also used by rft.batch.jobs
from rft.home import rft_home


def batches_dir() -> Path:
    return rft_home() / "batches"


def new_batch_id() -> str:
    return f"batch_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}_{secrets.token_hex(4)}"


def batch_folder(batch_id: str) -> Path:
    """The folder of an existing batch; a unique prefix of the id is enough."""
    root = batches_dir()
    exact = root / batch_id
    if (exact / "state.json").exists():
        return exact
    known = sorted(p.name for p in root.glob("batch_*") if (p / "state.json").exists()) if root.exists() else []
    matches = [k for k in known if k.startswith(batch_id)]
    if len(matches) == 1:
        return root / matches[0]
    if len(matches) > 1:
        raise RftError(f"'{batch_id}' matches {len(matches)} batches: {', '.join(matches[:5])}; give more of the id")
    raise RftError(f"no batch '{batch_id}' in {root}{did_you_mean(batch_id, known)}",
                   hint="`rft batch list` shows the batches")


def write_state(folder: Path, state: dict) -> None:
    write_atomic(folder / "state.json", (json.dumps(state, indent=2, default=str) + "\n").encode())
    _mirror(state)


def _mirror(state: dict) -> None:
    """Record the state in the registry too (`rft.registry`). The folder is what resume reads, so a registry
    that cannot be reached (a remote database down) costs a warning, never the batch."""
    try:
        from rft.registry import Registry

        Registry().record_batch(state)
    except Exception as e:  # noqa: BLE001
        import sys

        print(f"warning: batch {state.get('id')}: could not record its state in the registry: {e}", file=sys.stderr)


def read_state(folder: Path) -> dict:
    try:
        return json.loads((folder / "state.json").read_text())
    except ValueError as e:
        raise RftError(f"{folder / 'state.json'}: unreadable batch state: {e}") from None


class BatchLock:
    """An exclusive `flock` on the batch folder, released by the kernel if the process dies."""

    def __init__(self, folder: Path):
        self.path = folder / "lock"
        self.fd: int | None = None

    def acquire(self) -> "BatchLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RftError(f"batch {self.path.parent.name} is being run by another process",
                           hint="wait for it, or `rft batch cancel` it") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "BatchLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_running(folder: Path) -> bool:
    path = folder / "lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe lock
    return False


class JsonlAppender:
    """Append JSON records to a file; `commit()` flushes and fsyncs so what was appended survives `kill -9`."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.f = open(path, "ab")

    def append(self, record: dict) -> None:
        # One write per line keeps a torn write to the last line, which read_records cuts off.
        self.f.write((json.dumps(record, ensure_ascii=False) + "\n").encode())

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        if not self.f.closed:
            self.commit()
            self.f.close()


def read_records(path: Path, *, repair: bool = False) -> list[dict]:
    """Records of a JSONL results file. A torn last line is ignored, and with `repair=True` cut off the file
    (so appending can go on after it). A bad line elsewhere is corruption: an RftError naming file and line."""
    if not path.exists():
        return []
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1  # the bytes after the last newline are a torn write
    lines = data[:keep].split(b"\n")[:-1] if keep else []
    records: list[dict] = []
    for i, raw in enumerate(lines, 1):
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict) or "custom_id" not in rec:
                raise ValueError("not a batch result object")
        except ValueError as e:
            if i == len(lines):  # a complete last line that does not parse: torn too (e.g. zeros after a crash)
                keep -= len(raw) + 1
                break
            raise RftError(f"{path}:{i}: corrupt result line ({e})",
                           hint="the results file was edited or damaged; restore it or start a new batch") from None
        records.append(rec)
    if repair and keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return records

