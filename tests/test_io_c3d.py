"""C3D reading (biohuman.io.c3d) against OpenSim's own conversions, frame rotation, plate -> foot
assignment and exact load combination, conversion to the spine's files, marker maps, and
clear errors for corrupt, truncated or plate-less files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from biohuman.errors import ConfigError, InputFormatError, MarkerError
from biohuman.io.c3d import (
    C3DData,
    Contact,
    ForcePlate,
    apply_marker_map,
    assign_plates,
    c3d_to_opensim_files,
    feet_ground_forces,
    lab_rotation,
    load_marker_map,
    read_c3d,
)
from biohuman.io.trc import MarkerData

SHARED = "opensim-core/OpenSim/Tests/shared"


def _c3d(external: Path, trial: str) -> Path:
    return external / SHARED / f"{trial}.c3d"


@pytest.mark.parametrize("trial", ["walking2", "walking5"])
def test_matches_opensim_conversion(external_dir, trial):
    """Markers within 0.1 mm, forces within 0.1 N, plate origins / CoP within 0.1 mm, moments
    within 0.1 N mm of OpenSim's C3DFileAdapter standards, same missing-marker pattern."""
    from biohuman.validation.c3d import compare_trial

    r = compare_trial(external_dir, trial)
    assert r["missing_pattern_equal"] == 1.0
    assert r["marker_max_diff_mm"] <= 0.1
    assert r["marker_time_max_diff_s"] <= 1e-9
    assert r["force_max_diff_N_origin"] <= 0.1 and r["force_max_diff_N_cop"] <= 0.1
    assert r["origin_max_diff_mm"] <= 0.1 and r["cop_max_diff_mm"] <= 0.1
    assert r["moment_max_diff_Nm_origin"] <= 1e-4 and r["moment_max_diff_Nm_cop"] <= 1e-4
    assert r["analog_max_diff"] <= 1e-6


def test_validate_c3d_writes_json(external_dir, tmp_path):
    from biohuman.validation.c3d import validate_c3d

    res = validate_c3d(external_dir, tmp_path)
    assert (tmp_path / "c3d.json").is_file()
    assert res["c3d"]["pass"] is True


def test_rotation_to_y_up(external_dir):
    """Rotated data = R @ lab data with the lab's +Z (POINT:Y_SCREEN) becoming +Y; stance forces
    point up; markers stand above the floor."""
    lab = read_c3d(_c3d(external_dir, "walking2"), rotate_to_y_up=False)
    yup = read_c3d(_c3d(external_dir, "walking2"))
    R = yup.rotation
    assert np.allclose(R @ np.array([0.0, 0.0, 1.0]), [0.0, 1.0, 0.0])
    assert np.isclose(np.linalg.det(R), 1.0)
    assert np.allclose(yup.markers.xyz, lab.markers.xyz @ R.T, equal_nan=True)
    for a, b in zip(lab.plates, yup.plates):
        assert np.allclose(b.force, a.force @ R.T)
        assert np.allclose(b.cop, a.cop @ R.T, equal_nan=True)
        assert np.allclose(b.centre, R @ a.centre)
        assert b.force[:, 1].max() > 300.0  # a foot lands on every plate of this trial
    assert np.nanmin(yup.markers.xyz[:, :, 1]) > 0.0


def test_lab_rotation_is_proper():
    for up in np.eye(3):
        for sign in (1.0, -1.0):
            R = lab_rotation(sign * up)
            assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
            assert np.allclose(R @ (sign * up), [0.0, 1.0, 0.0])


def test_c3d_to_opensim_files_assigns_plates(external_dir, tmp_path):
    """Each loaded plate is given to the foot standing on it (checked independently: the stance
    foot's heel and forefoot markers are the lower ones during the contact), and the written files reproduce the
    plate's force, CoP and free moment exactly through load_measured_grf."""
    from biohuman.dynamics.grf import load_measured_grf

    for trial in ("walking2", "walking5"):
        out = c3d_to_opensim_files(_c3d(external_dir, trial), tmp_path / trial)
        assert set(out) == {"trc", "grf_mot", "external_loads"}
        gf = load_measured_grf(out["grf_mot"], out["external_loads"], contact_threshold_n=20.0)
        d = read_c3d(_c3d(external_dir, trial))
        for pf in d.plates:
            on = np.flatnonzero(pf.force[:, 1] > 20.0)
            frames = (d.markers.time >= pf.time[on[0]]) & (d.markers.time <= pf.time[on[-1]])
            # the stance foot is the one whose heel and forefoot markers stay low during the contact
            height = {s: float(np.nanmedian(d.markers.marker(f"{s.upper()}CAL")[frames, 1])
                               + np.nanmedian(d.markers.marker(f"{s.upper()}MT2")[frames, 1])) for s in ("r", "l")}
            foot = 0 if height["r"] < height["l"] else 1
            assert abs(height["r"] - height["l"]) > 0.05, height
            i = np.searchsorted(gf.time, pf.time[on])
            assert np.allclose(gf.time[i], pf.time[on])
            assert np.max(np.abs(gf.force[i, foot] - pf.force[on])) < 1e-6
            assert np.max(np.abs(gf.cop[i, foot] - pf.cop[on])) < 1e-6
            assert np.max(np.abs(gf.torque[i, foot] - pf.free_moment[on])) < 1e-6


def _plate(index: int, time: np.ndarray, force: np.ndarray, cop: np.ndarray, centre: np.ndarray) -> ForcePlate:
    """A plate whose loads act at `cop` with no free moment (moment about the centre by hand)."""
    moment = np.cross(cop - centre, force)
    corners = centre + np.array([[-0.3, 0, -0.2], [0.3, 0, -0.2], [0.3, 0, 0.2], [-0.3, 0, 0.2]])
    return ForcePlate(index, time, force, moment, cop, np.zeros_like(force), centre, corners)


def _feet_markers(time: np.ndarray, r: np.ndarray, l: np.ndarray) -> MarkerData:  # noqa: E741
    xyz = np.stack([r, r + [0.2, 0, 0], l, l + [0.2, 0, 0]], axis=1)
    return MarkerData(time, ["RCAL", "RTOE", "LCAL", "LTOE"], xyz, 1.0 / (time[1] - time[0]))


def test_one_plate_both_feet_and_two_plates_one_foot():
    """Plate 1 carries the right foot, then the left; plates 1 and 2 together carry the right
    foot: the combined CoP is the force-weighted mean of the two CoPs (hand-computed)."""
    t = np.arange(0, 3.0, 0.01)
    n = len(t)
    c1, c2 = np.array([0.0, 0.0, 0.0]), np.array([0.6, 0.0, 0.0])
    f1, f2 = np.zeros((n, 3)), np.zeros((n, 3))
    p1, p2 = np.tile(c1, (n, 1)), np.tile(c2, (n, 1))
    a = (t >= 0.2) & (t < 0.8)    # right foot on plate 1
    b = (t >= 1.2) & (t < 1.8)    # left foot on plate 1
    both = (t >= 2.2) & (t < 2.8)  # right foot straddling plates 1 and 2
    f1[a] = [10.0, 600.0, 5.0]
    p1[a] = [0.05, 0.0, 0.02]
    f1[b] = [-20.0, 500.0, 0.0]
    p1[b] = [-0.05, 0.0, -0.04]
    f1[both], f2[both] = [0.0, 300.0, 0.0], [0.0, 100.0, 0.0]
    p1[both], p2[both] = [0.25, 0.0, 0.0], [0.35, 0.0, 0.0]
    r = np.zeros((n, 3))
    l = np.zeros((n, 3))  # noqa: E741
    r[:] = [-0.02, 0.05, 0.0]
    l[:] = [2.0, 0.05, 0.0]
    l[b] = [-0.1, 0.05, -0.05]
    r[b] = [1.5, 0.3, 0.0]
    r[both] = [0.2, 0.05, 0.0]
    data = C3DData(_feet_markers(t, r, l), [_plate(1, t, f1, p1, c1), _plate(2, t, f2, p2, c2)], None, {},
                   np.eye(3), 100.0, 100.0, 0, "synthetic")
    contacts = assign_plates(data, {"r": ["RCAL", "RTOE"], "l": ["LCAL", "LTOE"]})
    got = [(c.plate, c.foot, round(c.t0, 2)) for c in contacts]
    assert got == [(1, "r", 0.2), (1, "l", 1.2), (1, "r", 2.2), (2, "r", 2.2)]
    gf = feet_ground_forces(data, contacts)
    assert np.allclose(gf.force[a, 0], f1[a]) and np.allclose(gf.force[a, 1], 0.0)
    assert np.allclose(gf.cop[a, 0], p1[a]) and np.allclose(gf.torque[a], 0.0, atol=1e-9)
    assert np.allclose(gf.force[b, 1], f1[b]) and np.allclose(gf.cop[b, 1], p1[b])
    assert np.allclose(gf.force[both, 0], [0.0, 400.0, 0.0])
    expected_x = (300.0 * 0.25 + 100.0 * 0.35) / 400.0
    assert np.allclose(gf.cop[both, 0], [expected_x, 0.0, 0.0])
    assert np.allclose(gf.torque[both, 0], 0.0, atol=1e-9)
    assert not gf.contact[~(a | b | both)].any()


def test_plate_assignment_needs_foot_markers():
    t = np.arange(0, 1.0, 0.01)
    f = np.zeros((len(t), 3))
    f[20:60] = [0.0, 700.0, 0.0]
    mk = MarkerData(t, ["RASI", "LASI"], np.ones((len(t), 2, 3)), 100.0)
    data = C3DData(mk, [_plate(1, t, f, np.zeros_like(f), np.zeros(3))], None, {}, np.eye(3), 100.0, 100.0, 0, "x")
    with pytest.raises(MarkerError, match="foot markers"):
        assign_plates(data, {"r": [], "l": []})


def test_frames_selection_and_no_plates(external_dir, tmp_path):
    out = c3d_to_opensim_files(_c3d(external_dir, "walking2"), tmp_path, frames=[500, 700], forces=True)
    from biohuman.io.trc import read_trc

    mk = read_trc(out["trc"], max_gap_s=None)
    assert mk.n_frames == 201 and np.isclose(mk.time[0], 500 / 250.0) and np.isclose(mk.time[-1], 700 / 250.0)
    cmu = external_dir / "nimblephysics/data/c3d/cmu_02_05.c3d"
    with pytest.raises(InputFormatError, match="no force plates"):
        c3d_to_opensim_files(cmu, tmp_path, forces=True)
    with pytest.raises(ConfigError, match="frames"):
        c3d_to_opensim_files(_c3d(external_dir, "walking2"), tmp_path, frames=[0, 5000])


def test_cmu_prefix_and_marker_map(external_dir, caplog):
    """'Subject:' prefixes are stripped; the CMU map renames and drops the rest with a log line."""
    from biohuman.osim.model import model_info, resolve_model_path

    d = read_c3d(external_dir / "nimblephysics/data/c3d/cmu_02_05.c3d")
    assert "RFWT" in d.markers.names and not any(":" in n for n in d.markers.names)
    mapping = load_marker_map("cmu_vicon")
    with caplog.at_level(logging.INFO):
        mk = apply_marker_map(d.markers, mapping, logger=logging.getLogger("test"))
    assert "unmapped" in caplog.text and "RTHI" in caplog.text
    assert set(mk.names) == set(mapping.values())
    assert np.array_equal(mk.marker("RASI"), d.markers.marker("RFWT"), equal_nan=True)
    assert set(mk.names) <= set(model_info(resolve_model_path("Rajagopal2015")).markers)


def test_marker_maps_name_model_markers():
    """Every shipped map targets markers of Rajagopal2015, one lab marker per model marker."""
    from biohuman.io.c3d import MARKER_MAPS_DIR
    from biohuman.osim.model import model_info, resolve_model_path

    known = set(model_info(resolve_model_path("Rajagopal2015")).markers)
    maps = sorted(MARKER_MAPS_DIR.glob("*.yaml"))
    assert maps
    for p in maps:
        m = load_marker_map(p)
        assert set(m.values()) <= known, (p.name, set(m.values()) - known)


def test_rajagopal_lab_map_on_the_pipeline_trc(external_dir):
    from biohuman.io.trc import read_trc

    trc = read_trc(external_dir / "opensim-models/Pipelines/Rajagopal/ExpData/motion_capture_walk.trc", max_gap_s=None)
    mk = apply_marker_map(trc, load_marker_map("rajagopal_pipeline_lab"))
    assert {"RASI", "LPSI", "RLFC", "RCAL", "LTOE", "RMT5"} <= set(mk.names)
    assert np.array_equal(mk.marker("RCAL"), trc.marker("R.Heel"), equal_nan=True)


def test_marker_map_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown marker map"):
        load_marker_map("no_such_map")
    bad = tmp_path / "dup.yaml"
    bad.write_text("markers: {A: RASI, B: RASI}\n")
    with pytest.raises(ConfigError, match="both map"):
        load_marker_map(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("description: nothing\n")
    with pytest.raises(ConfigError, match="markers"):
        load_marker_map(empty)
    mk = MarkerData(np.arange(3) / 100.0, ["X"], np.zeros((3, 1, 3)), 100.0)
    with pytest.raises(MarkerError, match="none of"):
        apply_marker_map(mk, {"A": "RASI"})


def test_corrupt_and_truncated_files(external_dir, tmp_path):
    src = _c3d(external_dir, "walking2").read_bytes()
    cases = {
        "missing.c3d": None,
        "tiny.c3d": src[:100],
        "garbage.c3d": bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8)),
        "half.c3d": src[: len(src) // 2],
        "cut_params.c3d": src[:5000],
    }
    for name, blob in cases.items():
        p = tmp_path / name
        if blob is not None:
            p.write_bytes(blob)
        with pytest.raises(InputFormatError) as exc:
            read_c3d(p)
        assert name in str(exc.value)
    with pytest.raises(InputFormatError, match="truncated"):
        read_c3d(tmp_path / "half.c3d")
    with pytest.raises(InputFormatError, match="not a C3D"):
        read_c3d(tmp_path / "garbage.c3d")


def test_contact_dataclass_is_plain():
    c = Contact(1, "r", 0.0, 1.0, 0.1, 0.5)
    assert c.foot == "r" and c.plate == 1
