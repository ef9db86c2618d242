"""`rft data list`: the built-in datasets with a one-line description each (`rft.api.datasets`).

What: `data_list(as_json)` prints a table of every built-in dataset reference (`builtin:arithmetic` and
`builtin:reasoning_gym/<task>` for every reasoning-gym task) with its description, or the list as JSON
(`{"ref", "name", "family", "description"}` each). `rft.cli.main` registers the command in its `data` group.
Simplified: the descriptions come from the generators (reasoning-gym's task docstrings, cut to one line).
How to run: `rft data list`, `rft data list --json`.
"""

from __future__ import annotations

from rft.cli.output import out, print_json, table


def data_list(as_json: bool) -> None:
    from rft import api

    rows = api.datasets()
    if as_json:
        print_json(rows)
        return
    t = table("dataset", "description", title=f"{len(rows)} built-in datasets (options: ?n=..&seed=..&split=..)",
              fold=("description",), no_wrap=("dataset",))
    for r in rows:
        t.add_row(r["ref"], r["description"])
    out.print(t)
