"""The serve package's import structure: `rft.serve.app` picks between the local app and the remote proxy and
imports both; neither imports it or the other (counting imports inside functions), so there is no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import rft.serve

SERVE = Path(rft.serve.__file__).parent


def _imports(name: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse((SERVE / f"{name}.py").read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("rft.serve")}


def test_local_and_remote_import_neither_each_other_nor_the_entry():
    for name, other in (("local", "remote"), ("remote", "local")):
        bad = {m for m in _imports(name) if m.startswith((f"rft.serve.{other}", "rft.serve.app"))
               or m in ("rft.serve", "rft.serve.create_app", "rft.serve.serve")}
        assert not bad, (name, bad)


def test_the_shared_front_door_imports_no_app():
    assert not {m for m in _imports("guard") if m.startswith(("rft.serve.app", "rft.serve.local", "rft.serve.remote"))}
    assert not {m for m in _imports("worker") if m.startswith(("rft.serve.app", "rft.serve.local", "rft.serve.remote"))}
