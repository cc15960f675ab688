"""Synthetic motion capture: skin-marker trajectories from model kinematics, with marker-placement
error (offsets perturbed in the body frame), measurement noise and dropout gaps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.motion.synth import ModelKinematics
from biohuman.osim.model import foot_geometry, load_model


def marker_frames(model_path: str | Path | None, names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(parent body, location in body frame (3,)) of each named marker of the model."""
    model = load_model(model_path)
    ms = model.getMarkerSet()
    out = []
    for n in names:
        mk = ms.get(n)
        loc = mk.get_location()
        out.append((mk.getParentFrameName().split("/")[-1], np.array([loc.get(0), loc.get(1), loc.get(2)])))
    return out


def perturb_offsets(
    names: Sequence[str], rng: np.random.Generator, magnitude_m: tuple[float, float] = (0.01, 0.02)
) -> dict[str, np.ndarray]:
    """Random marker misplacements: a uniformly random direction with a length drawn uniformly in
    `magnitude_m` (metres), in the marker's body frame."""
    out = {}
    for n in names:
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        out[n] = d * rng.uniform(*magnitude_m)
    return out


def marker_trajectories(
    model_path: str | Path | None,
    coordinates: pd.DataFrame,
    names: Sequence[str],
    offsets: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Ground positions (T, M, 3) in metres of markers placed at their model locations plus
    `offsets` (body frame), for coordinates (T x all model coordinates; radians / metres)."""
    frames = marker_frames(model_path, names)
    offsets = offsets or {}
    pts = [(body, tuple(loc + offsets.get(n, 0.0))) for n, (body, loc) in zip(names, frames)]
    kin = ModelKinematics(model_path, pts)
    q = coordinates[kin.names].to_numpy()
    out = np.empty((len(q), len(names), 3))
    for t in range(len(q)):
        kin.set_all(q[t])
        out[t] = kin.outputs()[:-3].reshape(-1, 3)
    return out


def add_noise_and_dropout(
    xyz: np.ndarray,
    rate_hz: float,
    rng: np.random.Generator,
    *,
    noise_sd_m: float = 0.0,
    dropout_per_marker_s: float = 0.0,
    dropout_max_s: float = 0.05,
) -> tuple[np.ndarray, list[str]]:
    """Add white noise (sd in metres) and random gaps (NaN) to marker data (T, M, 3).

    Gaps arrive as a Poisson process of `dropout_per_marker_s` per marker per second, each of a
    length uniform in [1 frame, dropout_max_s]. Returns the new array and a description per gap.
    """
    out = xyz + (rng.normal(0.0, noise_sd_m, xyz.shape) if noise_sd_m > 0 else 0.0)
    notes: list[str] = []
    T, M, _ = xyz.shape
    if dropout_per_marker_s > 0:
        duration = T / rate_hz
        for m in range(M):
            for _ in range(rng.poisson(dropout_per_marker_s * duration)):
                length = int(rng.integers(1, max(2, int(round(dropout_max_s * rate_hz)) + 1)))
                start = int(rng.integers(1, max(2, T - length - 1)))
                out[start: start + length, m] = np.nan
                notes.append(f"marker {m}: {length} frames from frame {start}")
    return out, notes


def standing_pose(model_path: str | Path | None, duration_s: float = 1.0, rate_hz: float = 100.0) -> pd.DataFrame:
    """Anatomical standing pose (all coordinates at their defaults) with both feet flat on y = 0,
    as coordinates over `duration_s` (the static calibration trial)."""
    feet = foot_geometry(model_path)
    pts = []
    for fg in feet.values():
        pts += [(fg.heel_body, fg.heel), (fg.toe_body, fg.toe)]
    kin = ModelKinematics(model_path, pts)
    q = kin.fill_coupled(kin.default)
    kin.set_all(q)
    low = kin.outputs()[:-3].reshape(-1, 3)[:, 1].min()
    q[kin.index["pelvis_ty"]] -= low
    n = int(round(duration_s * rate_hz)) + 1
    t = np.arange(n) / rate_hz
    return pd.DataFrame(np.tile(q, (n, 1)), index=pd.Index(t, name="time"), columns=kin.names)
