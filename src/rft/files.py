"""The file store: uploaded files (OpenAI's Files API) kept under `$RFT_HOME/files/<file-id>/`.

What: `FileStore.create(source, filename=..., purpose=..., validate=...)` copies an upload into the store and
returns a `StoredFile` (OpenAI's `file` object via `.to_openai()`, plus its sha256). Each file is a folder
holding `content` (the bytes as uploaded) and `file.json` (the metadata, written atomically); the folder is
staged as `.staging-<id>` and renamed into place only after the size limit, the caller's `validate(path)` and
the caller's `record(stored)` (the registry row) have all passed, so a refused or failed upload leaves nothing.
`resolve_content(ref)` is what `rft.data` calls for a `file-...` reference in a job spec or on the command line.

Security boundary: file ids are checked against `FILE_ID_RE` (`file-` + 8 to 64 lower-case hex digits) before any
path is built from them, so `../x`, `%2e%2e`, absolute paths and the like never reach the file system (W5/W6).
The filename a client sends is metadata only: it is reduced to a plain name (`sanitize_filename`) and never used
to build a path. What is not protected: anyone who can write to `$RFT_HOME` can change stored files; the sha256
in `file.json` and the registry lets a reader notice.
Simplified: no expiry (`expires_at` is always null); the store has no index of its own (listing with
pagination and purpose filters is the registry's `list_files`; `FileStore.list` scans the folders).
Layer: just above the ground floor (it imports errors, fsutil and home only) so that `rft.data` can resolve ids.
How to run: `python -c "from rft.files import FileStore; print([f.id for f in FileStore().list()])"`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from rft.errors import RftError
from rft.fsutil import fsync_dir, save_error, write_atomic
from rft.home import rft_home

FILE_ID_RE = re.compile(r"file-[0-9a-f]{8,64}")
DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # OpenAI's per-file limit
MAX_FILENAME_CHARS = 255
CHUNK = 1 << 20
CONTENT = "content"
META = "file.json"
LIST_HINT = "see `rft files list` (or GET /v1/files)"


class FileNotFound(RftError):
    """No stored file has this id (or the id is malformed): the HTTP API answers 404."""


def is_file_id(ref: object) -> bool:
    """Whether `ref` is a well-formed file id (`file-` + 8..64 lower-case hex digits)."""
    return isinstance(ref, str) and FILE_ID_RE.fullmatch(ref) is not None


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def sanitize_filename(name: object) -> str:
    """A client's filename reduced to a plain, printable name: the last part of any path (`/` or `\\`), control
    and format characters removed, at most 255 characters; "upload" when nothing is left. Metadata only: it is
    never joined to a path."""
    text = str(name or "")
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")  # Cc, Cf, Cs, Co, Cn
    text = text.strip().strip(".").strip()  # "..", ".", " .hidden" -> "", "", "hidden"
    return text[:MAX_FILENAME_CHARS] or "upload"


@dataclass(frozen=True)
class StoredFile:
    """One stored file. `created_at` is Unix seconds as read from the clock (OpenAI's object shows it as an
    integer; the fraction orders files uploaded within one second)."""

    id: str
    bytes: int
    created_at: float
    filename: str
    purpose: str
    sha256: str

    def to_openai(self) -> dict:
        """OpenAI's `file` object, plus rft's `sha256`."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": int(self.created_at),
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": None,
                "status_details": None, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: dict) -> "StoredFile":
        return cls(id=str(d["id"]), bytes=int(d["bytes"]), created_at=float(d["created_at"]),
                   filename=str(d["filename"]), purpose=str(d["purpose"]), sha256=str(d["sha256"]))


def check_file_id(file_id: object) -> str:
    """`file_id` when it is well-formed, else FileNotFound (nothing is looked up on disk)."""
    if not is_file_id(file_id):
        shown = repr(str(file_id)[:80])
        raise FileNotFound(f"{shown} is not a file id (expected 'file-' followed by 8 to 64 lower-case hex digits)",
                       hint=LIST_HINT)
    return str(file_id)


class FileStore:
    """The folder of stored files (default `$RFT_HOME/files`). `clock()` gives Unix seconds (tests inject it)."""

    def __init__(self, root: str | os.PathLike | None = None, *, clock: Callable[[], float] = time.time):
        self.root = Path(root) if root is not None else rft_home() / "files"
        self.clock = clock

    # ------------------------------------------------------------------------------------------ paths
    def _dir(self, file_id: str) -> Path:
        return self.root / check_file_id(file_id)

    def _missing(self, file_id: str) -> RftError:
        return FileNotFound(f"no file '{file_id}' in the file store ({self.root})", hint=LIST_HINT)

    def exists(self, file_id: str) -> bool:
        return is_file_id(file_id) and (self.root / file_id / META).is_file()

    def get(self, file_id: str) -> StoredFile:
        """The file's metadata, or RftError when the id is malformed or not stored."""
        meta = self._dir(file_id) / META
        try:
            raw = meta.read_bytes()
        except FileNotFoundError:
            raise self._missing(file_id) from None
        except OSError as e:
            raise RftError(f"cannot read {meta}: {e.strerror or e}") from None
        try:
            return StoredFile.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as e:
            raise RftError(f"the metadata of file {file_id} ({meta}) is damaged: {e}") from None

    def content_path(self, file_id: str) -> Path:
        """The path of the file's bytes, or RftError (malformed id, not stored, content gone)."""
        self.get(file_id)
        p = self._dir(file_id) / CONTENT
        if not p.is_file():
            raise FileNotFound(f"the content of file {file_id} is missing from the file store ({p})", hint=LIST_HINT)
        return p

    def list(self) -> list[StoredFile]:
        """Every stored file, newest first (scans the folders; the registry's `list_files` is the indexed view)."""
        out = []
        if self.root.is_dir():
            for d in self.root.iterdir():
                if is_file_id(d.name):
                    try:
                        out.append(self.get(d.name))
                    except RftError:
                        continue
        return sorted(out, key=lambda f: (f.created_at, f.id), reverse=True)

    # ----------------------------------------------------------------------------------------- writes
    def create(self, source: BinaryIO | bytes, *, filename: str, purpose: str,
               max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, validate: Callable[[Path, str], None] | None = None,
               record: Callable[[StoredFile], None] | None = None) -> StoredFile:
        """Store `source` (bytes or a binary file object read in chunks). `validate(content_path, filename)` raises
        RftError for a file unfit for its purpose; `record(stored)` (the registry row) runs before the folder is
        moved into place. Any failure removes the staged folder: nothing is stored."""
        filename = sanitize_filename(filename)
        file_id = new_file_id()
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{file_id}"
        staging.mkdir()
        try:
            size, digest = self._copy(source, staging / CONTENT, max_bytes, filename)
            if validate is not None:
                validate(staging / CONTENT, filename)
            stored = StoredFile(id=file_id, bytes=size, created_at=float(self.clock()), filename=filename,
                                purpose=purpose, sha256=digest)
            write_atomic(staging / META, json.dumps(asdict(stored), indent=2).encode())
            if record is not None:
                record(stored)
            os.rename(staging, self.root / file_id)
        except BaseException as e:
            shutil.rmtree(staging, ignore_errors=True)
            failed = None if isinstance(e, RftError) else save_error(e, staging, "the uploaded file")
            if failed is not None:
                raise failed from None
            raise
        fsync_dir(self.root)
        return stored

    @staticmethod
    def _copy(source: BinaryIO | bytes, dest: Path, max_bytes: int, filename: str) -> tuple[int, str]:
        h = hashlib.sha256()
        size = 0
        with open(dest, "wb") as f:
            chunks = [source] if isinstance(source, (bytes, bytearray)) else iter(lambda: source.read(CHUNK), b"")
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise RftError(f"{filename}: the file is larger than the upload limit of {max_bytes:,} bytes")
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if size == 0:
            raise RftError(f"{filename}: the file is empty")
        return size, h.hexdigest()

    def delete(self, file_id: str) -> bool:
        """Remove the file's folder; False when it was not there. The folder is renamed aside first, so a reader
        never sees half a file."""
        d = self._dir(file_id)
        if not d.exists():
            return False
        trash = self.root / f".deleting-{file_id}-{secrets.token_hex(4)}"
        try:
            os.rename(d, trash)
        except FileNotFoundError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        fsync_dir(self.root)
        return True


def resolve_content(ref: str, store: FileStore | None = None) -> tuple[Path, str]:
    """(content path, display name "file-... (filename)") for a file id, or RftError naming the id."""
    st = store or FileStore()
    f = st.get(ref)
    return st.content_path(ref), f"{f.id} ({f.filename})"
