"""Run the *installed* `rft` console script in a subprocess, as a user types it.

Tests of anything a user types go through this, not through Typer's in-process runner: the runner hid the
traceback that every typo printed. `assert_user_error` is the error contract: exit 2, no traceback, one message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# The console script installed beside the interpreter running the tests (.venv/bin/rft), else the one on PATH.
RFT_EXE = str(Path(sys.executable).with_name("rft")) if Path(sys.executable).with_name("rft").exists() else shutil.which("rft")


def run_rft(*args: str, env: dict | None = None, cwd: str | os.PathLike | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    assert RFT_EXE, "the rft console script is not installed (pip install -e .)"
    e = os.environ.copy()
    e.update(env or {})
    return subprocess.run([RFT_EXE, *args], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout,
                          input=input if input is not None else "")


def assert_user_error(r: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    """Exit `code` (2), no traceback, and every needle in what was printed."""
    both = r.stdout + r.stderr
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in both and "most recent call last" not in both, both[-3000:]
    for n in needles:
        assert n in both, (n, both[-3000:])
