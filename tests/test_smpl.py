"""SMPL / AMASS ingest: skinning, layouts, conventions, errors, and the fit on Rajagopal2015."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from biohuman.errors import ConfigError, InputFormatError
from biohuman.io.trc import write_trc
from biohuman.motion.smpl import (
    MODEL_TO_OPENSIM,
    Z_UP_TO_Y_UP,
    MarkerSpec,
    amass_markers,
    body_height,
    foot_vertices,
    lbs_full,
    load_body_model,
    load_marker_map,
    marker_positions,
    read_amass,
    static_markers,
)
from biohuman.osim.model import model_info, skin_markers
from smpl_fixture import (
    build_amass_sequence,
    build_tiny_body_model,
    walking_poses,
    write_marker_map,
)

REPO = Path(__file__).resolve().parents[1]
RATE = 120.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("smpl")
    ids = build_tiny_body_model(d / "model.npz", marker_map=d / "map.yaml")
    return {"dir": d, "model": d / "model.npz", "map": d / "map.yaml", "ids": ids}


def test_identity_pose_reproduces_template(tiny):
    m = load_body_model(tiny["model"])
    assert m.kind == "smpl" and m.n_joints == 24
    v, j = m.forward(np.zeros((2, 72)))
    np.testing.assert_allclose(v, np.repeat(m.v_template[None], 2, axis=0), atol=1e-12)
    np.testing.assert_allclose(j[0], m.J_regressor @ m.v_template, atol=1e-12)


def test_subset_skinning_matches_smplx_lbs(tmp_path):
    """The restricted skinning used for markers equals smplx.lbs on the whole mesh, with pose
    blend shapes and shape blend shapes active."""
    build_tiny_body_model(tmp_path / "m.npz", pose_blend=1e-3)
    m = load_body_model(tmp_path / "m.npz")
    rng = np.random.default_rng(1)
    poses = rng.normal(0, 0.4, (5, 72))
    betas = rng.normal(0, 1, 10)
    sel = np.array([3, 30, 50, 81])
    v, j = m.forward(poses, betas, vertices=sel)
    vf, jf = lbs_full(m, poses, betas)
    np.testing.assert_allclose(v, vf[:, sel], atol=1e-10)
    np.testing.assert_allclose(j, jf, atol=1e-10)


def test_root_rotation_and_translation_move_markers_rigidly(tiny):
    m = load_body_model(tiny["model"])
    rv = np.array([0.3, -1.1, 0.5])
    pose = np.zeros((1, 72))
    pose[0, :3] = rv
    trans = np.array([[0.2, -0.4, 1.5]])
    v, _ = m.forward(pose, trans=trans)
    R = Rotation.from_rotvec(rv).as_matrix()
    J0 = m.J_regressor[0] @ m.v_template
    expected = (m.v_template - J0) @ R.T + J0 + trans[0]
    # smplx's Rodrigues adds 1e-8 to the rotation angle: agreement to ~1e-9 m
    np.testing.assert_allclose(v[0], expected, atol=1e-8)


def test_knee_rotation_moves_shank_about_knee_only(tiny):
    m = load_body_model(tiny["model"])
    ids = tiny["ids"]
    pose = np.zeros((1, 72))
    pose[0, 5 * 3] = 0.7  # right knee (joint 5) flexes 0.7 rad about the model's x
    v, _ = m.forward(pose)
    knee = m.J_regressor[5] @ m.v_template
    R = Rotation.from_rotvec([0.7, 0.0, 0.0]).as_matrix()
    for name in ("RTB1", "RLMAL", "RCAL"):  # shank and foot markers rotate about the knee
        np.testing.assert_allclose(v[0, ids[name]], R @ (m.v_template[ids[name]] - knee) + knee, atol=1e-8)
    for name in ("RLFC", "RTH1", "LTB1", "RASI"):  # thigh, other leg, pelvis stay
        np.testing.assert_allclose(v[0, ids[name]], m.v_template[ids[name]], atol=1e-12)


def test_betas_scale_the_body(tiny):
    """Beta 0 of the fixture scales every vertex by 5 % about the root: marker distances of the
    static trial grow by exactly 1.05, and the standing height too."""
    a = static_markers(tiny["model"], None, tiny["map"], duration_s=0.0)
    b = static_markers(tiny["model"], [1.0], tiny["map"], duration_s=0.0)
    da = np.linalg.norm(a.xyz[0, :, None] - a.xyz[0, None], axis=-1)
    db = np.linalg.norm(b.xyz[0, :, None] - b.xyz[0, None], axis=-1)
    np.testing.assert_allclose(db, 1.05 * da, atol=1e-9)
    assert body_height(tiny["model"], [1.0]) == pytest.approx(1.05 * body_height(tiny["model"]), rel=1e-9)


def test_z_up_to_y_up_and_floor(tiny, tmp_path):
    """Output = (x, z, -y) of the Z-up positions minus the floor, the floor being the lowest
    foot vertex over the sequence (quantile 0), which ends at y = 0."""
    seq = build_amass_sequence(tmp_path / "walk.npz", 60, RATE)
    m = load_body_model(tiny["model"])
    ids = tiny["ids"]
    names = ["RASI", "C7", "RCAL", "sole_heel_r", "sole_toe_r", "sole_heel_l", "sole_toe_l"]
    write_marker_map(tmp_path / "map.yaml", m.n_vertices, {n: ids[n] for n in names})
    out = amass_markers(seq, tiny["model"], tmp_path / "map.yaml", align_heading=False, floor_quantile=0.0)
    mo = read_amass(seq)
    v, _ = m.forward(mo.poses, mo.betas, mo.trans)
    floor_z = v[:, foot_vertices(m), 2].min()
    zup = v[:, [ids[n] for n in names]]
    expected = np.stack([zup[..., 0], zup[..., 2] - floor_z, -zup[..., 1]], axis=-1)
    np.testing.assert_allclose(out.xyz, expected, atol=1e-9)
    np.testing.assert_allclose(Z_UP_TO_Y_UP @ np.array([0.0, 0.0, 1.0]), [0.0, 1.0, 0.0])
    assert out.xyz[:, 3:, 1].min() == pytest.approx(0.0, abs=1e-12)
    assert out.names == names and out.rate == RATE
    np.testing.assert_allclose(out.time, np.arange(60) / RATE)


def test_heading_alignment_faces_plus_x(tiny, tmp_path):
    """A body walking along the Z-up world's -y (heading 0 rotated by -90 deg) comes out walking
    along +x, with the root starting above the origin; distances are preserved."""
    seq = tmp_path / "turned.npz"
    poses = walking_poses(60, RATE, heading_deg=-90.0)
    t = np.arange(60) / RATE
    trans = np.stack([np.zeros_like(t), -1.2 * t, np.full_like(t, 0.94)], axis=1)
    np.savez(seq, poses=poses, trans=trans, betas=np.zeros(10), gender="neutral", mocap_framerate=RATE)
    out = amass_markers(seq, tiny["model"], tiny["map"])
    pel = 0.5 * (out.marker("RASI") + out.marker("LASI"))
    step = pel[-1] - pel[0]
    assert step[0] > 0.5 and abs(step[2]) < 0.02
    assert np.all(out.marker("RASI")[:, 2] > out.marker("LASI")[:, 2])  # right side is +z in OpenSim
    ref = amass_markers(seq, tiny["model"], tiny["map"], align_heading=False)
    d = lambda x: np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(out.xyz), d(ref.xyz), atol=1e-9)


def test_static_trial_stands_on_floor_facing_x(tiny):
    st = static_markers(tiny["model"], None, tiny["map"], duration_s=0.5, rate_hz=100.0)
    assert st.n_frames == 51 and st.rate == 100.0
    assert np.all(st.marker("RTOE")[:, 0] > st.marker("RCAL")[:, 0])  # toes ahead of heels: faces +x
    assert st.marker("C7")[0, 1] > 1.3 and st.xyz[..., 1].min() > 0.0
    # arms come down from the T-pose: wrists below the shoulders
    assert st.marker("RFAradius")[0, 1] < st.marker("RACR")[0, 1] - 0.4
    np.testing.assert_allclose(MODEL_TO_OPENSIM @ [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])


def test_normal_offset_and_barycentric_markers(tiny, tmp_path):
    """A marker 1 cm off the skin lies along the face normal; a face entry lands on its centroid."""
    data = dict(np.load(tiny["model"]))
    i, j, k = 30, 31, 32
    data["f"] = np.array([[i, j, k]])
    np.savez(tmp_path / "m.npz", **data)
    m = load_body_model(tmp_path / "m.npz")
    write_marker_map(tmp_path / "map.yaml", m.n_vertices, {
        "A": {"vertex": i, "offset_m": 0.01}, "B": {"face": 0, "bary": [1, 1, 1], "offset_m": 0.0}, "C": j})
    from biohuman.motion.smpl import resolve_marker_map

    specs = resolve_marker_map(load_marker_map(tmp_path / "map.yaml", m.n_vertices), m)
    xyz, _, _ = marker_positions(m, specs, np.zeros((1, 72)), np.zeros(10))
    v = m.v_template
    n = np.cross(v[j] - v[i], v[k] - v[i])
    np.testing.assert_allclose(xyz[0, 0], v[i] + 0.01 * n / np.linalg.norm(n), atol=1e-12)
    np.testing.assert_allclose(xyz[0, 1], v[[i, j, k]].mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(xyz[0, 2], v[j], atol=1e-12)
    assert specs[2].offset_m == 0.0  # the map's default offset


def test_pkl_missing_keys_and_missing_files(tmp_path, tiny):
    (tmp_path / "pkl").mkdir()
    pkl = tmp_path / "pkl" / "SMPL_NEUTRAL.pkl"
    pkl.write_bytes(b"not read")
    with pytest.raises(InputFormatError, match="chumpy"):
        load_body_model(pkl)
    data = dict(np.load(tiny["model"]))
    del data["weights"]
    np.savez(tmp_path / "broken.npz", **data)
    with pytest.raises(InputFormatError, match="weights"):
        load_body_model(tmp_path / "broken.npz")
    data = dict(np.load(tiny["model"]))
    data["J_regressor"] = data["J_regressor"][:, :-1]
    np.savez(tmp_path / "bad_shape.npz", **data)
    with pytest.raises(InputFormatError, match="J_regressor"):
        load_body_model(tmp_path / "bad_shape.npz")
    with pytest.raises(ConfigError):
        load_body_model(tmp_path / "absent.npz")
    with pytest.raises(ConfigError, match="chumpy"):  # a folder holding only .pkl files
        load_body_model(tmp_path / "pkl", "neutral")
    # a folder with one model per gender (AMASS layout) is searched by gender
    (tmp_path / "male").mkdir()
    build_tiny_body_model(tmp_path / "male" / "model.npz", gender="male")
    assert load_body_model(tmp_path, "male").gender == "male"


def test_read_amass_layouts_and_frames(tmp_path):
    a = build_amass_sequence(tmp_path / "smplh.npz", 40, RATE, n_joints=52)
    mo = read_amass(a, frames=slice(10, 40, 2))
    assert mo.layout == "smplh" and mo.n_frames == 15 and mo.rate == RATE / 2
    np.testing.assert_array_equal(mo.frame_index, np.arange(10, 40, 2))
    full = read_amass(a)
    np.testing.assert_array_equal(mo.poses, full.poses[10:40:2])
    x = build_amass_sequence(tmp_path / "smplx.npz", 20, 60.0, n_joints=55, layout="smplx")
    mx = read_amass(x)
    assert mx.layout == "smplx" and mx.rate == 60.0 and mx.poses.shape == (20, 165)
    # a file holding only root_orient + pose_body (no 'poses')
    d = dict(np.load(x))
    del d["poses"]
    np.savez(tmp_path / "split.npz", **d)
    ms = read_amass(tmp_path / "split.npz")
    np.testing.assert_allclose(ms.poses[:, :66], mx.poses[:, :66])
    # layout conversion: SMPL-H poses on a 24-joint model keep the body, zero the hands
    p24, _ = full.poses_for(24)
    np.testing.assert_array_equal(p24[:, :66], full.poses[:, :66])
    assert not p24[:, 66:].any()
    p55, _ = full.poses_for(55)  # SMPL-H hands land on SMPL-X's hand joints 25..54
    np.testing.assert_array_equal(p55[:, 75:], full.poses[:, 66:])
    bad = dict(np.load(a))
    del bad["trans"]
    np.savez(tmp_path / "notrans.npz", **bad)
    with pytest.raises(InputFormatError, match="trans"):
        read_amass(tmp_path / "notrans.npz")
    bad = dict(np.load(a))
    bad["poses"] = bad["poses"][:, :70]
    np.savez(tmp_path / "width.npz", **bad)
    with pytest.raises(InputFormatError, match="poses"):
        read_amass(tmp_path / "width.npz")
    with pytest.raises(ConfigError):
        read_amass(a, frames=slice(50, 60))


def test_smplx_layout_gives_the_same_body_markers(tmp_path):
    """The same walk through a 55-joint (SMPL-X) tiny model with an SMPL-X-layout file gives the
    same markers as the 24-joint model with an SMPL-H file (body joints are shared)."""
    build_tiny_body_model(tmp_path / "x.npz", n_joints=55, marker_map=tmp_path / "x.yaml")
    build_tiny_body_model(tmp_path / "s.npz", n_joints=24, marker_map=tmp_path / "s.yaml")
    sx = build_amass_sequence(tmp_path / "sx.npz", 30, RATE, n_joints=55, layout="smplx")
    sh = build_amass_sequence(tmp_path / "sh.npz", 30, RATE, n_joints=52)
    a = amass_markers(sx, tmp_path / "x.npz", tmp_path / "x.yaml")
    b = amass_markers(sh, tmp_path / "s.npz", tmp_path / "s.yaml")
    assert load_body_model(tmp_path / "x.npz").kind == "smplx"
    np.testing.assert_allclose(a.xyz, b.xyz, atol=1e-9)


def test_shipped_marker_map_names_rajagopal_markers():
    """models/smpl_markers.yaml: SMPL (6890) and SMPL-X (10475) sections, every name a skin marker
    of Rajagopal2015, vertex ids in range and distinct, left/right pairs complete."""
    skin = set(skin_markers(model_info(None)))
    for nv in (6890, 10475):
        specs = load_marker_map(REPO / "models" / "smpl_markers.yaml", nv)
        names = [s.name for s in specs]
        assert set(names) <= skin, set(names) - skin
        verts = [s.vertices[0] for s in specs]
        assert all(0 <= v < nv for v in verts) and len(set(verts)) == len(verts)
        for n in names:
            if n[0] in "RL" and n not in ("C7", "CLAV"):
                assert ("L" if n[0] == "R" else "R") + n[1:] in names, n
        assert len(names) >= 40
        assert all(isinstance(s, MarkerSpec) and s.offset_m > 0 for s in specs)


@pytest.mark.slow
def test_fixture_markers_scale_and_ik_on_rajagopal(tmp_path, reduced):
    """A subject of shape beta0 = 1 (5 % larger): its static trial scales Rajagopal2015 by 1.05
    per segment, and OpenSim IK tracks its walk with small marker error."""
    from biohuman.osim.ik import run_ik
    from biohuman.osim.scale import scale_model

    build_tiny_body_model(tmp_path / "m.npz", marker_map=tmp_path / "map.yaml")
    seq = build_amass_sequence(tmp_path / "walk.npz", 72 if reduced else 132, RATE, betas=np.r_[1.0, np.zeros(15)])
    st = static_markers(tmp_path / "m.npz", seq, tmp_path / "map.yaml", duration_s=0.2)
    walk = amass_markers(seq, tmp_path / "m.npz", tmp_path / "map.yaml")
    write_trc(tmp_path / "static.trc", st)
    write_trc(tmp_path / "walk.trc", walk)
    res = scale_model(None, tmp_path / "static.trc", 75.0, tmp_path / "scaled.osim")
    for seg, f in res.segment_factors.items():
        assert f == pytest.approx(1.05, abs=0.01), seg
    ik = run_ik(res.model, tmp_path / "walk.trc", tmp_path / "walk_ik.mot", time_range=(0.0, walk.time[-1]))
    # OpenSim's best-practice marker error: RMS under 1-2 cm, max under 2-4 cm
    assert ik.marker_rmse.max() < 0.01
    assert ik.marker_max.max() < 0.03
    assert len(ik.weights) == len(skin_markers(model_info(None)))
