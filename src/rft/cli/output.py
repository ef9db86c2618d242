"""The one place the `rft` command writes to the terminal: JSON, tables, error lines.

What: `out` and `err` (rich consoles on stdout and stderr), `print_json` (the `--json` output of every command:
indented, `default=str`, one trailing newline), `print_json_line` (one object per line, for streams such as
`rft jobs events --json`), `table` (a rich table from column names), `print_view` (a `rft.views.TableView`
rendered as a rich table) and `print_error` (the `error: ...` line every user mistake ends with).
Simplified: styling is rich's default; the data shown comes from `rft.views` and the library, never from here.
How to run: every `rft` command uses it; `python -c "from rft.cli.output import print_json; print_json({'a': 1})"`.
"""

from __future__ import annotations

import json
import sys
from typing import Collection

from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

out = Console()
err = Console(stderr=True)


def print_json(obj) -> None:
    """`obj` as indented JSON on stdout (values JSON cannot hold are written as their str())."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_json_line(obj) -> None:
    """`obj` as one line of JSON on stdout (JSON Lines)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def print_error(message: str) -> None:
    """`error: MESSAGE` on stderr; the message is shown as typed (no rich markup), wrapped by the terminal."""
    err.print(f"[bold red]error:[/bold red] {rich_escape(message)}", markup=True, highlight=False, soft_wrap=True)


def table(*columns: str, title: str | None = None, fold: bool | Collection[str | int] = (),
          no_wrap: Collection[str | int] = (), **options) -> Table:
    """A rich table with these column headers. `fold`: True, or the columns (headers or positions) whose long
    values wrap onto more lines instead of being cut short; `no_wrap`: columns never wrapped; `options` go to
    `rich.table.Table`."""
    t = Table(title=title, **options)
    for i, c in enumerate(columns):
        kw = {}
        if fold is True or (fold is not False and (c in fold or i in fold)):
            kw["overflow"] = "fold"
        if c in no_wrap or i in no_wrap:
            kw["no_wrap"] = True
        t.add_column(c, **kw)
    return t


def view_table(view, *, fold: bool | Collection[str | int] = (), no_wrap: Collection[str | int] = (),
               **options) -> Table:
    """A `rft.views.TableView` as a rich table (its title, headers and text cells as they are)."""
    t = table(*view.columns, title=view.title, fold=fold, no_wrap=no_wrap, **options)
    for row in view.rows:
        t.add_row(*row)
    return t


def print_view(view, **kw) -> None:
    """`view_table(view, **kw)` printed on stdout."""
    out.print(view_table(view, **kw))
