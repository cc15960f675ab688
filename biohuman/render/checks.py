"""Checks of a rendered body against the OpenSim model it follows: mesh joint centres vs OpenSim
joint centres, skin markers vs the mesh surface, projected joints vs the rendered silhouette."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biohuman.render.body import BodyModel
from biohuman.render.meshops import MeshQuery
from biohuman.render.pose import joint_points, marker_points


def joint_center_errors(body: BodyModel, model_path: str | Path | None, transforms: np.ndarray,
                        vertices: np.ndarray | None = None) -> np.ndarray:
    """Distances (T, J) in metres between the mesh's regressed joint centres and OpenSim's.

    transforms: body transforms (T, B, 4, 4) in `body.bodies` order; vertices: posed (T, N, 3)
    (computed when omitted).
    """
    v = body.pose(transforms) if vertices is None else vertices
    mesh = body.joint_centers(v)
    osim = joint_points(model_path, body.joints, bodies=body.bodies).in_ground(transforms)
    return np.linalg.norm(mesh - osim, axis=-1)


def marker_surface_distances(body: BodyModel, model_path: str | Path | None, transforms: np.ndarray,
                             vertices: np.ndarray | None = None, markers: list[str] | None = None
                             ) -> tuple[tuple[str, ...], np.ndarray]:
    """Distances (T, M) in metres from the model's skin markers to the posed mesh surface."""
    v = body.pose(transforms) if vertices is None else vertices
    mk = marker_points(model_path, markers, bodies=body.bodies)
    pts = mk.in_ground(transforms)
    query = MeshQuery(body.faces, len(body.vertices))
    out = np.empty(pts.shape[:2])
    for t in range(len(v)):
        out[t] = query.closest(v[t], pts[t])[1]
    return mk.names, out


def silhouette_hits(uv: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Whether each projected point falls on the rendered body: uv (T, P, 2) px, part (T, H, W).

    Returns (T, P) bool; points outside the image count as misses.
    """
    t_idx = np.arange(uv.shape[0])[:, None]
    col = np.rint(uv[..., 0]).astype(int)
    row = np.rint(uv[..., 1]).astype(int)
    inside = (col >= 0) & (col < part.shape[2]) & (row >= 0) & (row < part.shape[1])
    hit = np.zeros(uv.shape[:2], bool)
    tt = np.broadcast_to(t_idx, col.shape)
    hit[inside] = part[tt[inside], row[inside], col[inside]] > 0
    return hit


MEDIAPIPE_LANDMARKS: dict[str, int] = {"hip_l": 23, "hip_r": 24, "knee_l": 25, "knee_r": 26, "ankle_l": 27, "ankle_r": 28}
"""MediaPipe Pose landmark index of each joint compared (MediaPipe's left = the subject's left)."""


def mediapipe_agreement(frames: np.ndarray, joint_uv: np.ndarray, joint_names: list[str],
                        model_complexity: int = 1) -> dict[str, float | np.ndarray]:
    """Run MediaPipe Pose (the model bundled in the wheel) over video frames and compare its hip,
    knee and ankle landmarks with the projected OpenSim joint centres.

    frames: (T, H, W, 3) uint8 RGB; joint_uv: (T, J, 2) px in `joint_names` order.
    Returns detection_rate (fraction of frames with a pose), errors (T, 6) as a fraction of the
    image size (max(H, W); NaN where no pose), median_error and per-joint medians.
    """
    try:
        import mediapipe as mp
    except ImportError as exc:  # pragma: no cover - exercised only without mediapipe
        from biohuman.errors import ConfigError

        raise ConfigError("mediapipe is not installed (pip install mediapipe==0.10.21)") from exc
    h, w = frames.shape[1:3]
    size = float(max(h, w))
    cols = [joint_names.index(j) for j in MEDIAPIPE_LANDMARKS]
    err = np.full((len(frames), len(cols)), np.nan)
    found = np.zeros(len(frames), bool)
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=model_complexity,
                                min_detection_confidence=0.5, min_tracking_confidence=0.5) as pose:
        for t, img in enumerate(frames):
            res = pose.process(np.ascontiguousarray(img))
            if res.pose_landmarks is None:
                continue
            found[t] = True
            lm = res.pose_landmarks.landmark
            for k, (name, idx) in enumerate(MEDIAPIPE_LANDMARKS.items()):
                uv = np.array([lm[idx].x * w, lm[idx].y * h])
                err[t, k] = np.linalg.norm(uv - joint_uv[t, cols[k]]) / size
    out: dict[str, float | np.ndarray] = {"detection_rate": float(found.mean()), "errors": err,
                                          "median_error": float(np.nanmedian(err)) if found.any() else float("nan")}
    for k, name in enumerate(MEDIAPIPE_LANDMARKS):
        out[f"median_{name}"] = float(np.nanmedian(err[:, k])) if found.any() else float("nan")
    return out
