"""The video model: front-ends (MediaPipe Pose landmarks, EfficientNet-Lite0 person-crop features,
cached per video), BioHumanNet (temporal transformer with pose and activation heads), a
differentiable forward-kinematics layer for Rajagopal2015, and `predict_video` (any MP4 -> a
predicted trial NetCDF + plot + overlay video).

    from biohuman.nn import cache_features, BioHumanNet, predict_video
    cache_features("results/dataset/S01/walk.nc", 0, "results/features/S01/walk/cam0.npz", "mediapipe_effnet")
    model = BioHumanNet.from_checkpoint("results/train/run/model.pt")
    predict_video("clip.mp4", "results/train/run/model.pt", "clip.nc", height_m=1.75, mass_kg=70)

Names are imported on first use, so `import biohuman.nn` loads neither torch nor MediaPipe.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE: dict[str, str] = {
    "EfficientNetLite0": "effnet", "load_efficientnet_lite0": "effnet", "fuse_batchnorm": "effnet",
    "FRONTENDS": "frontend", "FeatureExtractor": "frontend", "extract_video_features": "frontend",
    "cache_features": "frontend", "load_features": "frontend",
    "ForwardKinematics": "fk", "kinematic_tree": "fk",
    "BioHumanNet": "model", "rot6d_to_matrix": "model", "matrix_to_rot6d": "model", "pelvis_matrix": "model",
    "matrix_to_pelvis_angles": "model", "input_norm_stats": "model", "stream_features": "model",
    "predict_video": "predict", "run_windows": "predict",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'biohuman.nn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"biohuman.nn.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
