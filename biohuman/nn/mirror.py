"""Left-right mirror images of front-end inputs, labels and model outputs.

A horizontally flipped video is what a mirrored camera sees of the mirrored scene, so everything
about the flipped video follows exactly from the original: right and left swap (coordinates,
muscles, joints, landmarks), the lateral pelvis and lumbar rotations and the pelvis' lateral
translation change sign, camera-frame positions flip x (ground-frame positions flip z, OpenSim's
lateral axis), and the pelvis orientation is reflected on both sides. The Rajagopal model is
left-right symmetric, so the mirrored motion has the same dynamics with the sides exchanged.

Used twice: to augment training data (`biohuman.train.augment`) and, for a model trained that way
(`model_cfg["test_time_mirror"]`), to average its outputs on a video and on its mirror image
(`mirrored_average`). `tests/test_augment.py` checks the coordinate mapping against forward
kinematics and the label mapping against a reflected scene and camera.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from biohuman.errors import ConfigError
from biohuman.nn.model import matrix_to_rot6d, rot6d_to_matrix

NEGATED_COORDINATES: frozenset[str] = frozenset(
    {"pelvis_list", "pelvis_rotation", "pelvis_tz", "lumbar_bending", "lumbar_rotation"})
"""Coordinates whose mirror image is their negative (rotations about, or translation along, an axis
in the sagittal plane's normal direction); every other coordinate keeps its value on the other side."""

# MediaPipe Pose's 33 landmarks: 0 nose, then (left, right) pairs.
_MP_PAIRS: tuple[tuple[int, int], ...] = ((1, 4), (2, 5), (3, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
                                          (17, 18), (19, 20), (21, 22), (23, 24), (25, 26), (27, 28), (29, 30),
                                          (31, 32))


def _landmark_permutation() -> np.ndarray:
    p = np.arange(33)
    for a, b in _MP_PAIRS:
        p[a], p[b] = b, a
    return p


LANDMARK_MIRROR: np.ndarray = _landmark_permutation()
"""Index of each MediaPipe landmark's mirror image (left <-> right; the nose maps to itself)."""


def mirror_name(name: str) -> str:
    """The other side's name (`*_r` <-> `*_l`); names without a side suffix map to themselves."""
    if name.endswith("_r"):
        return name[:-2] + "_l"
    if name.endswith("_l"):
        return name[:-2] + "_r"
    return name


def mirror_permutation(names: Sequence[str]) -> np.ndarray:
    """Index array p with names[p[i]] == mirror_name(names[i]). ConfigError when a side's partner
    is missing (the mirrored sequence would be incomplete)."""
    idx = {n: i for i, n in enumerate(names)}
    missing = [mirror_name(n) for n in names if mirror_name(n) not in idx]
    if missing:
        raise ConfigError(f"cannot mirror: no partner for {sorted(set(missing))}")
    return np.array([idx[mirror_name(n)] for n in names], np.int64)


def mirror_coordinates(values: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Coordinates [..., C] (named `names`) of the mirrored motion: sides swapped, the lateral
    rotations and translation negated."""
    v = np.asarray(values)[..., mirror_permutation(names)].copy()
    sign = np.array([-1.0 if n in NEGATED_COORDINATES else 1.0 for n in names], v.dtype)
    return v * sign


def _flip(pose_frame: str) -> np.ndarray:
    if pose_frame not in ("camera", "ground"):
        raise ConfigError(f"pose_frame must be camera or ground, not {pose_frame!r}")
    f = np.ones(3)
    f[0 if pose_frame == "camera" else 2] = -1.0
    return f


def mirror_rot6d(r6: np.ndarray, pose_frame: str = "camera") -> np.ndarray:
    """6D pelvis orientations [..., 6] of the mirrored body (reflect the frame they are expressed
    in and the pelvis' own lateral z axis; z is not stored in 6D, so only the first reflection shows)."""
    R = rot6d_to_matrix(torch.as_tensor(np.asarray(r6, np.float64))) * torch.as_tensor(_flip(pose_frame))[:, None]
    return matrix_to_rot6d(R).numpy().astype(np.float32)


def mirror_inputs(feats: Mapping[str, Any]) -> dict[str, Any]:
    """Front-end arrays as the front-end would see the horizontally flipped video: landmarks
    (x normalised to the width -> 1 - x, sides swapped; undetected frames stay zero), world
    landmarks (x -> -x), boxes (needs `image_size`). Other keys pass through. Image features
    cannot be mirrored from the cache: ConfigError."""
    out = dict(feats)
    if "cnn" in feats:
        raise ConfigError("mirroring needs image features of the flipped frames; use a landmark front-end "
                          "(train.frontend: mediapipe) or switch train.augment.mirror off")
    if "landmarks" in feats:
        lm = np.asarray(feats["landmarks"], np.float32)[:, LANDMARK_MIRROR].copy()
        det = np.asarray(feats.get("detected", np.ones(len(lm))), bool)
        lm[det, :, 0] = 1.0 - lm[det, :, 0]
        out["landmarks"] = lm
    if "world" in feats:
        w = np.asarray(feats["world"], np.float32)[:, LANDMARK_MIRROR].copy()
        w[..., 0] *= -1.0  # MediaPipe world: x along the image's x
        out["world"] = w
    if "bbox" in feats:
        if "image_size" not in feats:
            raise ConfigError("cannot mirror bounding boxes without the image size")
        width = float(np.asarray(feats["image_size"]).reshape(-1)[0])
        b = np.asarray(feats["bbox"], np.float32)
        out["bbox"] = np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=1).astype(np.float32)
    return out


def mirror_outputs(out: Mapping[str, np.ndarray], *, coordinates: Sequence[str] = (), muscles: Sequence[str] = (),
                   joints: Sequence[str] = (), pose_frame: str = "camera") -> dict[str, np.ndarray]:
    """Pose and activation arrays [T, ...] (model outputs or labels without the `y_` prefix:
    `coords`, `pelvis_rot6d`, `root`, `joints`, `activation`) of the mirrored motion. Keys the
    names are not given for pass through unchanged only when they do not depend on the side."""
    flip = _flip(pose_frame)
    res: dict[str, np.ndarray] = {}
    for k, v in out.items():
        v = np.asarray(v)
        if k == "coords":
            res[k] = mirror_coordinates(v, coordinates).astype(v.dtype)
        elif k == "activation":
            res[k] = v[..., mirror_permutation(muscles)]
        elif k == "joints":
            res[k] = (v[..., mirror_permutation(joints), :] * flip).astype(v.dtype)
        elif k == "root":
            res[k] = (v * flip).astype(v.dtype)
        elif k == "pelvis_rot6d":
            res[k] = mirror_rot6d(v, pose_frame).astype(v.dtype)
        else:
            raise ConfigError(f"do not know how to mirror output {k!r}")
    return res


def mirrored_average(predict: Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
                     feats: Mapping[str, Any], cfg: Mapping[str, Any],
                     extra: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Test-time mirroring: the mean of `predict(feats, extra)` and the mirror image of
    `predict(mirror_inputs(feats), mirrored extra)`. cfg: the model config (its `coordinates`,
    `muscles`, `joints`, `pose_frame`). extra: per-frame inputs besides the front-end's; only
    `pose_coords` (coordinates, mirrored like `coords`) is known."""
    names = {"coordinates": cfg.get("coordinates", ()), "muscles": cfg.get("muscles", ()),
             "joints": cfg.get("joints", ()), "pose_frame": cfg.get("pose_frame", "camera")}
    extra = dict(extra or {})
    unknown = [k for k in extra if k != "pose_coords"]
    if unknown:
        raise ConfigError(f"cannot mirror extra inputs {unknown}")
    extra_m = {k: mirror_coordinates(v, names["coordinates"]).astype(np.float32) for k, v in extra.items()}
    a = predict(feats, extra)
    b = mirror_outputs(predict(mirror_inputs(feats), extra_m), **names)
    return {k: (0.5 * (np.asarray(a[k], np.float64) + b[k])).astype(np.asarray(a[k]).dtype) for k in a}
