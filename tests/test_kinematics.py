"""OpenSim forward kinematics: body-fixed points, joint centres, centre of mass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biohuman.dynamics.kinematics import body_kinematics, center_of_mass, forward_kinematics, joint_centers
from biohuman.errors import InputFormatError, UnitsError
from biohuman.osim.model import load_model, opensim

WALK = Path("opensim-core/OpenSim/Examples/Moco/example3DWalking")

POSE = {  # radians / metres, a non-trivial pose of the generic model
    "pelvis_tilt": 0.1, "pelvis_list": -0.05, "pelvis_rotation": 0.3,
    "pelvis_tx": 0.2, "pelvis_ty": 0.95, "pelvis_tz": -0.1,
    "hip_flexion_r": 0.6, "hip_adduction_r": 0.1, "hip_rotation_r": -0.2, "knee_angle_r": 1.1,
    "ankle_angle_r": -0.2, "hip_flexion_l": -0.3, "knee_angle_l": 0.4, "ankle_angle_l": 0.15,
    "lumbar_extension": -0.2, "lumbar_bending": 0.1, "arm_flex_r": 0.5, "elbow_flex_r": 1.2,
}


def _frames(pose: dict[str, float], n: int = 3) -> pd.DataFrame:
    t = np.arange(n) * 0.01
    return pd.DataFrame({k: np.full(n, v) + 0.01 * np.arange(n) for k, v in pose.items()}, index=t)


def _opensim_marker_positions(coords: pd.Series) -> dict[str, np.ndarray]:
    """Reference: pose through OpenSim's own path (constraints enforced by assembly)."""
    model = load_model(None)
    state = model.initSystem()
    cs = model.getCoordinateSet()
    names = list(coords.index)
    for i, name in enumerate(names):
        cs.get(name).setValue(state, float(coords[name]), i == len(names) - 1)
    model.realizePosition(state)
    ms = model.getMarkerSet()
    out = {}
    for i in range(ms.getSize()):
        v = ms.get(i).getLocationInGround(state)
        out[ms.get(i).getName()] = np.array([v.get(0), v.get(1), v.get(2)])
    v = model.getJointSet().get("patellofemoral_r").getChildFrame().getPositionInGround(state)
    out["patella_r_ref"] = np.array([v.get(0), v.get(1), v.get(2)])
    return out


def test_markers_match_opensim_pose() -> None:
    """Model markers are body-fixed points: our FK equals OpenSim's marker positions.

    The frame leaves out knee_angle_*_beta, so this also checks that the coupled coordinate is
    computed from its constraint.
    """
    model = load_model(None)
    ms = model.getMarkerSet()
    points = {}
    for i in range(ms.getSize()):
        m = ms.get(i)
        loc = m.get_location()
        points[m.getName()] = (m.getParentFrameName().split("/")[-1], (loc.get(0), loc.get(1), loc.get(2)))
    frames = _frames(POSE)
    fk = body_kinematics(None, frames, points)
    ref = _opensim_marker_positions(frames.iloc[2])
    err = max(float(np.linalg.norm(fk[name][2] - ref[name])) for name in points)
    assert err < 2e-5  # OpenSim's assembly tolerance
    # the patella follows the coupled knee_angle_r_beta
    patella = joint_centers(None, frames, ["patella_r"])["patella_r"][2]
    np.testing.assert_allclose(patella, ref["patella_r_ref"], atol=2e-5)


def test_hand_check_pelvis_rotation_and_hip_flexion() -> None:
    """pelvis_rotation = 90 deg about y maps a pelvis-frame offset (x, y, z) to (z, y, -x)."""
    model = load_model(None)
    hip = model.getJointSet().get("hip_r").getParentFrame().findTransformInBaseFrame().p()
    hip_offset = np.array([hip.get(0), hip.get(1), hip.get(2)])
    frames = _frames({"pelvis_tx": 0.3, "pelvis_ty": 1.0, "pelvis_rotation": np.pi / 2}, n=1)
    jc = joint_centers(None, frames, ["pelvis", "hip_r"])
    np.testing.assert_allclose(jc["pelvis"][0], [0.3, 1.0, 0.0], atol=1e-9)
    expected = np.array([0.3, 1.0, 0.0]) + np.array([hip_offset[2], hip_offset[1], -hip_offset[0]])
    np.testing.assert_allclose(jc["hip_r"][0], expected, atol=1e-9)

    # hip flexion by 90 deg about the (ground z) flexion axis swings the knee forward
    zero = joint_centers(None, _frames({"pelvis_ty": 1.0}, n=1), ["hip_r", "knee_r"])
    flexed = joint_centers(None, _frames({"pelvis_ty": 1.0, "hip_flexion_r": np.pi / 2}, n=1), ["hip_r", "knee_r"])
    d0 = zero["knee_r"][0] - zero["hip_r"][0]
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(flexed["knee_r"][0] - flexed["hip_r"][0], rot @ d0, atol=1e-9)
    assert flexed["knee_r"][0][0] > zero["knee_r"][0][0] + 0.3


def test_center_of_mass_is_mass_weighted_body_centres() -> None:
    model = load_model(None)
    bodies = model.getBodySet()
    points, masses = {}, {}
    for i in range(bodies.getSize()):
        b = bodies.get(i)
        c = b.getMassCenter()
        points[b.getName()] = (b.getName(), (c.get(0), c.get(1), c.get(2)))
        masses[b.getName()] = b.getMass()
    frames = _frames(POSE, n=4)
    com = center_of_mass(None, frames)
    centres = body_kinematics(None, frames, points)
    total = sum(masses.values())
    weighted = sum(masses[k] * centres[k] for k in points) / total
    np.testing.assert_allclose(com, weighted, atol=1e-9)
    assert com.shape == (4, 3)


def test_joint_center_names_and_columns() -> None:
    frames = _frames(POSE, n=2)
    frames.columns = [f"/jointset/x/{c}/value" for c in frames.columns]  # OpenSim state paths
    jc = joint_centers(None, frames)
    for name in ("pelvis", "hip_r", "knee_r", "ankle_r", "mtp_r", "lumbar", "shoulder_r", "elbow_r", "wrist_r"):
        assert jc[name].shape == (2, 3)
    assert np.all(np.isfinite(np.stack(list(jc.values()))))
    with pytest.raises(InputFormatError):
        joint_centers(None, frames, ["no_such_joint"])


def test_bad_inputs() -> None:
    with pytest.raises(UnitsError):
        forward_kinematics(None, _frames({"knee_angle_r": 60.0}), com=True)  # degrees
    with pytest.raises(InputFormatError):
        forward_kinematics(None, _frames({"not_a_coordinate": 0.0}), com=True)
    bad_time = _frames({"knee_angle_r": 0.1})
    bad_time.index = [0.0, 0.02, 0.01]
    with pytest.raises(InputFormatError):
        forward_kinematics(None, bad_time, com=True)


def test_walking_markers_close_to_experiment(external_dir: Path) -> None:
    """FK of the scaled model's markers with the IK/RRA coordinates vs the measured TRC.

    The RRA coordinates sit about 2 cm lower than the markers (a constant offset, also visible as
    feet ~2 cm below the floor), so the constant mean offset is removed before comparing.
    """
    osim = opensim()
    d = external_dir / WALK
    trc = osim.TimeSeriesTableVec3(str(d / "markers_walk.trc"))
    assert trc.getTableMetaDataAsString("Units") == "mm"
    flat = trc.flatten()
    data = flat.getMatrix().to_numpy() / 1000.0
    labels = list(flat.getColumnLabels())
    t_trc = np.asarray(trc.getIndependentColumn())
    table = osim.TimeSeriesTable(str(d / "coordinates.sto"))
    t = np.asarray(table.getIndependentColumn())
    cols = list(table.getColumnLabels())
    coords = pd.DataFrame(table.getMatrix().to_numpy(), index=t, columns=cols)
    coords = coords[[c for c in cols if c.endswith("/value")]]
    rows = np.flatnonzero((t_trc >= t[0]) & (t_trc <= t[-1]))[::5]
    coords = coords.iloc[[int(np.argmin(np.abs(t - x))) for x in t_trc[rows]]]

    model = load_model(d / "subject_walk_scaled.osim")
    ms = model.getMarkerSet()
    names = {lab.rsplit("_", 1)[0] for lab in labels}
    points = {}
    for i in range(ms.getSize()):
        m = ms.get(i)
        if m.getName() in names:
            loc = m.get_location()
            points[m.getName()] = (m.getParentFrameName().split("/")[-1], (loc.get(0), loc.get(1), loc.get(2)))
    assert len(points) >= 35
    fk = body_kinematics(d / "subject_walk_scaled.osim", coords, points)
    diffs = np.stack([
        fk[n] - np.column_stack([data[rows, labels.index(f"{n}_{k}")] for k in (1, 2, 3)]) for n in points
    ])  # (markers, T, 3)
    offset = np.nanmean(diffs, axis=(0, 1))
    assert abs(offset[1] + 0.021) < 0.005 and abs(offset[0]) < 0.005 and abs(offset[2]) < 0.005
    err = np.linalg.norm(diffs - offset, axis=2)
    assert np.nanmedian(err) < 0.025


def test_coordinate_couplers_of_rajagopal() -> None:
    """The one coupler reader: Rajagopal2015's knee `*_beta` coordinates follow the knee angle."""
    from biohuman.osim.model import coordinate_couplers, single_couplers

    model = load_model(None)
    model.initSystem()
    couplers = {c.dependent: c for c in coordinate_couplers(model)}
    assert {"knee_angle_r_beta", "knee_angle_l_beta"} <= set(couplers)
    for side in ("r", "l"):
        c = couplers[f"knee_angle_{side}_beta"]
        assert c.independent == (f"knee_angle_{side}",) and c.enforced
        # the function is OpenSim's own: evaluate it through the constraint object too
        x = opensim().Vector(1, 1.0)
        assert c.function.calcValue(x) == pytest.approx(c.constraint.getFunction().calcValue(x))
    single = single_couplers(model)
    assert single["knee_angle_r_beta"][0] == "knee_angle_r"
    assert set(single) == {d for d, c in couplers.items() if c.enforced and len(c.independent) == 1}
