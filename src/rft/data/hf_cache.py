"""`hf:<name>[:<config>][@<split>]`: a dataset from the local Hugging Face cache, never from the network.

What: `locate(ref, split)` finds the files of one split of a dataset that the `datasets` library (or the hub
client) has already put on this machine, and `scan_hf(ref, split)` reads and checks its rows exactly as a
JSONL file's rows are checked (they need a `messages` column; see `rft.data.parquet` for how Arrow values become
JSON). `datasets` itself is not needed: its cache is read with pyarrow.
Where it looks, in order:
  1. the datasets cache, `$HF_DATASETS_CACHE`, else `$HF_HOME/datasets`, else `~/.cache/huggingface/datasets`:
     `<namespace>___<name>/<config>/<version>/<hash>/<name>-<split>[-NNNNN-of-NNNNN].arrow` (Arrow IPC stream
     files, as `datasets.load_dataset` leaves them; a namespace-less dataset is in `<name>/`);
  2. the hub cache, `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`:
     `datasets--<namespace>--<name>/snapshots/<revision>/**/*.parquet`, the Parquet files of a dataset
     repository (`huggingface_hub.snapshot_download(repo_type="dataset")`); a split's files are those named
     `<split>.parquet`, `<split>-*.parquet` or lying in a folder named `<split>`.
Naming: without `:<config>` the only config is used (or `default` when there are several, else an error lists
them); without `@<split>` the split asked for by the caller (`train` for training files, `validation` for
validation files and `rft eval`); a split the cache does not have is an error listing the ones it has.
Simplified: several versions or hashes of one config in the datasets cache: the highest version and the newest
hash are read; split slicing (`train[:10%]`) is not supported (use `rft.eval`'s `--limit`); a missing dataset is
an RftError that says how to fill the cache, never a download.
How to run: `python -c "from rft.data import load_dataset; print(len(load_dataset('hf:openai/gsm8k:main@test')))"`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rft.data.jsonl import MAX_FILE_BYTES, check_row
from rft.data.parquet import _one_line, pyarrow_module, scan_table_batches
from rft.errors import Problem, RftError, did_you_mean
from rft.userinput import read_user_bytes

PREFIX = "hf:"
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REF = re.compile(rf"^(?P<repo>{_PART}(?:/{_PART})?)(?::(?P<config>{_PART}))?(?:@(?P<split>{_PART}))?$")
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")
FORM = "hf:<name>[:<config>][@<split>], e.g. hf:openai/gsm8k:main@test"


@dataclass(frozen=True)
class HfRef:
    """A parsed `hf:` reference; `config` and `split` are None when the reference leaves them out."""

    repo: str  # "name" or "namespace/name"
    config: str | None
    split: str | None

    def canonical(self, config: str | None, split: str) -> str:
        return f"{PREFIX}{self.repo}" + (f":{config}" if config else "") + f"@{split}"


@dataclass(frozen=True)
class HfFiles:
    """The files holding one split: Arrow stream files ("arrow") or Parquet files ("parquet"), in row order."""

    ref: str  # the canonical reference, hf:<repo>[:<config>]@<split>
    kind: str
    files: tuple[Path, ...]
    folder: Path


def is_hf_ref(ref: str) -> bool:
    return str(ref).startswith(PREFIX)


def parse_hf_ref(ref: str) -> HfRef:
    m = _REF.match(str(ref)[len(PREFIX):]) if is_hf_ref(ref) else None
    if m is None:
        shown = ref if len(ref) <= 200 else ref[:200] + "..."
        raise RftError(f"'{shown}' is not a Hugging Face dataset reference; write {FORM}")
    return HfRef(m["repo"], m["config"], m["split"])


def datasets_cache() -> Path:
    """The datasets library's cache folder, from the same variables it reads."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    return _hf_home() / "datasets"


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return _hf_home() / "hub"


def _hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "huggingface"


def _subdirs(p: Path) -> list[Path]:
    try:
        return sorted(x for x in p.iterdir() if x.is_dir())
    except OSError:
        return []


def _child(parent: Path, name: str) -> Path | None:
    """parent/name, matched exactly, else case-insensitively (the cache keeps the repo's spelling)."""
    exact = parent / name
    if exact.is_dir():
        return exact
    low = [d for d in _subdirs(parent) if d.name.lower() == name.lower()]
    return low[0] if len(low) == 1 else None


def _version_key(name: str) -> tuple:
    return tuple(int(x) if x.isdigit() else -1 for x in name.split("."))


def _pick_config(ref: HfRef, names: list[str], where: str) -> str:
    if ref.config is not None:
        for n in names:  # packaged builders add a hash to the config id: default-1a2b3c
            if n == ref.config or n.startswith(ref.config + "-"):
                return n
        raise RftError(f"{PREFIX}{ref.repo}: the cache has no config '{ref.config}'{did_you_mean(ref.config, names)}"
                       f" (it has {', '.join(names)}) in {where}")
    if len(names) == 1:
        return names[0]
    if "default" in names:
        return "default"
    raise RftError(f"{PREFIX}{ref.repo} has several configs in the cache: {', '.join(names)}",
                   hint=f"name one: {PREFIX}{ref.repo}:<config>, e.g. {PREFIX}{ref.repo}:{names[0]}")


def _arrow_splits(folder: Path) -> dict[str, list[Path]]:
    """split -> its Arrow files in shard order, from the file names `<dataset>-<split>[-NNNNN-of-NNNNN].arrow`."""
    info_name = None
    try:
        info = json.loads((folder / "dataset_info.json").read_text())
        info_name = info.get("dataset_name") if isinstance(info, dict) else None
    except (OSError, ValueError):
        pass
    out: dict[str, list[Path]] = {}
    for f in sorted(folder.glob("*.arrow")):
        stem = _SHARD.sub("", f.stem)
        if isinstance(info_name, str) and stem.startswith(info_name + "-"):
            split = stem[len(info_name) + 1:]
        else:
            split = stem.rsplit("-", 1)[-1]  # split names have no '-' (datasets allows \w+ and dots)
        out.setdefault(split, []).append(f)
    return out


def _from_datasets_cache(ref: HfRef, split: str) -> HfFiles | None:
    root = datasets_cache()
    ns, _, name = ref.repo.rpartition("/")
    ds_dir = _child(root, f"{ns}___{name}" if ns else name)
    if ds_dir is None:
        return None
    configs = [d.name for d in _subdirs(ds_dir)]
    if not configs:
        return None
    config = _pick_config(ref, configs, str(ds_dir))
    versions = sorted(_subdirs(ds_dir / config), key=lambda d: _version_key(d.name))
    candidates = []
    for v in reversed(versions):
        hashes = [h for h in _subdirs(v) if not h.name.endswith(".incomplete") and any(h.glob("*.arrow"))]
        if hashes:
            candidates = sorted(hashes, key=lambda h: h.stat().st_mtime)
            break
    if not candidates:
        return None
    folder = candidates[-1]
    splits = _arrow_splits(folder)
    want = ref.split or split
    if want not in splits:
        raise _no_split(ref, config if ref.config or len(configs) > 1 else None, want, sorted(splits), folder)
    return HfFiles(ref.canonical(ref.config or (config if len(configs) > 1 else None), want), "arrow",
                   tuple(splits[want]), folder)


def _parquet_split(rel: Path) -> str:
    """The split a Parquet file of a dataset repository belongs to: its name without the shard suffix
    (`train-00000-of-00002.parquet`, `train.parquet`, `train-0.parquet`), or its folder's name when the name is
    only a number (`<config>/<split>/0000.parquet`, the hub's Parquet conversion)."""
    stem = re.sub(r"-\d+$", "", _SHARD.sub("", rel.stem))
    if (stem.isdigit() or not stem) and len(rel.parts) >= 2:
        return rel.parts[-2]
    return stem


def _top(r: Path) -> str | None:
    """The config folder a file lies in (None: at the top or under `data/`, the default config's place)."""
    return r.parts[0] if len(r.parts) > 1 and r.parts[0] != "data" else None


def _from_hub_cache(ref: HfRef, split: str) -> HfFiles | None:
    ns, _, name = ref.repo.rpartition("/")
    repo_dir = _child(hub_cache(), "datasets--" + (f"{ns}--{name}" if ns else name))
    if repo_dir is None:
        return None
    snap = None
    try:
        commit = (repo_dir / "refs" / "main").read_text().strip()
        snap = repo_dir / "snapshots" / commit if (repo_dir / "snapshots" / commit).is_dir() else None
    except OSError:
        pass
    if snap is None:
        snaps = sorted(_subdirs(repo_dir / "snapshots"), key=lambda d: d.stat().st_mtime)
        if not snaps:
            return None
        snap = snaps[-1]
    files = sorted(p for p in snap.rglob("*.parquet") if p.is_file())
    if not files:
        return None
    rels = [f.relative_to(snap) for f in files]
    tops = sorted({t for t in map(_top, rels) if t})
    config = None
    if ref.config is not None:
        if ref.config not in tops:
            raise RftError(f"{PREFIX}{ref.repo}: the cached repository has no config folder '{ref.config}'"
                           f"{did_you_mean(ref.config, tops)} (it has {', '.join(tops) or 'none'}) in {snap}")
        config = ref.config
        rels = [r for r in rels if r.parts[0] == config]
    by_split: dict[str, list[Path]] = {}
    for r in rels:
        by_split.setdefault(_parquet_split(r), []).append(r)
    want = ref.split or split
    chosen = by_split.get(want, [])
    if config is None and len({_top(r) for r in chosen}) > 1:
        raise RftError(f"{PREFIX}{ref.repo} has several configs in the hub cache: {', '.join(tops)}",
                       hint=f"name one: {PREFIX}{ref.repo}:<config>")
    if not chosen:
        raise _no_split(ref, config, want, sorted(by_split), snap)
    return HfFiles(ref.canonical(config, want), "parquet", tuple(snap / r for r in chosen), snap)


def _no_split(ref: HfRef, config: str | None, want: str, have: list[str], folder: Path) -> RftError:
    base = f"{PREFIX}{ref.repo}" + (f":{config}" if config else "")
    return RftError(f"{base}: the cache has no split '{want}'{did_you_mean(want, have)}; it has "
                    f"{', '.join(have) or 'none'} (in {folder})",
                    hint=f"name the split: {base}@{have[0] if have else '<split>'}")


def locate(ref: str, split: str = "train") -> HfFiles:
    """The cached files of `ref`'s split (the reference's `@split`, else `split`), or an RftError."""
    r = parse_hf_ref(ref)
    found = _from_datasets_cache(r, split) or _from_hub_cache(r, split)
    if found is None:
        raise RftError(
            f"{ref}: not in the local Hugging Face cache (looked in {datasets_cache()} and {hub_cache()}); "
            "rft never downloads data",
            hint=f"on a machine with network, `python -c \"import datasets; datasets.load_dataset('{r.repo}')\"` "
                 "fills the cache (copy it here and point HF_HOME or HF_DATASETS_CACHE at it); or save the "
                 "rows as JSONL or Parquet and pass that file")
    return found


def _read_split_file(path: Path, total: list[int]) -> bytes:
    """The bytes of one file of a split, counted into `total` against the in-memory dataset limit."""
    data = read_user_bytes(path, "dataset", max_bytes=MAX_FILE_BYTES)
    total[0] += len(data)
    if total[0] > MAX_FILE_BYTES:
        raise RftError(f"{path}: the split is larger than {MAX_FILE_BYTES:,} bytes, the limit for a dataset held in "
                       "memory", hint="use a smaller split or config")
    return data


def _read_arrow(path: Path, total: list[int]):
    pa = pyarrow_module()
    data = _read_split_file(path, total)
    try:
        return pa.ipc.open_stream(pa.BufferReader(data)).read_all().to_batches()
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.BufferReader(data)).read_all().to_batches()


def _read_parquet(path: Path, total: list[int]):
    pa = pyarrow_module()
    import pyarrow.parquet as pq

    data = _read_split_file(path, total)
    return list(pq.ParquetFile(pa.BufferReader(data)).iter_batches(batch_size=1024))


def scan_hf(ref: str, split: str = "train", *, check=check_row,
            ) -> tuple[list[dict], list[int], list[Problem], int, HfFiles]:
    """Read and check one cached split: (rows, row numbers, problems, n_rows, files). Problems name the
    canonical reference (`hf:<repo>[:<config>]@<split>`) and the 1-based row number within the split.
    A missing dataset, config or split is an RftError (there is nothing to check)."""
    found = locate(ref, split)
    pa = pyarrow_module()
    read = _read_arrow if found.kind == "arrow" else _read_parquet
    total = [0]
    batches = []
    for f in found.files:
        try:
            batches += read(f, total)
        except (pa.ArrowException, OSError, ValueError) as e:
            return [], [], [Problem(f"cannot read {f}: {_one_line(e)}", file=found.ref)], 0, found
    names = set(batches[0].schema.names) if batches else set()
    if batches and "messages" not in names:
        return [], [], [Problem(f"no 'messages' column (the prompt: a list of {{role, content}} structs); the "
                                f"columns are {', '.join(sorted(names))}", file=found.ref, field="messages")], \
            sum(b.num_rows for b in batches), found
    rows, numbers, problems, n_rows = scan_table_batches(batches, found.ref, check=check)
    if n_rows == 0:
        problems.append(Problem("the split has no rows", file=found.ref))
    return rows, numbers, problems, n_rows, found
