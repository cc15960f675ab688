"""Shared data of the biohuman.nn tests: a short rendered walking clip packed as a spec trial with
video, and a randomly initialised BioHumanNet checkpoint in the contract format."""

from __future__ import annotations

from pathlib import Path

import pytest

from _render_data import anny_cache, gait_coordinates, require_gl

_CLIPS: dict[str, tuple[Path, Path]] = {}


def rendered_trial(root: Path, duration: float = 1.0) -> tuple[Path, Path]:
    """(trial .nc with video, its camera-0 MP4): the Anny body walking for `duration` s, one
    256 x 256 camera at 30 fps, labels from tests/test_io_dataset.synthetic_trial. Rendered once
    per session (skips without OpenGL / Anny)."""
    key = f"{duration}"
    if key in _CLIPS:
        return _CLIPS[key]
    require_gl()
    cache = anny_cache()
    from test_io_dataset import synthetic_trial

    import biohuman.io as bio
    from biohuman.pipeline import attach_video
    from biohuman.render.render_trial import make_actor, render_trial

    root.mkdir(parents=True, exist_ok=True)
    actor = make_actor(None, "body", anny_cache_dir=cache)
    res = render_trial(None, gait_coordinates(duration), root / "render", trial_id="walk", seed=3, actor=actor,
                       config={"cameras": {"count": 1, "azimuth_deg": [30, 60]}})
    nc = root / "S01" / "walk.nc"
    nc.parent.mkdir(parents=True, exist_ok=True)
    cam = next(iter(res.videos))
    ds = attach_video(synthetic_trial(n=int(duration * 100) + 1), {"outputs": {"labels": str(res.labels),
                                                                             f"video_{cam}": str(res.videos[cam])}}, nc)
    bio.save_trial(ds, nc)
    _CLIPS[key] = (nc, res.videos[cam])
    return _CLIPS[key]


def random_checkpoint(path: Path, frontend: str = "mediapipe_effnet", **arch) -> Path:
    """A randomly initialised BioHumanNet (Rajagopal2015 names; `arch` overrides d_model etc.)
    saved in the contract checkpoint format."""
    import torch

    from biohuman.nn.fk import ForwardKinematics
    from biohuman.nn.model import BioHumanNet
    from biohuman.osim.model import model_info

    info = model_info(None)
    coords = [c for c in info.rotational if not c.startswith("pelvis") and c not in info.coupled]
    cfg = {"coordinates": coords, "muscles": list(info.muscles), "joints": ForwardKinematics().joints,
           "frontend": frontend, **arch}
    torch.manual_seed(0)
    model = BioHumanNet(cfg)
    torch.save({"model_state": model.state_dict(), "model_cfg": cfg, "norm": {}, "train_cfg": {}, "epoch": 0,
                "optimizer_state": None, "metrics": {}}, path)
    return path


def pose2sim_video(external_dir: Path, cam: int = 1) -> Path:
    """One of the four real pose2sim views (skips when the file is absent)."""
    p = external_dir / "pose2sim" / "Pose2Sim" / "Demo_SinglePerson" / "videos" / f"cam0{cam}.mp4"
    if not p.is_file():
        pytest.skip(f"pose2sim video not found at {p}")
    return p
