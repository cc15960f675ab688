"""Rendering building blocks without OpenGL: PLY reading, cameras, frame times, scenes, configs."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest

from biohuman.errors import ConfigError, InputFormatError
from biohuman.render.camera import gl_projection, look_at, project, sample_cameras
from biohuman.render.pose import frame_times, resample_coordinates
from biohuman.render.render_trial import activation_color, render_config
from biohuman.render.scene import background_image, sample_scene, vertex_colors
from biohuman.render.skeleton import read_ply, skeleton_mesh


def _ply(tmp_path, binary: bool):
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 1.5, 0]], np.float32)
    faces = [[0, 1, 2, 3, 4], [0, 1, 2]]
    head = ("ply\nformat {} 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
            "element face 2\nproperty list uchar int vertex_indices\nend_header\n")
    path = tmp_path / ("b.ply" if binary else "a.ply")
    if binary:
        body = verts.tobytes() + b"".join(struct.pack("<B", len(f)) + np.array(f, "<i4").tobytes() for f in faces)
        path.write_bytes(head.format("binary_little_endian").encode() + body)
    else:
        lines = [" ".join(map(str, v)) for v in verts] + [" ".join(map(str, [len(f), *f])) for f in faces]
        path.write_text(head.format("ascii") + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("binary", [False, True])
def test_read_ply_fans_polygons(tmp_path, binary):
    v, f = read_ply(_ply(tmp_path, binary))
    assert v.shape == (5, 3) and f.shape == (4, 3)  # pentagon -> 3 triangles + 1 triangle
    assert f[:3, 0].tolist() == [0, 0, 0] and f[2].tolist() == [0, 3, 4]


def test_read_ply_errors(tmp_path):
    bad = tmp_path / "x.ply"
    bad.write_text("not a ply")
    with pytest.raises(InputFormatError, match="x.ply"):
        read_ply(bad)
    with pytest.raises(InputFormatError):
        read_ply(tmp_path / "missing.ply")


def test_rajagopal_bone_meshes():
    sk = skeleton_mesh(None)
    assert len(sk.files) == 81 and len(set(sk.bodies)) == 22
    assert sk.faces.max() < len(sk.vertices) and np.isfinite(sk.vertices).all()
    # polygons with more than three corners (10 files trimesh cannot read) are triangulated
    assert len(sk.file_vertices("r_femur")) > 100


def test_projection_matches_gl_matrices():
    k = np.array([[300.0, 0, 127.5], [0, 300.0, 120.0], [0, 0, 1]])
    e = look_at(np.array([3.0, 1.2, 1.0]), np.array([0.0, 0.9, 0.0]))
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 20, 3)) + [0, 0.9, 0]
    uv, z = project(pts, k, e)
    assert (z > 0).all()
    clip = np.einsum("ij,pj->pi", gl_projection(k, 256, 256) @ np.diag([1.0, -1, -1, 1]) @ e,
                     np.c_[pts[0], np.ones(20)])
    ndc = clip[:, :2] / clip[:, 3:]
    u = (ndc[:, 0] + 1) / 2 * 256 - 0.5
    v = (1 - ndc[:, 1]) / 2 * 256 - 0.5
    np.testing.assert_allclose(np.c_[u, v], uv[0], atol=1e-6)
    # the look-at target projects onto the principal point
    uv_t, _ = project(np.array([[[0.0, 0.9, 0.0]]]), k, e)
    np.testing.assert_allclose(uv_t[0, 0], [127.5, 120.0], atol=1e-9)


def test_frame_times_and_resampling():
    t = frame_times(0.5, 1.5, 30)
    assert len(t) == 31 and t[0] == 0.5 and abs(t[-1] - 1.5) < 1e-12
    np.testing.assert_allclose(np.diff(t), 1 / 30)
    df = pd.DataFrame({"a": [0.0, 1.0, 2.0]}, index=[0.0, 0.01, 0.02])
    r = resample_coordinates(df, np.array([0.005, 0.015, 0.03]))
    np.testing.assert_allclose(r["a"], [0.5, 1.5, 2.0])


def test_cameras_from_config():
    rng = np.random.default_rng(1)
    times = np.arange(10) / 30
    path = np.c_[np.linspace(0, 1, 10), np.full(10, 0.94), np.zeros(10)]
    cams = sample_cameras({"count": 3, "azimuth_deg": [0, 360], "orbit_deg_per_s": [10, 10]}, rng, path, times, 1.7)
    assert len(cams) == 3 and cams[0].extrinsics.shape == (10, 4, 4)
    az = sorted(c.params["azimuth_deg"] % 360 for c in cams)
    assert np.allclose(np.diff(az), 120, atol=1e-6)  # evenly spread
    for c in cams:  # the subject's pelvis stays near the image centre
        uv, z = c.project(path[:, None])
        assert (z > 0).all() and np.all(np.abs(uv[..., 0] - 127.5) < 40)
    with pytest.raises(ConfigError, match="unknown camera config key"):
        sample_cameras({"fov": 3}, rng, path, times, 1.7)


def test_scene_backgrounds_and_colors():
    rng = np.random.default_rng(2)
    for bg in ("solid", "gradient", "checker", "stripes", "noise"):
        scene = sample_scene({"backgrounds": [bg]}, rng)
        img = background_image(scene, 64, 48)
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    names = ["pelvis", "torso", "femur_r", "calcn_r"]
    col = vertex_colors(scene, names, np.array([0, 1, 1, 2, 3]), np.array([0.5, 0.2, 0.95, 0.5, 0.5]))
    np.testing.assert_allclose(col[0], scene.bottom, atol=1e-6)
    np.testing.assert_allclose(col[1], scene.top, atol=1e-6)
    np.testing.assert_allclose(col[2], scene.skin, atol=1e-6)  # head
    np.testing.assert_allclose(col[4], scene.shoes, atol=1e-6)
    with pytest.raises(ConfigError):
        sample_scene({"backgrounds": ["sky"]}, rng)


def test_render_config_and_colormap():
    cfg = render_config({"fps": 25})
    assert cfg["width"] == 256 and cfg["fps"] == 25 and cfg["cameras"]["count"] == 3
    for bad in ({"mode": "mesh"}, {"width": 255}, {"fps": 0}, {"size": 3}):
        with pytest.raises(ConfigError):
            render_config(bad)
    c = activation_color(np.array([0.0, 0.5, 1.0]))
    assert c.shape == (3, 3) and c[2, 0] > 0.8 and c[0, 2] > c[0, 0]
