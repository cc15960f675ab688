"""The Anny body follows the OpenSim skeleton: mesh joint centres within 3 cm of OpenSim's, skin
markers within 2 cm (median) of the surface, projected joints inside the rendered silhouette."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from _render_data import anny_cache, gait_coordinates, require_gl


@pytest.fixture(scope="module")
def cache():
    return anny_cache()


@pytest.fixture(scope="module")
def scaled_model(tmp_path_factory):
    from biohuman.osim.scale import scale_model_manual

    out = tmp_path_factory.mktemp("scaled") / "subject.osim"
    factors = {"pelvis": 1.06, "femur": 1.1, "tibia": 1.04, "foot": 1.05, "torso": 1.08, "humerus": 1.12,
               "forearm": 1.06, "hand": 1.05}
    return scale_model_manual(None, factors, 84.0, out)


@pytest.mark.parametrize("which", ["generic", "scaled"])
def test_body_follows_skeleton(cache, scaled_model, which):
    from biohuman.render.body import fit_body
    from biohuman.render.checks import joint_center_errors, marker_surface_distances
    from biohuman.render.pose import body_transforms

    model = None if which == "generic" else scaled_model
    body = fit_body(model, cache_dir=cache, height_m=None if model is None else 1.83, mass_kg=None)
    assert abs(body.anny_stature_m - body.stature_m) < 0.02
    coords = gait_coordinates(1.2)
    _, tr = body_transforms(model, coords, body.bodies)
    v = body.pose(tr)
    err = joint_center_errors(body, model, tr, v)
    assert err.max() < 0.03, dict(zip(body.joints, err.max(0)))
    names, dist = marker_surface_distances(body, model, tr, v)
    assert np.median(dist) < 0.02
    held_out = [i for i, n in enumerate(names) if n not in body.landmarks]
    assert np.median(dist[:, held_out]) < 0.025  # cluster markers not used by the fit


def test_render_trial_body(cache, tmp_path):
    require_gl()
    from biohuman.render.render_trial import render_trial
    from biohuman.render.video import read_video

    res = render_trial(None, gait_coordinates(1.0), tmp_path, trial_id="walk", seed=4,
                       config={"cameras": {"count": 3}, "anny_cache_dir": str(cache)})
    ds = xr.open_dataset(res.labels)
    frames, _ = read_video(res.videos["cam1"])
    assert frames.shape == (res.n_frames, 256, 256, 3) == (31, 256, 256, 3)
    # projected joint centres fall inside the silhouette in >= 98 % of non-occluded pairs
    uv = np.rint(ds.joint_projection.values).astype(int)
    vis = ds.joint_visibility.values == 1
    c, t, j = np.nonzero(vis)
    inside = ds.part_mask.values[c, t, uv[c, t, j, 1], uv[c, t, j, 0]] > 0
    assert inside.mean() >= 0.98
    assert vis.mean() > 0.6  # most joints are not occluded
    assert min(res.silhouette_hit_rate.values()) >= 0.98
    # markers on the far side are reported occluded
    mv = ds.marker_visibility.values
    assert 0.2 < (mv == 1).mean() < 0.9


def test_render_preview(cache, tmp_path):
    require_gl()
    import imageio.v3 as iio
    import pandas as pd

    from biohuman.osim.model import model_info
    from biohuman.render.render_trial import render_preview

    coords = gait_coordinates(0.6)
    muscles = list(model_info(None).muscles)
    act = pd.DataFrame(np.linspace(0, 1, len(muscles))[None].repeat(len(coords), 0), index=coords.index,
                       columns=muscles)
    png = render_preview(None, coords, tmp_path / "p.png", activations=act, frames=3,
                         config={"width": 128, "height": 128, "anny_cache_dir": str(cache)})
    img = iio.imread(png)
    assert img.shape == (128, 3 * 256, 3)
    mp4 = render_preview(None, coords, tmp_path / "p.mp4", frames=4,
                         config={"width": 128, "height": 128, "anny_cache_dir": str(cache)})
    assert mp4.stat().st_size > 1000


def test_cache_build_lock_is_exclusive_across_processes(tmp_path):
    """While one process holds the Anny cache's build lock, another cannot take it: concurrent
    builders (parallel jobs, test workers) wait instead of building the ~1 min cache twice."""
    import subprocess
    import sys

    from biohuman.render.body import _exclusive_lock

    lock = tmp_path / ".anny.lock"
    probe = ("import fcntl, sys; fh = open(sys.argv[1], 'a')\n"
             "try:\n    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n"
             "    sys.exit(3)\n")
    with _exclusive_lock(lock):
        held = subprocess.run([sys.executable, "-c", probe, str(lock)])
    free = subprocess.run([sys.executable, "-c", probe, str(lock)])
    assert held.returncode == 3  # taken while the block runs
    assert free.returncode == 0  # released after it
