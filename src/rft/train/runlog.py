"""The run folder: events.jsonl, metrics.jsonl, samples/, checkpoints/, reports.

Every line is appended and fsynced as it happens, so a crash loses nothing already written. Whole files
(job.json, reports, resolved_config.yaml, a step's samples) are replaced durably with `rft.fsutil.write_atomic`
(temp file, fsync, rename, fsync of the folder): a reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from rft.fsutil import write_atomic
from rft.home import runs_dir


def new_job_id() -> str:
    return "ftjob-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class RunLog:
    def __init__(self, run_dir: Path, job_id: str):
        self.dir = Path(run_dir)
        self.job_id = job_id
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "samples").mkdir(exist_ok=True)
        (self.dir / "checkpoints").mkdir(exist_ok=True)
        ev = self.dir / "events.jsonl"
        # a resumed job appends to its run folder: event ids continue from the ones already written
        self._n_events = sum(1 for _ in open(ev, encoding="utf-8")) if ev.exists() else 0
        self.registry = None

    def attach(self, registry) -> None:
        """Also record events (and metrics, via the loop) in the registry."""
        self.registry = registry

    @classmethod
    def create(cls, output_dir: str | None, job_id: str | None = None) -> "RunLog":
        job_id = job_id or new_job_id()
        d = Path(output_dir) if output_dir else runs_dir() / job_id
        return cls(d, job_id)

    def _append(self, name: str, obj: dict) -> None:
        with open(self.dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj, ensure_ascii=False, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def event(self, message: str, *, level: str = "info", type: str = "message", data: Any = None) -> dict:
        self._n_events += 1
        ev = {
            "id": f"ftevent-{self.job_id}-{self._n_events:05d}",
            "object": "fine_tuning.job.event",
            "created_at": int(time.time()),
            "level": level,
            "message": message,
            "type": type,
            "data": data,
        }
        self._append("events.jsonl", ev)
        if self.registry is not None:
            self.registry.add_event(self.job_id, level, type, message, data)
        return ev

    def metrics(self, row: dict) -> None:
        self._append("metrics.jsonl", row)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric rows past `after_step` (a resumed run re-runs those steps); rewritten atomically."""
        p = self.dir / "metrics.jsonl"
        if not p.exists():
            return
        keep = []
        for line in p.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line from a kill
            if row.get("step", 0) <= after_step:
                keep.append(line)
        self.write_text("metrics.jsonl", "".join(x + "\n" for x in keep))

    def samples(self, step: int, rows: list[dict]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False, default=_jsonable) + "\n" for r in rows)
        write_atomic(self.dir / "samples" / f"step_{step:06d}.jsonl", text.encode("utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable))

    def write_text(self, name: str, text: str) -> Path:
        p = self.dir / name
        write_atomic(p, text.encode("utf-8"))
        return p


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
