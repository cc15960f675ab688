"""Offscreen rendering and video: GL output agrees with the camera model, MP4 timestamps, and a
pose discontinuity shows up at the right frame (frame i shows the pose at t0 + i / fps)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from _render_data import gait_coordinates, require_gl
from biohuman.render.camera import Camera, look_at


@pytest.fixture(scope="module")
def gl():
    require_gl()


def test_gl_silhouette_matches_projection(gl):
    from biohuman.render.gl import Renderer, SkinnedMesh

    # a unit cube (two bones: the top face rides on bone 1, moved up by 0.2 m)
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32) * 0.4 + [0.0, 0.7, 0.0]
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
                  [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int32)
    idx = np.zeros((8, 4), np.int32)
    idx[v[:, 1] > 0.9, 0] = 1
    w = np.zeros((8, 4), np.float32)
    w[:, 0] = 1
    r = Renderer(128, 96)
    r.set_mesh(SkinnedMesh(v, np.zeros_like(v), f, np.ones_like(v), idx, w, np.ones(8)))
    r.set_light(np.array([0, 0, 1.0]))
    k = np.array([[150.0, 0, 63.5], [0, 150.0, 47.5], [0, 0, 1]])
    e = look_at(np.array([2.5, 1.5, 2.0]), np.array([0.2, 0.9, 0.2]))
    cam = Camera("c", 128, 96, k, e[None], {})
    bones = np.stack([np.eye(4), np.eye(4)])
    bones[1, 1, 3] = 0.2
    rgb, part, depth = r.render(bones, cam.gl_view()[0], cam.gl_projection(), depth=True)
    posed = v.astype(float).copy()
    posed[idx[:, 0] == 1, 1] += 0.2
    uv, z = cam.project(posed[None])
    rows, cols = np.nonzero(part)
    assert abs(cols.min() - uv[0, :, 0].min()) <= 1.0 and abs(cols.max() - uv[0, :, 0].max()) <= 1.0
    assert abs(rows.min() - uv[0, :, 1].min()) <= 1.0 and abs(rows.max() - uv[0, :, 1].max()) <= 1.0
    assert set(np.unique(part)) == {0, 1}
    near = np.min(z)
    assert abs(np.min(depth[part > 0]) - near) < 0.02  # the nearest corner's depth
    r.release()


def test_discontinuity_lands_on_the_right_frame(gl, tmp_path):
    from biohuman.render.render_trial import render_trial
    from biohuman.render.video import read_video

    t0 = 2.0
    coords = gait_coordinates(1.0, 100.0, speed=0.0, t0=t0)
    coords.loc[:, [c for c in coords.columns if c not in ("pelvis_ty",)]] = 0.0
    coords["pelvis_ty"] = 0.94
    jump_after = t0 + 0.48  # labels at <= 2.48 s hold the old pose, >= 2.49 s the new one
    coords.loc[coords.index > jump_after + 1e-9, "arm_flex_r"] = 1.4
    coords.loc[coords.index > jump_after + 1e-9, "elbow_flex_r"] = 1.2
    cfg = {"mode": "skeleton", "fps": 30, "masks": False,
           "cameras": {"count": 1, "azimuth_deg": [60, 60], "distance_m": 3.0, "focal_mm": 50, "height_m": 1.2,
                       "target_height_frac": 0.55},
           "scene": {"backgrounds": ["solid"], "floor": False}}
    res = render_trial(None, coords, tmp_path, config=cfg, trial_id="jump")
    frames, pts = read_video(res.videos["cam0"])
    ds = xr.open_dataset(res.labels)
    assert len(frames) == res.n_frames == 31 == ds.sizes["frame"]
    np.testing.assert_allclose(ds.video_time, t0 + np.arange(31) / 30, atol=1e-9)
    np.testing.assert_allclose(pts - pts[0], np.arange(31) / 30, atol=1e-3)
    diff = np.abs(np.diff(frames.astype(float), axis=0)).mean(axis=(1, 2, 3))
    first_new = int(np.ceil((jump_after + 0.01 - t0) * 30 - 1e-9))  # first frame time >= 2.49 s -> frame 15
    assert first_new == 15
    assert int(np.argmax(diff)) + 1 == first_new
    assert diff[first_new - 1] > 20 * np.median(diff)
    # the wrist's projection moves at the same frame
    wr = ds.joint_projection.sel(camera="cam0", joint="wrist_r").values
    step = np.linalg.norm(np.diff(wr, axis=0), axis=1)
    assert int(np.argmax(step)) + 1 == first_new


def test_skeleton_mode_outputs(gl, tmp_path):
    from biohuman.render.render_trial import render_trial

    res = render_trial(None, gait_coordinates(0.5), tmp_path, trial_id="sk",
                       config={"mode": "skeleton", "cameras": {"count": 2}, "width": 128, "height": 96})
    ds = xr.open_dataset(res.labels)
    assert set(res.videos) == {"cam0", "cam1"} and all(p.is_file() for p in res.videos.values())
    assert ds.part_mask.shape == (2, res.n_frames, 96, 128)
    assert ds.camera_intrinsics.shape == (2, 3, 3) and ds.camera_extrinsics.shape == (2, res.n_frames, 4, 4)
    assert ds.joint_projection.dims == ("camera", "frame", "joint", "uv")
    assert set(np.unique(ds.joint_visibility)) <= {0, 1, 2}
    assert all("units" in ds[v].attrs and "long_name" in ds[v].attrs for v in ds.data_vars)
    assert ds.attrs["render_mode"] == "skeleton" and list(ds.video_file.values) == ["sk_cam0.mp4", "sk_cam1.mp4"]
