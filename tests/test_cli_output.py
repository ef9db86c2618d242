"""rft.cli.output: the one JSON/table/error writer every `rft` command uses (in-process; the commands themselves
are tested through the installed console script in tests/test_cli*.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from rft.cli import output
from rft.views import TableView


def test_print_json_is_indented_with_str_for_other_values(capsys):
    output.print_json({"a": [1, 2], "p": Path("/x")})
    text = capsys.readouterr().out
    assert text == json.dumps({"a": [1, 2], "p": "/x"}, indent=2) + "\n"
    output.print_json_line({"id": 3, "p": Path("/y")})
    assert capsys.readouterr().out == '{"id": 3, "p": "/y"}\n'


def test_print_error_shows_the_message_as_typed(capsys, monkeypatch):
    monkeypatch.setattr(output, "err", Console(stderr=True, width=200))
    output.print_error("bad [bold]x[/bold]")
    assert capsys.readouterr().err == "error: bad [bold]x[/bold]\n"


def test_table_columns_fold_and_no_wrap_by_name_or_position():
    t = output.table("", "value", "x", title="T", fold=(1,), no_wrap=("",), show_header=False)
    assert [c.header for c in t.columns] == ["", "value", "x"] and t.title == "T" and not t.show_header
    assert [c.overflow for c in t.columns] == ["ellipsis", "fold", "ellipsis"]
    assert [c.no_wrap for c in t.columns] == [True, False, False]
    assert [c.overflow for c in output.table("a", "b", fold=True).columns] == ["fold", "fold"]
    assert [c.overflow for c in output.table("a", "b", fold=("b",)).columns] == ["ellipsis", "fold"]


def test_view_table_renders_title_headers_and_cells():
    view = TableView("jobs", ("id", "status"), (("ftjob-1", "running"), ("ftjob-2", "")))
    c = Console(file=io.StringIO(), width=80)
    c.print(output.view_table(view))
    text = c.file.getvalue()
    assert "jobs" in text.splitlines()[0]
    assert [ln.split("│")[1].strip() for ln in text.splitlines() if "ftjob" in ln] == ["ftjob-1", "ftjob-2"]
    assert "running" in text and "status" in text


def _imports(path: Path) -> set[str]:
    """Every rft module a source file imports, at any level (inside functions too)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("rft")}


def test_no_cli_module_imports_the_entry_point():
    """rft.cli.main imports every command module; a command module importing it back is a cycle (as
    registry_cmds once did for the training runner, now rft.cli.training)."""
    cli = Path(output.__file__).parent
    for f in cli.glob("*.py"):
        if f.name != "main.py":
            assert not {m for m in _imports(f) if m.startswith("rft.cli.main")}, f.name
