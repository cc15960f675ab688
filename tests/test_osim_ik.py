"""Inverse kinematics: exact recovery on synthetic markers, OpenSim reference on real running data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biohuman.errors import ConfigError, MarkerError
from biohuman.osim._tools import (
    load_osim,
    model_marker_positions,
    read_coordinates,
    read_storage,
    read_trc,
    write_trc,
)
from biohuman.osim.ik import run_ik
from biohuman.osim.model import model_info, opensim, rajagopal_path, skin_markers

LOWER = ("pelvis", "hip", "knee_angle_r", "knee_angle_l", "ankle")


def synthetic_motion(frames: int = 10) -> pd.DataFrame:
    """Known coordinates (rad, m) of the generic model: a small stepping motion, arms bent."""
    info = model_info()
    t = np.arange(frames) * 0.01
    ph = np.linspace(0.0, 1.0, frames)
    q = pd.DataFrame(0.0, index=pd.Index(t, name="time"), columns=list(info.coordinates))
    q["pelvis_ty"] = 0.95
    q["pelvis_tx"] = 0.1 * ph
    q["pelvis_tilt"] = np.deg2rad(-5 + 3 * ph)
    q["pelvis_rotation"] = np.deg2rad(4 * ph)
    q["hip_flexion_r"] = np.deg2rad(30 * ph)
    q["hip_flexion_l"] = np.deg2rad(-10 + 10 * ph)
    q["hip_adduction_r"] = np.deg2rad(3 * ph)
    q["hip_rotation_l"] = np.deg2rad(5 * ph)
    q["knee_angle_r"] = np.deg2rad(10 + 40 * ph)
    q["knee_angle_l"] = np.deg2rad(5 + 10 * ph)
    q["ankle_angle_r"] = np.deg2rad(-10 + 15 * ph)
    q["ankle_angle_l"] = np.deg2rad(5 - 5 * ph)
    q["lumbar_extension"] = np.deg2rad(-3)
    q["arm_flex_r"] = np.deg2rad(10)
    q["elbow_flex_r"] = np.deg2rad(20)
    q["elbow_flex_l"] = np.deg2rad(15)
    q["pro_sup_r"] = np.deg2rad(30)
    q["pro_sup_l"] = np.deg2rad(30)
    return q


@pytest.fixture(scope="module")
def synthetic_ik(tmp_path_factory):
    d = tmp_path_factory.mktemp("ik")
    q = synthetic_motion()
    names = list(skin_markers(model_info()))
    xyz = model_marker_positions(str(rajagopal_path()), q, names)
    write_trc(d / "walk.trc", names, q.index.to_numpy(), xyz * 1000.0, units="mm")
    res = run_ik(rajagopal_path(), d / "walk.trc", d / "walk.mot")
    return q, res, d


def test_ik_recovers_known_coordinates(synthetic_ik) -> None:
    q, res, _ = synthetic_ik
    info = model_info()
    assert list(res.coordinates.columns) == list(info.coordinates)
    assert np.allclose(res.coordinates.index.to_numpy(), q.index.to_numpy())
    lower = [c for c in info.rotational if c.startswith(LOWER) and c not in info.locked and c not in info.coupled]
    err = np.rad2deg((res.coordinates[lower] - q[lower]).abs().max())
    assert err.max() < 0.5, err.sort_values().tail()
    trans = ["pelvis_tx", "pelvis_ty", "pelvis_tz"]
    assert (res.coordinates[trans] - q[trans]).abs().max().max() < 2e-3
    assert res.marker_rmse.max() < 1e-3 and res.marker_max.max() < 3e-3
    assert res.marker_errors.shape == (len(q), len(res.weights))


def test_ik_output_file_is_radians_and_beta_consistent(synthetic_ik) -> None:
    _, res, d = synthetic_ik
    table, header = read_storage(res.out_mot)
    assert header["inDegrees"] == "no"
    # coupled patella coordinate follows the knee (Rajagopal: beta == knee angle, radians)
    assert np.allclose(table["knee_angle_r_beta"], table["knee_angle_r"], atol=1e-6)
    model = load_osim(rajagopal_path())
    back = read_coordinates(res.out_mot, model)
    assert np.allclose(back.to_numpy(), res.coordinates.to_numpy())
    # OpenSim reads the file back: its coordinates match ours
    osim = opensim()
    sto = osim.Storage(str(res.out_mot))
    assert not sto.isInDegrees()
    # the saved setup is complete: it reruns in OpenSim on its own
    assert res.setup.is_file() and res.marker_errors_sto.is_file() and res.marker_locations_sto.is_file()
    root = ET.parse(res.setup).getroot()
    tasks = {t.get("name") for t in root.iter("IKMarkerTask")}
    assert tasks == set(res.weights) and not any(t.endswith("JC") for t in tasks)
    assert not list(d.glob(".ik.*"))  # staging folder cleaned


def test_ik_weights_and_errors(synthetic_ik, tmp_path: Path) -> None:
    _, _, d = synthetic_ik
    with pytest.raises(ConfigError):
        run_ik(rajagopal_path(), d / "walk.trc", tmp_path / "x.mot", marker_weights={"NOPE": 1.0})
    trial = read_trc(d / "walk.trc")
    write_trc(tmp_path / "other.trc", ["A", "B"], trial.time, trial.xyz[:, :2])
    with pytest.raises(MarkerError):
        run_ik(rajagopal_path(), tmp_path / "other.trc", tmp_path / "x.mot")
    res = run_ik(rajagopal_path(), d / "walk.trc", tmp_path / "w.mot", time_range=(0.02, 0.05),
                 marker_weights={"RASI": 10.0, "LTOE": 0.0}, report_errors=False)
    assert len(res.coordinates) == 4 and res.weights["RASI"] == 10.0 and "LTOE" not in res.weights
    assert res.marker_errors_sto is None and not (tmp_path / "w_ik_marker_errors.sto").exists()


def _reference_weights(setup: Path) -> dict[str, float]:
    root = ET.parse(setup).getroot()
    return {t.get("name"): float(t.findtext("weight")) for t in root.iter("IKMarkerTask")
            if (t.findtext("apply") or "").strip() == "true"}


def test_ik_matches_opensim_reference_on_running(external_dir: Path, tmp_path: Path) -> None:
    """10 frames of Rajagopal running vs OpenSim's reference IK (same model, same weights)."""
    pipe = external_dir / "opensim-models_391677a" / "Pipelines" / "Rajagopal"
    model_path = pipe / "outputReference" / "subject01_registered.osim"
    weights = _reference_weights(pipe / "Setup_IK.xml")
    res = run_ik(model_path, pipe / "subject01_run.trc", tmp_path / "run.mot", time_range=(1.0, 1.09),
                 marker_weights=weights)
    assert len(res.coordinates) == 10
    model = load_osim(model_path)
    ref = read_coordinates(pipe / "outputReference" / "ResultsIK" / "subject01_run_IK.mot", model)
    ref = ref.reindex(res.coordinates.index, method="nearest", tolerance=1e-6)
    cols = [f"{j}_{s}" for s in "rl" for j in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle",
                                                "ankle_angle")]
    diff = np.rad2deg((res.coordinates[cols] - ref[cols]).abs())
    assert diff.max().max() < 6.0, diff.max()
    assert diff.mean().mean() < 2.5, diff.mean()
    # ours is at least as good an optimum of the same weighted problem
    trial = read_trc(pipe / "subject01_run.trc")
    names = [n for n in weights if n in trial.names]
    k = [int(np.argmin(np.abs(trial.time - t))) for t in res.coordinates.index]
    meas = trial.xyz[k][:, [trial.names.index(n) for n in names]]
    w = np.array([weights[n] for n in names])
    cost = {}
    for label, q in (("ours", res.coordinates), ("reference", ref)):
        e = np.linalg.norm(model_marker_positions(model, q, names) - meas, axis=2)
        cost[label] = float((w * e**2).sum(axis=1).mean())
    assert cost["ours"] <= 1.01 * cost["reference"], cost
    assert res.marker_rmse.mean() < 0.025
