"""Reading what a user hands rft: files (job specs, datasets, graders, samples, batch inputs) and output paths.

What: one place that turns every way a user-supplied path or its content can be wrong into an `RftError` that
names the file (and the line, column and field where there is one): a missing file, a directory, a name longer
than the file system allows, no permission, a file larger than the limit for its kind, binary or non-UTF-8
content, JSON or YAML that does not parse, nesting deep enough to hit Python's recursion limit, a YAML alias bomb,
and a top-level value of the wrong kind (a list where an object is expected). Output paths are checked before
anything is written: an output file that is a directory, or an output folder that is a file or already holds
files, is refused, so nothing already there is lost.
Simplified: sizes are checked with one `stat` before reading (a file that grows while it is read is read up to
the limit plus one byte, then refused); nesting depth is limited to `MAX_DEPTH` containers, checked on the
parsed value (the JSON parser itself is guarded by catching `RecursionError`).
How to run: `python -c "from rft.userinput import load_json_file; print(load_json_file('grader.json', 'grader'))"`.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

from rft.errors import RftError

MAX_DEPTH = 64  # containers inside containers; real job specs, graders and rows use fewer than 10
MAX_TEXT_BYTES = 64 * 1024 * 1024  # a job spec, grader or request file; datasets pass their own limit
MAX_YAML_ALIASES = 1000
MAX_EXPANDED_VALUES = 2_000_000  # values in a parsed file, aliases expanded


def _json_kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(v), "null" if v is None else type(v).__name__)


def _os_problem(e: OSError, what: str) -> str:
    if e.errno == errno.ENAMETOOLONG:
        return f"the {what} path is longer than the file system allows"
    if e.errno == errno.EACCES or e.errno == errno.EPERM:
        return f"no permission to read the {what}"
    if e.errno == errno.ELOOP:
        return f"the {what} path is a symbolic link loop"
    return f"cannot read the {what}: {e.strerror or e}"


def check_input_path(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_TEXT_BYTES) -> Path:
    """The path as a `Path` when it names a readable regular file no larger than `max_bytes`, else RftError."""
    name = str(path)
    if not name or "\x00" in name:
        raise RftError(f"{name!r}: not a valid {what} path")
    p = Path(name)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise RftError(f"{name}: {what} not found (looked in {p.absolute()})",
                       hint=None if p.is_absolute() else f"relative paths are resolved from {Path.cwd()}") from None
    except NotADirectoryError:
        raise RftError(f"{name}: {what} not found (a part of the path is a file, not a folder)") from None
    except OSError as e:
        raise RftError(f"{name[:200]}{'...' if len(name) > 200 else ''}: {_os_problem(e, what)}") from None
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        raise RftError(f"{name}: is a directory, not a {what} file")
    if not _stat.S_ISREG(st.st_mode):
        raise RftError(f"{name}: not a regular file (a {what} must be a file)")
    if st.st_size > max_bytes:
        raise RftError(f"{name}: the {what} is {st.st_size:,} bytes; the limit is {max_bytes:,}")
    return p


def read_user_bytes(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    p = check_input_path(path, what, max_bytes=max_bytes)
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise RftError(f"{path}: {_os_problem(e, what)}") from None
    if len(data) > max_bytes:
        raise RftError(f"{path}: the {what} is larger than the limit of {max_bytes:,} bytes")
    return data


def decode_utf8(data: bytes, name: str, what: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped), or RftError naming the line and column of the first bad
    byte; a NUL byte means the file is binary."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise RftError(f"{name}:{line}: the {what} looks binary (a NUL byte); expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise RftError(f"{name}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {col}); "
                       f"save the {what} as UTF-8") from None


def read_user_text(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The file's text, or one RftError naming the file and what is wrong with it."""
    return decode_utf8(read_user_bytes(path, what, max_bytes=max_bytes), str(path), what)


def _measure(value: Any, limit_depth: int, limit_size: int) -> tuple[int, int]:
    """(expanded size, depth) of a parsed value, memoised by identity: YAML aliases share one object, so a
    "billion laughs" document is measured in the time of its text while its expansion is counted in full."""
    memo: dict[int, tuple[int, int]] = {}
    active: set[int] = set()  # containers being measured: meeting one again is a cycle (YAML `&a [*a]`)
    # Iterative post-order walk: deep values cannot blow the Python stack here.
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        v, done = stack.pop()
        if not isinstance(v, (dict, list)) or (id(v) in memo and not done):
            continue
        children = list(v.values()) if isinstance(v, dict) else v
        if not done:
            if id(v) in active:
                return 1, limit_depth + 1
            active.add(id(v))
            stack.append((v, True))
            stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in memo)
            continue
        active.discard(id(v))
        size, depth = 1 + len(children), 1
        for c in children:
            if isinstance(c, (dict, list)):
                cs, cd = memo.get(id(c), (1, 1))
                size += cs
                depth = max(depth, cd + 1)
        memo[id(v)] = (min(size, limit_size + 1), depth)
        if depth > limit_depth:
            return size, depth
    return memo.get(id(value), (1, 0))


def check_depth(value: Any, name: str, what: str, *, line: int | None = None, limit: int = MAX_DEPTH,
                max_size: int = MAX_EXPANDED_VALUES) -> None:
    """RftError when containers nest deeper than `limit`, or the value, with shared (aliased) parts counted
    each time they appear, holds more than `max_size` values."""
    size, depth = _measure(value, limit, max_size)
    where = f"{name}:{line}" if line is not None else name
    if depth > limit:
        raise RftError(f"{where}: the {what} nests more than {limit} levels deep")
    if size > max_size:
        raise RftError(f"{where}: the {what} expands to more than {max_size:,} values (YAML aliases repeat "
                       "their target each time); write it out or make it smaller")


# Hooks for `json.loads` that make it strict; every reader of user JSON (here, data rows) uses them.
def reject_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use null or a string)")


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Python's json keeps the last of two equal keys silently; a duplicated "answer" is almost surely a bug.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key '{k}'")
        out[k] = v
    return out


def finite_float(text: str) -> float:
    # 1e999 parses to inf without passing through parse_constant
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"the number {text[:40]} is out of range")
    return v


def parse_json(text: str, name: str, what: str, *, line: int | None = None, expect: type | None = None,
               field: str | None = None) -> Any:
    """Parse JSON text strictly (no NaN/Infinity, no duplicate keys, bounded nesting), or raise RftError naming
    the file, line and column. `expect` (dict or list) checks the top-level kind."""
    where = f"{name}:{line}" if line is not None else name
    try:
        # 1e999 (inf) is left to the caller, which can name the field it sits in (e.g. body.temperature)
        value = json.loads(text, parse_constant=reject_json_constant, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as e:
        ln = e.lineno if line is None else line
        raise RftError(f"{name}:{ln}: the {what} is not valid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise RftError(f"{where}: the {what} nests too deeply to parse (limit {MAX_DEPTH} levels)") from None
    except ValueError as e:
        raise RftError(f"{where}: the {what} is not valid JSON: {e}") from None
    check_depth(value, name, what, line=line)
    if expect is not None and not isinstance(value, expect):
        want = "an object ({...})" if expect is dict else "an array ([...])"
        fld = f" field '{field}':" if field else ""
        raise RftError(f"{where}:{fld} the {what} must be {want}, got {_json_kind(value)}")
    return value


def parse_yaml(text: str, name: str, what: str) -> Any:
    """Parse YAML safely (no tags beyond plain data, at most `MAX_YAML_ALIASES` aliases, bounded nesting)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent, index):  # noqa: D401 - yaml's hook
            if self.check_event(yaml.events.AliasEvent):
                _Loader.aliases += 1
                if _Loader.aliases > MAX_YAML_ALIASES:
                    raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name); write the values out")
            return super().compose_node(parent, index)

    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        ln = f":{mark.line + 1}" if mark is not None else ""
        col = f" (column {mark.column + 1})" if mark is not None else ""
        raise RftError(f"{name}{ln}: the {what} is not valid YAML: {e.problem or e}{col}") from None
    except yaml.YAMLError as e:
        raise RftError(f"{name}: the {what} is not valid YAML: {e}") from None
    except RecursionError:
        raise RftError(f"{name}: the {what} nests too deeply to parse (limit {MAX_DEPTH} levels)") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer of more than 4300 digits
        raise RftError(f"{name}: the {what} has a value that cannot be read: {str(e)[:200]}") from None
    check_depth(value, name, what)
    return value


def load_json_file(path: str | os.PathLike, what: str, *, expect: type | None = dict,
                   max_bytes: int = MAX_TEXT_BYTES) -> Any:
    name = str(path)
    return parse_json(read_user_text(path, what, max_bytes=max_bytes), name, what, expect=expect)


def load_mapping_file(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_TEXT_BYTES) -> dict:
    """A YAML or JSON file (by suffix; YAML otherwise) whose top level must be a mapping."""
    name = str(path)
    text = read_user_text(path, what, max_bytes=max_bytes)
    if name.endswith(".json"):
        value = parse_json(text, name, what)
    else:
        value = parse_yaml(text, name, what)
    if not isinstance(value, dict):
        raise RftError(f"{name}: the {what} must be a mapping of keys to values at the top level, "
                       f"got {_json_kind(value)}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise RftError(f"{name}: the {what} has a key that is not a string: {bad[0]!r}")
    return value


def check_output_file(path: str | os.PathLike, what: str, *, overwrite: bool = True) -> Path:
    """An output file path that can be written: not a directory, its folder exists or can be made, the name fits
    the file system. With `overwrite=False` an existing file is refused."""
    name = str(path)
    if not name or "\x00" in name:
        raise RftError(f"{name!r}: not a valid {what} path")
    p = Path(name)
    try:
        if p.is_dir():
            raise RftError(f"{name}: is a directory; the {what} must be a file path")
        if p.exists() and not overwrite:
            raise RftError(f"{name}: already exists; choose another {what} path or remove it first")
        parent = p.parent
        if parent.exists() and not parent.is_dir():
            raise RftError(f"{name}: its folder {parent} is a file")
        if len(p.name.encode()) > os.pathconf(parent if parent.exists() else Path("."), "PC_NAME_MAX"):
            raise RftError(f"{name[:80]}...: the {what} name is longer than the file system allows")
    except OSError as e:
        raise RftError(f"{name[:200]}: {_os_problem(e, what)}") from None
    return p


def check_output_dir(path: str | os.PathLike, what: str, *, allow_existing_empty: bool = True) -> Path:
    """An output folder that does not exist yet (or exists and is empty): never one that is a file or holds files,
    so nothing already there is overwritten or mixed in."""
    name = str(path)
    if not name or "\x00" in name:
        raise RftError(f"{name!r}: not a valid {what} path")
    p = Path(name)
    try:
        if p.exists():
            if not p.is_dir():
                raise RftError(f"{name}: is a file; the {what} must be a folder")
            if not allow_existing_empty or any(p.iterdir()):
                raise RftError(f"{name}: the {what} already exists and is not empty; choose a new folder "
                               "(nothing there was changed)")
        else:
            anc = p.parent
            while not anc.exists() and anc != anc.parent:
                anc = anc.parent
            if anc.exists() and not anc.is_dir():
                raise RftError(f"{name}: {anc} is a file, not a folder")
            for part in p.parts:
                if len(part.encode()) > 255:
                    raise RftError(f"{name[:80]}...: a folder name is longer than the file system allows")
    except OSError as e:
        raise RftError(f"{name[:200]}: {_os_problem(e, what)}") from None
    return p


