"""Rendering: an Anny body (or the OpenSim bones) posed from OpenSim coordinates, cameras and
scenes sampled from a config, offscreen OpenGL (moderngl + EGL) and MP4 videos with per-frame
camera parameters, 2D joint / marker projections and part masks.

    from biohuman.render import render_trial, render_preview, build_anny_cache
    build_anny_cache(".cache/anny")                       # once, before parallel jobs
    render_trial("subject.osim", coords, "results/render/S01", trial_id="walk_01")

Names are imported on first use, so `import biohuman.render` loads neither OpenGL nor Anny.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE: dict[str, str] = {
    "render_trial": "render_trial", "render_preview": "render_trial", "render_config": "render_trial",
    "make_actor": "render_trial", "RENDER_DEFAULTS": "render_trial", "RenderResult": "render_trial",
    "fit_body": "body", "build_anny_cache": "body", "anny_cache_ready": "body", "load_anny": "body",
    "BodyModel": "body", "skeleton_mesh": "skeleton", "read_ply": "skeleton", "Camera": "camera",
    "sample_cameras": "camera", "sample_scene": "scene", "Renderer": "gl", "VideoWriter": "video",
    "read_video": "video", "frame_times": "pose", "body_transforms": "pose",
    "joint_center_errors": "checks", "marker_surface_distances": "checks", "mediapipe_agreement": "checks",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'biohuman.render' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"biohuman.render.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
