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
import hashlib
import json
import os
import re
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


# What `new_batch_id` makes: letters, digits and '_'. A typed id or prefix is checked against this before it
# comes near a path, so `../x`, `/tmp/x` or `*` can never name a folder outside $RFT_HOME/batches.
_ID_CHARS = re.compile(r"[A-Za-z0-9_]{1,64}")


def visible_batch_ids(ids: list[str]) -> list[str]:
    """The ids among `ids` the acting user may see: all of them, unless users with teams are configured and the
    caller belongs to a team (catalogue W8), then those the registry records for that team."""
    from rft.registry.access import visible_team

    if visible_team() is None:
        return ids
    from rft.registry import Registry

    allowed = {r["id"] for r in Registry().batches()}  # the registry filters by the caller's team
    return [i for i in ids if i in allowed]


def batch_folder(batch_id: str) -> Path:
    """The folder of an existing batch the caller may see; a unique prefix of the id is enough."""
    if not isinstance(batch_id, str) or not _ID_CHARS.fullmatch(batch_id):
        shown = repr(batch_id[:40] + ("..." if len(batch_id) > 40 else "")) if isinstance(batch_id, str) else repr(batch_id)
        raise RftError(f"{shown} is not a batch id: ids are 1 to 64 letters, digits and '_' "
                       "(like batch_20250101120000_1a2b3c4d)", hint="`rft batch list` shows the batches")
    root = batches_dir()
    known = sorted(p.name for p in root.glob("batch_*") if (p / "state.json").is_file()) if root.is_dir() else []
    known = visible_batch_ids(known)
    if batch_id in known:
        return root / batch_id
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
    path = folder / "state.json"
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise RftError(f"{path}: unreadable batch state: {e}") from None
    if not isinstance(state, dict) or not isinstance(state.get("request_counts"), dict):
        raise RftError(f"{path}: not a batch state (it was edited or damaged)")
    return state


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


def line_id(batch_id: str, custom_id: str) -> str:
    """The `id` of a result line: derived from (batch, custom_id), so a line can be told to be this batch's."""
    return "batch_req_" + hashlib.sha256(("line\0" + batch_id + "\0" + custom_id).encode()).hexdigest()[:24]


_OURS = b'{"id": "batch_req_'  # how every line JsonlAppender writes for a batch starts


def _torn(tail: bytes) -> bool:
    """Whether bytes after the last good line are a write of ours cut short (or zeros a crash left), so they
    may be cut off; anything else is someone else's data and is never truncated."""
    return not tail.strip(b"\x00\n") or tail[:len(_OURS)] == _OURS[:len(tail)]


def read_records(path: Path, *, repair: bool = False, batch_id: str | None = None) -> list[dict]:
    """Records of a JSONL results file. A torn last line is ignored, and with `repair=True` cut off the file
    (so appending can go on after it). A bad line elsewhere is corruption: an RftError naming file and line.
    With `batch_id`, every line must be that batch's (its `id` derives from the batch): a file replaced by
    someone else's is refused before anything in it is cut or rewritten."""
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
            if not isinstance(rec, dict) or not isinstance(rec.get("custom_id"), str):
                raise ValueError("not a batch result object")
        except ValueError as e:
            if i == len(lines) and (batch_id is None or _torn(raw)):  # a complete last line that does not
                keep -= len(raw) + 1                                    # parse: torn too (zeros after a crash)
                break
            raise RftError(f"{path}:{i}: corrupt result line ({e})",
                           hint="the results file was edited or damaged; restore it or start a new batch") from None
        if batch_id is not None and rec.get("id") != line_id(batch_id, rec["custom_id"]):
            raise RftError(f"{path}:{i}: this line is not a result of batch {batch_id}; the file was replaced or "
                           "written by something else, and nothing in it was changed",
                           hint="move it away (and put the batch's own file back) before resuming")
        records.append(rec)
    if batch_id is not None and keep < len(data) and not _torn(data[keep:]):
        raise RftError(f"{path}: the file ends in a line that is not a result of batch {batch_id}; nothing in it "
                       "was changed", hint="move it away before resuming")
    if repair and keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return records
