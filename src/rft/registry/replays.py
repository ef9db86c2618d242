"""Grader replays (`rft replay`, `rft eval --replay`): the rows of table `replays` (migration 0006).

`add_replay(reg, job_id=..., eval_id=..., old_grader_sha256=..., new_grader_sha256=..., summary=..., path=...)`
stores one replay and returns its id (`replay-...`); `list_replays(reg, job_id=...)` / `list_replays(reg,
eval_id=...)` return them oldest first; `get_replay(reg, replay_id)` one of them (exact id or unique prefix).
A replay re-grades samples that are already stored with another grader; nothing is generated. Its row keeps
both graders' sha256 so that lineage can say which grader a checkpoint was trained with and which graders have
judged its samples since.

A store module: it records what it is given (the summary is the replay's JSON without its per-item records,
which live in the replay folder named by `path`); it checks no roles and computes nothing.
How to run: `python -c "from rft.registry import Registry; from rft.registry.replays import list_replays;
print(list_replays(Registry(), job_id='ftjob-...'))"`.
"""

from __future__ import annotations

import json
import secrets
import time

import sqlalchemy as sa

from rft.errors import RftError
from rft.registry.access import current_principal, default_actor
from rft.registry.db import replays


def new_replay_id() -> str:
    return "replay-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _jsonable(o):
    return json.loads(json.dumps(o, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


def add_replay(reg, *, old_grader_sha256: str, new_grader_sha256: str, summary: dict, job_id: str | None = None,
               eval_id: str | None = None, path: str | None = None, replay_id: str | None = None,
               created_by: str | None = None, created_at: float | None = None) -> str:
    """Store one replay; returns its id."""
    if not job_id and not eval_id:
        raise ValueError("a replay is of a job or of an evaluation")
    rid = replay_id or new_replay_id()
    p = current_principal()
    team = getattr(p, "team", None) if p is not None else None
    with reg.engine.begin() as c:
        c.execute(replays.insert().values(
            id=rid, job_id=job_id, eval_id=eval_id, old_grader_sha256=old_grader_sha256,
            new_grader_sha256=new_grader_sha256, created_at=created_at if created_at is not None else time.time(),
            created_by=created_by or default_actor(), team=team, path=str(path) if path else None,
            summary=_jsonable(summary)))
    return rid


def list_replays(reg, *, job_id: str | None = None, eval_id: str | None = None) -> list[dict]:
    """Replays of a job (or of an evaluation), oldest first."""
    q = sa.select(replays).order_by(replays.c.created_at, replays.c.id)
    if job_id:
        q = q.where(replays.c.job_id == job_id)
    if eval_id:
        q = q.where(replays.c.eval_id == eval_id)
    with reg.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q)]


def get_replay(reg, replay_id: str) -> dict:
    """One replay by exact id or unique prefix."""
    rid = str(replay_id).strip()
    with reg.engine.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(
            sa.select(replays).where(sa.func.substr(replays.c.id, 1, len(rid)) == rid).limit(3))]
    exact = [r for r in rows if r["id"] == rid]
    if exact:
        return exact[0]
    if len(rows) == 1 and rid:
        return rows[0]
    raise RftError(f"no replay '{rid}' in the registry" if not rows else f"replay id '{rid}' is ambiguous",
                   hint="see the replays in `rft lineage CKPT --json`")
