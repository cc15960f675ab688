"""Posing for rendering: coordinates resampled at frame times, body transforms from OpenSim
forward kinematics, and joint centres / markers as body-fixed points of those transforms.

One OpenSim pass gives every body's 4x4 transform in ground per frame; joints and markers are
then constant offsets in body frames, so the renderer, the projections and the checks all use the
very same poses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.dynamics.kinematics import JOINT_ALIASES, _prepare
from biohuman.errors import InputFormatError
from biohuman.osim.model import load_model, skin_markers, model_info

DEFAULT_JOINTS: tuple[str, ...] = (
    "pelvis", "hip_r", "knee_r", "ankle_r", "mtp_r", "hip_l", "knee_l", "ankle_l", "mtp_l", "lumbar",
    "shoulder_r", "elbow_r", "wrist_r", "shoulder_l", "elbow_l", "wrist_l",
)
"""Joint centres projected into the images (friendly names, see JOINT_ALIASES)."""


def frame_times(t_start: float, t_end: float, fps: float) -> np.ndarray:
    """Video frame times t_start + i / fps (s) for every i with t <= t_end (1e-9 s tolerance)."""
    if fps <= 0:
        raise InputFormatError(f"frame rate must be positive, got {fps}")
    n = int(np.floor((t_end - t_start) * fps + 1e-6)) + 1
    return t_start + np.arange(max(n, 0)) / fps


def resample_coordinates(coordinates: pd.DataFrame, times: np.ndarray) -> pd.DataFrame:
    """Coordinates linearly interpolated at `times` (s); times outside the data are clamped."""
    t = np.asarray(coordinates.index, dtype=float)
    values = coordinates.to_numpy(dtype=float)
    out = np.empty((len(times), values.shape[1]))
    for k in range(values.shape[1]):
        out[:, k] = np.interp(times, t, values[:, k])
    return pd.DataFrame(out, index=pd.Index(np.asarray(times, float), name="time"), columns=coordinates.columns)


def _mat(transform) -> np.ndarray:  # noqa: ANN001 - SimTK Transform
    out = np.eye(4)
    r, p = transform.R(), transform.p()
    out[:3, :3] = [[r.get(i, j) for j in range(3)] for i in range(3)]
    out[:3, 3] = [p.get(0), p.get(1), p.get(2)]
    return out


def body_transforms(model_path: str | Path | None, coordinates: pd.DataFrame,
                    bodies: Sequence[str] | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """Ground transforms of bodies per frame: (names, (T, B, 4, 4) float64, metres).

    coordinates: time index (s) x coordinate columns (see biohuman.dynamics.kinematics).
    bodies: body names (None = all bodies of the model, model order).
    """
    posed = _prepare(model_path, coordinates)
    model, state = posed.model, posed.state
    bs = model.getBodySet()
    names = [bs.get(i).getName() for i in range(bs.getSize())] if bodies is None else list(bodies)
    missing = [b for b in names if not bs.contains(b)]
    if missing:
        raise InputFormatError(f"bodies not in the model: {missing}", posed.path)
    objs = [bs.get(b) for b in names]
    out = np.empty((len(posed.time), len(objs), 4, 4))
    for t in range(len(posed.time)):
        row = posed.values[t]
        for k, c in enumerate(posed.coords):
            c.setValue(state, float(row[k]), False)
        model.realizePosition(state)
        for b, body in enumerate(objs):
            out[t, b] = _mat(body.getTransformInGround(state))
    return tuple(names), out


def default_transforms(model_path: str | Path | None, bodies: Sequence[str] | None = None
                       ) -> tuple[tuple[str, ...], np.ndarray]:
    """Body transforms (B, 4, 4) at the model's default pose (every coordinate at its default)."""
    model = load_model(model_path)
    state = model.initSystem()
    model.realizePosition(state)
    bs = model.getBodySet()
    names = [bs.get(i).getName() for i in range(bs.getSize())] if bodies is None else list(bodies)
    return tuple(names), np.stack([_mat(bs.get(b).getTransformInGround(state)) for b in names])


@dataclass(frozen=True)
class BodyPoints:
    """Named points fixed in bodies: name -> (body index into `bodies`, (3,) offset in that body, m)."""

    names: tuple[str, ...]
    body_index: np.ndarray  # (P,) int
    offsets: np.ndarray  # (P, 3) float64
    bodies: tuple[str, ...]

    def in_ground(self, transforms: np.ndarray) -> np.ndarray:
        """Ground positions (T, P, 3) given body transforms (T, B, 4, 4) in `bodies` order."""
        tr = transforms[:, self.body_index]  # (T, P, 4, 4)
        return np.einsum("tpij,pj->tpi", tr[..., :3, :3], self.offsets) + tr[..., :3, 3]


def joint_points(model_path: str | Path | None, joints: Sequence[str] = DEFAULT_JOINTS,
                 bodies: Sequence[str] | None = None) -> BodyPoints:
    """Joint centres (child-frame origins) as points fixed in the child bodies."""
    model = load_model(model_path)
    model.initSystem()
    js = model.getJointSet()
    all_joints = [js.get(i).getName() for i in range(js.getSize())]
    reverse = {alias: name for name, alias in JOINT_ALIASES.items()}
    bs = model.getBodySet()
    body_names = [bs.get(i).getName() for i in range(bs.getSize())] if bodies is None else list(bodies)
    idx, off = [], []
    for j in joints:
        name = j if j in all_joints else reverse.get(j, j)
        if name not in all_joints:
            raise InputFormatError(f"joint {j!r} is not in the model", model_path)
        frame = js.get(name).getChildFrame()
        body = frame.findBaseFrame().getName()
        if body not in body_names:
            raise InputFormatError(f"joint {j!r} rides on body {body!r}, which is not rendered", model_path)
        idx.append(body_names.index(body))
        off.append(_mat(frame.findTransformInBaseFrame())[:3, 3])
    return BodyPoints(tuple(joints), np.array(idx, int), np.array(off, float).reshape(-1, 3), tuple(body_names))


def marker_points(model_path: str | Path | None, markers: Sequence[str] | None = None,
                  bodies: Sequence[str] | None = None) -> BodyPoints:
    """Model markers as points fixed in their bodies (None = the skin markers of the model)."""
    info = model_info(model_path)
    names = list(skin_markers(info)) if markers is None else list(markers)
    model = load_model(model_path)
    model.initSystem()
    ms = model.getMarkerSet()
    bs = model.getBodySet()
    body_names = [bs.get(i).getName() for i in range(bs.getSize())] if bodies is None else list(bodies)
    idx, off = [], []
    for m in names:
        if not ms.contains(m):
            raise InputFormatError(f"marker {m!r} is not in the model", model_path)
        mk = ms.get(m)
        frame = mk.getParentFrame()
        body = frame.findBaseFrame().getName()
        loc = mk.get_location()
        p = _mat(frame.findTransformInBaseFrame()) @ np.array([loc.get(0), loc.get(1), loc.get(2), 1.0])
        idx.append(body_names.index(body))
        off.append(p[:3])
    return BodyPoints(tuple(names), np.array(idx, int), np.array(off, float).reshape(-1, 3), tuple(body_names))
