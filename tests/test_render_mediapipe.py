"""MediaPipe Pose (the model bundled in the mediapipe wheel) finds the rendered body and agrees
with the projected OpenSim hip, knee and ankle centres, per camera setting."""

from __future__ import annotations

import pytest
import xarray as xr

from _render_data import anny_cache, gait_coordinates, require_gl

SETTINGS = {"front": [-20, 20], "three_quarter": [30, 60], "side": [75, 105], "back": [160, 200],
            "back_three_quarter": [-150, -120]}


@pytest.mark.slow
def test_mediapipe_finds_the_body(tmp_path, reduced):
    pytest.importorskip("mediapipe", reason="mediapipe not installed (pip install mediapipe==0.10.21)")
    require_gl()
    cache = anny_cache()
    from biohuman.render.checks import mediapipe_agreement
    from biohuman.render.render_trial import make_actor, render_trial
    from biohuman.render.video import read_video

    actor = make_actor(None, "body", anny_cache_dir=cache)
    settings = dict(list(SETTINGS.items())[::2]) if reduced else SETTINGS
    coords = gait_coordinates(1.0 if reduced else 2.2)
    for name, az in settings.items():
        res = render_trial(None, coords, tmp_path, trial_id=name, seed=3, actor=actor,
                           config={"cameras": {"count": 1 if reduced else 2, "azimuth_deg": az}})
        ds = xr.open_dataset(res.labels)
        for cam in ds.camera.values:
            frames, _ = read_video(res.videos[str(cam)])
            r = mediapipe_agreement(frames, ds.joint_projection.sel(camera=cam).values, list(ds.joint.values))
            assert r["detection_rate"] >= 0.95, (name, cam, r["detection_rate"])
            for joint in ("hip_r", "hip_l", "knee_r", "knee_l", "ankle_r", "ankle_l"):
                assert r[f"median_{joint}"] < 0.05, (name, cam, joint, r[f"median_{joint}"])
