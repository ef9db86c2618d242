"""Where rft keeps things: RFT_HOME (default ~/.rft) holds runs; the model cache lives in RFT_CACHE_DIR
(default $RFT_HOME/cache) so that tests can use a throw-away home and still share converted models."""

from __future__ import annotations

import os
from pathlib import Path


def rft_home() -> Path:
    return Path(os.environ.get("RFT_HOME", Path.home() / ".rft")).expanduser()


def cache_dir() -> Path:
    env = os.environ.get("RFT_CACHE_DIR")
    return Path(env).expanduser() if env else rft_home() / "cache"


def runs_dir() -> Path:
    return rft_home() / "runs"
