"""Pinhole cameras: intrinsics and per-frame extrinsics sampled from a config dict, projection
of 3D points, and the matching OpenGL matrices.

Conventions (OpenCV): camera frame x right, y down, z forward (optical axis). `extrinsics` maps
ground (OpenSim: y up) to camera, 4x4, metres. Pixel coordinates (u, v): u right, v down, the
centre of the top-left pixel at (0, 0); intrinsics K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from biohuman.errors import ConfigError

CAMERA_DEFAULTS: dict[str, Any] = {
    "count": 3,  # cameras per trial
    "distance_m": [3.0, 4.0],  # from the subject's vertical axis to the camera centre
    "height_m": [0.6, 1.6],  # camera centre above the floor
    "azimuth_deg": [-180.0, 180.0],  # around the subject; 0 = in front of the subject (+x), 90 = its right (+z)
    "azimuth_spread": True,  # spread the cameras evenly over the azimuth range (random offset)
    "focal_mm": [40.0, 55.0],  # 35 mm-equivalent focal length (36 mm sensor width)
    "target_height_frac": [0.5, 0.6],  # look-at point as a fraction of the subject's stature
    "follow": 1.0,  # 0 = camera fixed at the trial's mean position, 1 = translates with the subject
    "orbit_deg_per_s": [0.0, 0.0],  # slow orbit around the subject
    "jitter_deg": 0.0,  # small random roll/pitch of the camera
}
"""Camera config keys, their defaults and ranges ([lo, hi] = uniform draw)."""


@dataclass(frozen=True)
class Camera:
    """One camera over a trial: name, image size (px), K (3, 3) and extrinsics (T, 4, 4) per frame."""

    name: str
    width: int
    height: int
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    params: dict[str, float]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project ground points (T, P, 3) -> uv (T, P, 2) pixels and depth (T, P) along the axis (m)."""
        return project(points, self.intrinsics, self.extrinsics)

    def gl_view(self) -> np.ndarray:
        """OpenGL view matrices (T, 4, 4): camera looks down -z with y up."""
        flip = np.diag([1.0, -1.0, -1.0, 1.0])
        return flip[None] @ self.extrinsics

    def gl_projection(self, near: float = 0.05, far: float = 50.0) -> np.ndarray:
        """OpenGL projection (4, 4) matching K, the image size and the pixel convention above."""
        return gl_projection(self.intrinsics, self.width, self.height, near, far)


def project(points: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection: points (T, P, 3) in ground, extrinsics (T, 4, 4) or (4, 4).

    Returns uv (T, P, 2) in pixels and depth (T, P) in metres (z in the camera frame).
    """
    p = np.asarray(points, dtype=float)
    e = np.asarray(extrinsics, dtype=float)
    if e.ndim == 2:
        e = np.broadcast_to(e, (p.shape[0], 4, 4))
    cam = np.einsum("tij,tpj->tpi", e[:, :3, :3], p) + e[:, None, :3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = cam[..., :2] / z[..., None]
    uv = uv @ np.asarray(intrinsics)[:2, :2].T + np.asarray(intrinsics)[:2, 2]
    return uv, z


def gl_projection(k: np.ndarray, width: int, height: int, near: float = 0.05, far: float = 50.0) -> np.ndarray:
    """OpenGL projection matrix for intrinsics K (pixel centres at integer coordinates)."""
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5
    return np.array([
        [2 * fx / width, 0.0, 1.0 - 2 * cx / width, 0.0],
        [0.0, 2 * fy / height, 2 * cy / height - 1.0, 0.0],
        [0.0, 0.0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0.0, 0.0, -1.0, 0.0],
    ])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """Extrinsics (4, 4) of a camera at `eye` looking at `target` (OpenCV axes, ground y up)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = -r @ eye
    return out


def _draw(value: Any, rng: np.random.Generator, key: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
        if hi < lo:
            raise ConfigError(f"camera config {key}: range [{lo}, {hi}] is reversed")
        return float(rng.uniform(lo, hi)) if hi > lo else lo
    raise ConfigError(f"camera config {key}: expected a number or [lo, hi], got {value!r}")


def camera_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config with defaults filled in; unknown keys raise ConfigError."""
    cfg = dict(CAMERA_DEFAULTS)
    for k, v in (config or {}).items():
        if k not in CAMERA_DEFAULTS:
            raise ConfigError(f"unknown camera config key {k!r} (known: {sorted(CAMERA_DEFAULTS)})")
        cfg[k] = v
    return cfg


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(x) < 3:
        return x
    k = np.ones(window) / window
    pad = np.pad(x, ((window // 2, window - 1 - window // 2), (0, 0)), mode="edge")
    return np.stack([np.convolve(pad[:, i], k, mode="valid") for i in range(x.shape[1])], axis=1)


def sample_cameras(config: Mapping[str, Any] | None, rng: np.random.Generator, subject_path: np.ndarray,
                   times: np.ndarray, stature_m: float, width: int = 256, height: int = 256,
                   facing_deg: float = 0.0) -> list[Camera]:
    """Draw `count` cameras for one trial.

    subject_path: (T, 3) pelvis positions in ground at the frame `times` (s); the look-at point
    follows its smoothed horizontal path (by `follow`) at target_height_frac x stature.
    facing_deg: the subject's heading (rotation about +y from +x), added to every azimuth.
    """
    cfg = camera_config(config)
    n = int(cfg["count"])
    if n < 1:
        raise ConfigError(f"camera count must be >= 1, got {n}")
    fps = 1.0 / np.median(np.diff(times)) if len(times) > 1 else 30.0
    path = _smooth(np.asarray(subject_path, float), max(1, int(round(fps * 1.0))))
    centre = path.mean(axis=0)
    follow = float(cfg["follow"])
    track = centre[None] + follow * (path - centre[None])
    lo, hi = (cfg["azimuth_deg"] if isinstance(cfg["azimuth_deg"], (list, tuple)) else [cfg["azimuth_deg"]] * 2)
    offset = rng.uniform(0.0, 1.0)
    cams = []
    for i in range(n):
        if cfg["azimuth_spread"] and n > 1 and hi > lo:
            span = hi - lo
            full = span >= 359.999
            az = lo + span * ((i + offset) / n if full else (i + offset * 0.5 + 0.25) / n)
        else:
            az = _draw([lo, hi], rng, "azimuth_deg")
        az += facing_deg
        dist = _draw(cfg["distance_m"], rng, "distance_m")
        cam_h = _draw(cfg["height_m"], rng, "height_m")
        focal_mm = _draw(cfg["focal_mm"], rng, "focal_mm")
        tfrac = _draw(cfg["target_height_frac"], rng, "target_height_frac")
        orbit = _draw(cfg["orbit_deg_per_s"], rng, "orbit_deg_per_s")
        jitter = float(cfg["jitter_deg"])
        roll, pitch = (rng.normal(0.0, jitter, 2) if jitter > 0 else (0.0, 0.0))
        f_px = focal_mm / 36.0 * width
        k = np.array([[f_px, 0.0, (width - 1) / 2.0], [0.0, f_px, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
        ext = np.empty((len(times), 4, 4))
        for t in range(len(times)):
            a = np.deg2rad(az + orbit * (times[t] - times[0]))
            target = np.array([track[t, 0], tfrac * stature_m, track[t, 2]])
            eye = np.array([track[t, 0] + dist * np.cos(a), cam_h, track[t, 2] + dist * np.sin(a)])
            e = look_at(eye, target)
            if roll or pitch:
                cr, sr, cp, spp = np.cos(np.deg2rad(roll)), np.sin(np.deg2rad(roll)), np.cos(np.deg2rad(pitch)), np.sin(np.deg2rad(pitch))
                rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1.0]])
                rx = np.array([[1.0, 0, 0], [0, cp, -spp], [0, spp, cp]])
                e[:3, :] = rz @ rx @ e[:3, :]
            ext[t] = e
        cams.append(Camera(name=f"cam{i}", width=width, height=height, intrinsics=k, extrinsics=ext,
                           params={"azimuth_deg": float(az), "distance_m": dist, "height_m": cam_h,
                                   "focal_mm": focal_mm, "target_height_frac": tfrac,
                                   "orbit_deg_per_s": orbit, "follow": follow}))
    return cams
