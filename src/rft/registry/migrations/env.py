"""Alembic's environment for the registry's migrations (`rft.registry.db.migrate` runs them).

`migrate` passes its open connection, inside the transaction that has already checked the database, as
`config.attributes["connection"]`; the migrations then run in that same transaction (alembic sees it as
external and opens none of its own). Without one (`alembic -x url=... upgrade head` with a config whose
script_location is this folder), an engine is made from `-x url=` or the config's `sqlalchemy.url`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
