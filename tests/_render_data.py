"""Shared test data for the rendering tests: gait-like coordinates without trajectory optimisation,
and the Anny cache / GL availability checks (tests skip with a reason when a library is missing)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
ANNY_CACHE_DIR = Path(os.environ.get("ANNY_CACHE_DIR", REPO / ".cache" / "anny"))
"""The Anny cache every test shares: $ANNY_CACHE_DIR or <repo>/.cache/anny."""


def gait_coordinates(duration: float = 1.2, rate: float = 100.0, speed: float = 1.2, t0: float = 0.0) -> pd.DataFrame:
    """Walking-like coordinates of Rajagopal2015 (radians / metres) at `rate` Hz from t0."""
    t = t0 + np.arange(int(round(duration * rate)) + 1) / rate
    ph = 2 * np.pi * (t - t0) / 1.1
    q = {
        "pelvis_tx": speed * (t - t0), "pelvis_ty": 0.955 + 0.01 * np.cos(2 * ph), "pelvis_tz": 0.0 * t,
        "pelvis_rotation": 0.05 * np.sin(ph), "pelvis_list": 0.03 * np.sin(ph), "pelvis_tilt": 0.05 + 0 * t,
        "hip_flexion_r": 0.1 + 0.4 * np.sin(ph), "hip_flexion_l": 0.1 - 0.4 * np.sin(ph),
        "hip_adduction_r": 0.03 * np.sin(ph), "hip_adduction_l": -0.03 * np.sin(ph),
        "knee_angle_r": 0.15 + 0.5 * np.clip(np.sin(ph + 1.0), 0, None),
        "knee_angle_l": 0.15 + 0.5 * np.clip(np.sin(ph + 1.0 + np.pi), 0, None),
        "ankle_angle_r": 0.15 * np.sin(ph - 0.5), "ankle_angle_l": 0.15 * np.sin(ph - 0.5 + np.pi),
        "lumbar_extension": -0.05 + 0 * t, "lumbar_rotation": -0.04 * np.sin(ph),
        "arm_flex_r": -0.3 * np.sin(ph), "arm_flex_l": 0.3 * np.sin(ph), "arm_add_r": -0.1 + 0 * t,
        "arm_add_l": -0.1 + 0 * t, "elbow_flex_r": 0.35 + 0.1 * np.sin(ph), "elbow_flex_l": 0.35 - 0.1 * np.sin(ph),
        "pro_sup_r": 0.8 + 0 * t, "pro_sup_l": 0.8 + 0 * t,
    }
    return pd.DataFrame(q, index=pd.Index(t, name="time"))


def require_gl() -> None:
    """Skip unless moderngl and an EGL OpenGL context are available."""
    pytest.importorskip("moderngl", reason="moderngl not installed (pip install moderngl)")
    from biohuman.errors import ConfigError
    from biohuman.render.gl import create_context

    try:
        create_context().release()
    except ConfigError as exc:
        pytest.skip(f"no offscreen OpenGL context: {exc}")


def anny_cache() -> Path:
    """A built Anny cache ($ANNY_CACHE_DIR or <repo>/.cache/anny; built here once, ~1 min)."""
    pytest.importorskip("anny", reason="anny not installed (pip install anny==0.6.2)")
    from biohuman.render.body import anny_cache_ready, build_anny_cache

    if not anny_cache_ready(ANNY_CACHE_DIR):
        build_anny_cache(ANNY_CACHE_DIR)
    return ANNY_CACHE_DIR
