"""One way to run the workflow from the tests: `python -m snakemake` in the repository root, one
BLAS thread per job, and the Anny cache the rendering tests share (built once, under its lock,
before a run that renders, so that parallel test workers never race to build it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _render_data import ANNY_CACHE_DIR, anny_cache

ROOT = Path(__file__).resolve().parents[1]
REDUCED_SURROGATE = {"surrogate_samples": 400, "surrogate_visited": 200}
"""`batched_so` settings of the reduced (CI) workflow runs: 600 OpenSim poses per subject's muscle
fit instead of 2480 (~18 s instead of ~75 s), for tests whose subject is not the fit's accuracy."""


def snakemake(*args: str, timeout: int = 120, render: bool = False) -> subprocess.CompletedProcess:
    """Run Snakemake with `args` (output captured). `render`: the run renders video, so the shared
    Anny cache is made ready first (a Snakemake job building it would hold an output lock that
    another worker's concurrent run, reading it as input, would collide with)."""
    if render:
        anny_cache()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ANNY_CACHE_DIR": str(ANNY_CACHE_DIR)}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
