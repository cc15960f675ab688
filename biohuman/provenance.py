"""Provenance attributes stamped on every dataset file: versions, git SHA, config hash."""

from __future__ import annotations

import datetime as _dt
import functools
import subprocess
from pathlib import Path

import biohuman


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """Commit of the biohuman checkout (with '-dirty' when it has uncommitted changes), or
    'unknown' outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(config_hash: str, solver: str) -> dict[str, str]:
    """Attributes recording what produced a file. `created` is excluded from value comparisons."""
    from biohuman.osim.model import opensim_version

    return {
        "biohuman_version": biohuman.__version__,
        "git_sha": git_sha(),
        "config_hash": config_hash,
        "opensim_version": opensim_version(),
        "activation_solver": solver,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
