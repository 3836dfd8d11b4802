"""Where the development stack keeps its files (all git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout: BACKHAUL_ROOT, else the nearest parent with the workspace's Makefile."""
    if env := os.environ.get("BACKHAUL_ROOT"):
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "Makefile").exists() and (parent / "services").is_dir():
            return parent
    return Path.cwd()


def cache_dir() -> Path:
    return repo_root() / ".cache"


def var_dir() -> Path:
    return repo_root() / "var"
