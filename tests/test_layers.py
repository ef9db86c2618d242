"""The layering of src/rft: each package imports only the layers below it, and no module imports itself back.

Two independent checks:
- `lint-imports` (import-linter, the contracts in pyproject.toml): the layers contract (cli on top, errors at the
  bottom; every top-level module must have a layer) and no cycles among the modules of any package.
- an AST walk of every file under src/rft written here: the import graph among rft's modules, counting every
  import statement wherever it sits (inside functions, under TYPE_CHECKING) and the parent packages an import
  runs, must have no cycle; and rft.config, the typed job spec, imports nothing but the ground floor.
  It sees every file, including folders without an `__init__.py` (import-linter's graph skips those).

Run: .venv/bin/python -m pytest -q tests/test_layers.py
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
GROUND_FLOOR = {"rft.errors", "rft.types", "rft.hashing", "rft.fsutil", "rft.userinput", "rft.home"}


# ------------------------------------------------------------------------------------- the AST graph
def module_files(src: Path, package: str = "rft") -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under src/<package> (a package is its __init__.py)."""
    out = {}
    for f in sorted((src / package).rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module that `name` is or lies in (`rft.a.b.func` -> `rft.a.b`), or None outside the graph."""
    while name and name not in modules:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name or None


def import_edges(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """importer -> {imported module: first line}. `from p import x` counts p.x when it is a module, else p; an
    import of a.b.c also runs a and a.b (those not already ancestors of the importer, which are running)."""
    edges: dict[str, dict[str, int]] = {m: {} for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        ancestors = {".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 2)}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    node_mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    node_mod = node.module or ""
                targets = [f"{node_mod}.{a.name}" if f"{node_mod}.{a.name}" in modules else node_mod
                           for a in node.names]
            else:
                continue
            for t in targets:
                owner = _owner(t, modules)
                if owner is None:
                    continue
                parts = owner.split(".")
                for i in range(1, len(parts) + 1):
                    run = ".".join(parts[:i])
                    if run in modules and run not in ancestors and run != mod:
                        edges[mod].setdefault(run, node.lineno)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges) + 100))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    out = []
    for comp in comps:
        inside = set(comp)
        start = min(comp)
        path, seen = [start], {start}
        while True:  # walk inside the component until a module repeats: that closes a cycle
            nxt = min(w for w in edges[path[-1]] if w in inside)
            if nxt in seen:
                out.append(path[path.index(nxt):] + [nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return out


def describe(cycle: list[str], edges: dict[str, dict[str, int]], modules: dict[str, Path], base: Path = ROOT) -> str:
    return "\n".join(f"  {modules[a].relative_to(base).as_posix()}:{edges[a][b]}: {a} imports {b}"
                     for a, b in zip(cycle, cycle[1:]))


# ------------------------------------------------------------------------------------------ the tests
def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.exists(), f"{lint} is missing: install the dev extra (make install)"
    r = subprocess.run([str(lint), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-20000:] + r.stderr[-5000:]
    assert "0 broken" in r.stdout


def test_no_import_cycle_among_rft_modules_at_any_level():
    modules = module_files(SRC)
    edges = import_edges(modules)
    found = cycles(edges)
    assert not found, "import cycles (imports inside functions count):\n" + "\n\n".join(
        describe(c, edges, modules) for c in found)


def test_config_imports_only_the_ground_floor():
    modules = module_files(SRC)
    edges = import_edges(modules)
    upward = {m: line for m, line in edges["rft.config"].items() if m not in GROUND_FLOOR}
    assert not upward, "rft.config must be a leaf: " + ", ".join(f"src/rft/config.py:{ln} imports {m}"
                                                                 for m, ln in sorted(upward.items()))


def test_the_ast_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    """The checker itself: a cycle through a function-level import, and one through a parent package's
    __init__, are found and named with file and line; relative imports resolve."""
    pkg = tmp_path / "rft"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\n\ndef f():\n    from rft import b\n    return b\n")
    (pkg / "b.py").write_text("from rft.a import f\n")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import x\n")
    (pkg / "sub" / "leaf.py").write_text("x = 1\n")
    (pkg / "c.py").write_text("from rft.sub.leaf import x\n")  # runs rft.sub, which imports only its leaf
    modules = module_files(tmp_path)
    edges = import_edges(modules)
    assert edges["rft.a"] == {"rft.b": 4} and edges["rft.b"] == {"rft.a": 1}
    assert edges["rft.sub"] == {"rft.sub.leaf": 1} and edges["rft.c"] == {"rft.sub": 1, "rft.sub.leaf": 1}
    assert cycles(edges) == [["rft.a", "rft.b", "rft.a"]]
    assert "rft/a.py:4: rft.a imports rft.b" in describe(cycles(edges)[0], edges, modules, tmp_path)
    (pkg / "sub" / "leaf.py").write_text("def g():\n    import rft.c\n")  # rft.c runs rft.sub, which runs leaf
    found = cycles(import_edges(module_files(tmp_path)))
    assert len(found) == 2 and ["rft.c", "rft.sub", "rft.sub.leaf", "rft.c"] in found


@pytest.mark.parametrize("module", sorted(GROUND_FLOOR))
def test_the_ground_floor_imports_only_the_ground_floor(module):
    modules = module_files(SRC)
    edges = import_edges(modules)
    assert set(edges[module]) <= GROUND_FLOOR, f"{module} imports {sorted(set(edges[module]) - GROUND_FLOOR)}"
