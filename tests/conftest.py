"""Shared pytest fixtures: the external reference data folder and reduced-mode switches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

EXTERNAL = Path(os.environ.get("BIOHUMAN_EXTERNAL", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "external")).resolve()
REDUCED = os.environ.get("BIOHUMAN_REDUCED", "0") == "1"
REQUIRE_EXTERNAL = os.environ.get("BIOHUMAN_REQUIRE_EXTERNAL", "0") == "1"


@pytest.fixture(scope="session")
def external_dir() -> Path:
    """Root of ../shared/data/external; tests that need it skip cleanly when it is absent, and
    fail instead when BIOHUMAN_REQUIRE_EXTERNAL=1 (CI), so a missing folder is never silent."""
    if not EXTERNAL.is_dir():
        if REQUIRE_EXTERNAL:
            pytest.fail(f"BIOHUMAN_REQUIRE_EXTERNAL=1 but the reference data folder is missing: {EXTERNAL}")
        pytest.skip(f"reference data folder not found at {EXTERNAL} (set BIOHUMAN_EXTERNAL)")
    return EXTERNAL


@pytest.fixture(scope="session")
def reduced() -> bool:
    """True when CI asks slow tests to run in reduced form (BIOHUMAN_REDUCED=1)."""
    return REDUCED


# Test files by measured duration (pytest --durations, 2026-12-07), longest first. With `-n 2`
# (README, CI) each file is one unit of work (`--dist loadfile`) handed out in collection order
# (`--no-loadscope-reorder`), so starting the long workflow runs first lets the other worker
# take the many short files meanwhile instead of one long file being left alone at the end.
# xdist hands a worker one more file while it has <= 2 tests pending: the first worker, whose file
# has 2 tests, gets the third file up front, so the third is a quick one (7 tests, < 1 s).
LONGEST_FIRST = ("test_train_workflow.py", "test_workflow.py", "test_train_metrics.py", "test_motion.py",
                 "test_reference_workflow.py",
                 "test_validate_rajagopal.py", "test_ingest_workflow.py", "test_validate_gait2392.py",
                 "test_grf.py", "test_reference_solvers.py", "test_render_body.py", "test_nimble_ik.py",
                 "test_label_accuracy.py", "test_batched_so.py")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the files of `LONGEST_FIRST` first, in that order; the rest keep theirs (a stable sort,
    so tests inside a file keep their order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
