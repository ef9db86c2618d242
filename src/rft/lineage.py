"""Code-version stamp for lineage: the git commit (and whether the tree was dirty) or the package version."""

from __future__ import annotations

import subprocess
from pathlib import Path

import rft


def code_version() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5)
            flag = "+dirty" if dirty.stdout.strip() else ""
            return f"git:{commit.stdout.strip()[:12]}{flag}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"rft=={rft.__version__}"
