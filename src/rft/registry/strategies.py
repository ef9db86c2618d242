"""Strategy tables in the registry (table `strategy_tables`, migration 0006): one row per `rft strategies` run.

`save_strategy_table(reg, table)` stores the table JSON (which lists the ids of every job and eval report it
started) with its creator and team; `get_strategy_table(reg, id)` and `list_strategy_tables(reg)` read them back
(a team member sees only the team's tables, as with jobs).
How to run: `python -c "from rft.registry import Registry; from rft.registry.strategies import list_strategy_tables as l; print(l(Registry()))"`.
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from rft.errors import RftError
from rft.registry.access import owner_fields, visible_team
from rft.registry.db import strategy_tables


def _jsonable(o):
    return json.loads(json.dumps(o, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


def save_strategy_table(reg, table: dict) -> str:
    """Store `table` (its `id`, `spec_sha256` and `paths.json` are recorded as columns); returns the id."""
    with reg.engine.begin() as c:
        c.execute(strategy_tables.insert().values(
            id=table["id"], created_at=time.time(), spec_sha256=table.get("spec_sha256"),
            path=(table.get("paths") or {}).get("json"), table=_jsonable(table), **owner_fields()))
    return table["id"]


def get_strategy_table(reg, table_id: str) -> dict:
    q = sa.select(strategy_tables).where(strategy_tables.c.id == table_id)
    team = visible_team()
    if team is not None:
        q = q.where(strategy_tables.c.team == team)
    with reg.engine.connect() as c:
        r = c.execute(q).first()
    if r is None:
        raise RftError(f"no strategy table '{table_id}'")
    return dict(r._mapping)


def list_strategy_tables(reg, *, limit: int = 50) -> list[dict]:
    q = sa.select(strategy_tables.c.id, strategy_tables.c.created_at, strategy_tables.c.created_by,
                  strategy_tables.c.team, strategy_tables.c.spec_sha256, strategy_tables.c.path) \
        .order_by(strategy_tables.c.created_at.desc()).limit(limit)
    team = visible_team()
    if team is not None:
        q = q.where(strategy_tables.c.team == team)
    with reg.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q)]
