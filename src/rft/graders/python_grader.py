"""OpenAI `python` grader: user code defining `grade(sample, item) -> float`, run in the sandbox.

What: `{type: "python", name, source, image_tag?}`. Validation (before any sampling) rejects source over
256 kB, syntax errors (with the line), a source without a top-level `grade`, a `grade` that cannot take
`(sample, item)`, relative imports and module-level imports of packages that are not installed. At run time
each call goes to a warm worker of `rft.graders.sandbox` (see the package docstring for what is and is not
isolated):

- a number (int or float, not bool) that is finite as the float32 the reward tensor holds (|x| up to about
  3.4028235e38) -> the score. Scores outside [0, 1] are kept as they are, not clipped: OpenAI documents no
  range for python graders (only score_model has one, `range`, default [0, 1]), and the advantage normalises
  within each group, so a 0..10 scale trains like 0..1 under grpo (dr_grpo and the mean reward metric do see
  the scale);
- an exception, `sys.exit()`, a module that fails to load, or a return value that is not such a number
  (None, NaN, inf, 1e39, True, a string) -> unscored, `python_grader_runtime_error`, details with the
  traceback tail and captured stderr (OpenAI marks these invalid); never a real 0;
- a wall-clock timeout, the CPU limit, a crash of the grader process (e.g. `os._exit`, a segfault) or a
  lost worker -> unscored, `python_grader_server_error`, details starting with the type
  (`timeout:`, `cpu_limit:`, `crash:`, `unavailable:`).

Simplified: `image_tag` is accepted and ignored: the sandbox uses the packages installed next to rft (OpenAI's
image `2025-05-08` has numpy, scipy, sympy, pandas, rapidfuzz, scikit-learn, rouge-score, nltk, ...; install
what your graders import). The module top level runs once per worker and is cached by the source's sha256.
Limits and the pool size come from the `GraderContext` the grader is built with (`sandbox`, `sandbox_workers`;
default: 120 s wall clock, 2 GB address space, one worker per CPU), not from the spec. Python graders built with
one context share its pool for those limits; closing the last of them closes the pool.

How to run: `python -c "from rft.graders import build, make_sample; g = build({'type': 'python', 'source':
'def grade(sample, item):\\n    return float(sample[\\"output_text\\"] == item[\\"answer\\"])'});
print(g.grade(make_sample('4'), {'answer': '4'}))"`.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import threading

from rft.errors import Problem
from rft.graders.base import DEFAULT_CONTEXT, Grader, GraderError, register_grader, reward_problem
from rft.graders.sandbox import MAX_SOURCE_BYTES, SandboxPool, SandboxUnavailable


def check_source(source, where: str) -> list[Problem]:
    """Static checks of a python grader's source (OpenAI's graders/validate equivalent)."""
    field = f"{where}.source"
    if not isinstance(source, str):
        return [Problem(f"source must be a string of Python code, got {type(source).__name__}", field=field)]
    size = len(source.encode())
    if size > MAX_SOURCE_BYTES:
        return [Problem(f"source is {size} bytes; the limit is {MAX_SOURCE_BYTES} bytes (256 kB)", field=field)]
    try:
        tree = ast.parse(source, filename="grader.py")
    except SyntaxError as e:
        where_ = f"line {e.lineno}" + (f", column {e.offset}" if e.offset else "")
        return [Problem(f"syntax error at {where_}: {e.msg}", field=field)]
    problems = []
    grade_def = None
    bound = False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "grade":
            grade_def, bound = node, True
        elif isinstance(node, ast.AsyncFunctionDef) and node.name == "grade":
            problems.append(Problem(f"line {node.lineno}: grade must be a plain function, not async", field=field))
            bound = True
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "grade" for t in targets):
                grade_def, bound = None, True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == "grade" for a in node.names):
                grade_def, bound = None, True
            problems += _check_import(node, field)
    if not bound:
        problems.append(Problem("the source defines no top-level function grade(sample, item)", field=field))
    elif grade_def is not None:
        problems += _check_signature(grade_def, field)
    return problems


def _check_signature(fn: ast.FunctionDef, field: str) -> list[Problem]:
    a = fn.args
    positional = a.posonlyargs + a.args
    n_defaults = len(a.defaults)
    required = len(positional) - n_defaults
    out = []
    if len(positional) < 2 and a.vararg is None:
        out.append(Problem(f"line {fn.lineno}: grade takes {len(positional)} positional argument(s); it is called as "
                           "grade(sample, item)", field=field))
    elif required > 2:
        out.append(Problem(f"line {fn.lineno}: grade requires {required} positional arguments; it is called with 2 "
                           "(sample, item)", field=field))
    missing_kw = [k.arg for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is None]
    if missing_kw:
        out.append(Problem(f"line {fn.lineno}: grade has required keyword-only argument(s) {', '.join(missing_kw)}; "
                           "it is called as grade(sample, item)", field=field))
    return out


def _check_import(node: ast.Import | ast.ImportFrom, field: str) -> list[Problem]:
    if isinstance(node, ast.ImportFrom):
        if node.level:
            return [Problem(f"line {node.lineno}: relative imports are not available to a grader", field=field)]
        names = [node.module or ""]
    else:
        names = [a.name for a in node.names]
    out = []
    for name in names:
        top = name.split(".")[0]
        if top and top not in sys.builtin_module_names and importlib.util.find_spec(top) is None:
            out.append(Problem(f"line {node.lineno}: module '{top}' is not installed; the sandbox has the packages of "
                               f"this Python environment (pip install it, or remove the import)", field=field))
    return out


@register_grader("python")
class PythonGrader(Grader):
    type = "python"
    allowed_fields = {"type", "name", "source", "image_tag"}
    required_fields = {"type", "source"}

    def __init__(self, spec, *, context=None):
        super().__init__(spec, context=context)
        self._pool: SandboxPool | None = None  # taken from the context when first needed, given back on close()
        self._pool_lock = threading.Lock()

    @classmethod
    def validate_spec(cls, spec, where, context=DEFAULT_CONTEXT):
        problems = super().validate_spec(spec, where, context)
        if "image_tag" in spec and not isinstance(spec["image_tag"], str):
            problems.append(Problem("image_tag must be a string (it is accepted and ignored)", field=f"{where}.image_tag"))
        if "source" in spec:
            problems += check_source(spec["source"], where)
        return problems

    @property
    def concurrency(self) -> int:
        return self.pool.size

    @property
    def pool(self) -> SandboxPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = self.context.acquire_sandbox_pool()
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            self.context.release_sandbox_pool(pool)

    def score(self, sample, item):
        try:
            res = self.pool.run(self.spec["source"], sample, item)
        except SandboxUnavailable as e:
            raise GraderError("python_grader_server_error", f"unavailable: {e}") from None
        if res.ok:
            # Checked here, in the parent, on what actually came back: 1e39 is a finite float64 (the sandbox
            # accepts it) but inf in the float32 reward tensor, where it would wipe out its group's advantages.
            why = reward_problem(res.value)
            if why:
                raise GraderError("python_grader_runtime_error", f"grade() returned {repr(res.value)[:100]}: {why}")
            return res.value
        if res.is_server_error:
            raise GraderError("python_grader_server_error", f"{res.status}: {res.error}")
        details = res.error
        if res.traceback:
            details += "\n" + res.traceback.rstrip()
        if res.stderr.strip():
            details += "\n--- stderr ---\n" + res.stderr[-2000:].rstrip()
        raise GraderError("python_grader_runtime_error", details)


__all__ = ["PythonGrader", "check_source"]
