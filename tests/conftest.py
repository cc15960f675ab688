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
