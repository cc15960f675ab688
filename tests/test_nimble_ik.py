"""nimblephysics inverse kinematics: exact recovery of a synthetic subject's motion, agreement with
OpenSim's InverseKinematicsTool on the same scaled model and markers, missing markers, first-frame
robustness to the walking direction, and bad inputs.

The synthetic trial (a true scaled model, its walking motion, markers misplaced on the body and
noisy) comes from `biohuman.motion.generate`; exact markers are the true model's markers at the
true coordinates, evaluated by OpenSim (an oracle independent of nimble).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biohuman.config import validate_config
from biohuman.dynamics.nimble_ik import nimble_ik
from biohuman.errors import ConfigError, MarkerError
from biohuman.io.trc import MarkerData, read_trc, write_trc
from biohuman.osim._tools import load_osim, model_marker_positions, read_coordinates, read_storage
from biohuman.osim.ik import run_ik
from biohuman.osim.model import model_info, opensim

LOWER = [f"{c}_{s}" for s in ("r", "l") for c in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle",
                                                  "ankle_angle")] + ["pelvis_tilt", "pelvis_list", "pelvis_rotation"]
TRANS = ["pelvis_tx", "pelvis_ty", "pelvis_tz"]


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> dict:
    """A synthetic walking trial: true model, true coordinates, perturbed and exact markers."""
    from biohuman.motion.generate import generate_subject, generate_trial

    tmp = tmp_path_factory.mktemp("nimble_ik")
    cfg = validate_config({"results": str(tmp), "synthetic": {"marker_offset_m": [0.01, 0.02], "noise_sd_m": 0.002}})
    d = tmp / "syn01"
    gt = d / "ground_truth"
    generate_subject(cfg, "syn01", static_trc=d / "static.trc", sheet=d / "subject.yaml", true_model=gt / "model.osim",
                     truth=gt / "subject.json")
    generate_trial(cfg, "syn01", "walk", true_model=gt / "model.osim", subject_truth=gt / "subject.json",
                   trc=d / "walk.trc", coordinates=gt / "walk.mot", truth=gt / "walk.json")
    model = gt / "model.osim"
    om = load_osim(model)
    info = model_info(model)
    truth = read_coordinates(gt / "walk.mot", om)
    truth = truth[[c for c in info.coordinates if c not in info.coupled]]  # the file's betas are not radians
    markers = read_trc(d / "walk.trc")
    exact = MarkerData(truth.index.to_numpy(), markers.names, model_marker_positions(om, truth, markers.names),
                       markers.rate, source="exact markers")
    return {"dir": d, "model": model, "info": info, "truth": truth, "markers": markers, "exact": exact}


def _independent(info) -> list[str]:  # noqa: ANN001
    return [c for c in info.coordinates if c not in info.locked and c not in info.coupled]


def test_recovers_true_motion_from_exact_markers(trial, tmp_path: Path) -> None:
    info, truth = trial["info"], trial["truth"]
    res = nimble_ik(trial["model"], trial["exact"], tmp_path / "exact.mot")
    assert list(res.coordinates.columns) == list(info.coordinates)
    assert np.allclose(res.coordinates.index.to_numpy(), truth.index.to_numpy())
    q = res.coordinates
    rot = [c for c in _independent(info) if c not in TRANS]
    err_deg = np.degrees((q[rot] - truth[rot]).abs().max())
    assert err_deg.max() < 1e-3, err_deg.sort_values().tail()
    assert (q[TRANS] - truth[TRANS]).abs().max().max() < 1e-6
    for c in info.locked:
        assert np.all(q[c] == truth[c].iloc[0])  # held at the default (the truth never moves them)
    assert res.marker_rmse.max() < 1e-6 and res.marker_max.max() < 1e-5


def test_matches_opensim_ik(trial, tmp_path: Path, reduced: bool) -> None:
    """Same scaled model, same misplaced + noisy markers, same weights and window as OpenSim IK
    (accuracy 1e-6): the coordinates agree, and nimble's optimum is at least as good frame by frame."""
    info, truth = trial["info"], trial["truth"]
    n = 20 if reduced else 60
    window = (float(truth.index[0]), float(truth.index[n - 1]))
    trc = trial["dir"] / "walk.trc"
    weights = {"RASI": 2.0, "LASI": 2.0, "C7": 0.5}
    ref = run_ik(trial["model"], trc, tmp_path / "opensim.mot", time_range=window, marker_weights=weights,
                 accuracy=1e-6, report_errors=False)
    res = nimble_ik(trial["model"], trial["markers"], tmp_path / "nimble.mot", time_range=window,
                    marker_weights=weights)
    assert res.weights == ref.weights and res.weights["RASI"] == 2.0
    assert len(res.coordinates) == n and np.allclose(res.coordinates.index, ref.coordinates.index)
    q, qr = res.coordinates, ref.coordinates
    rmse = np.sqrt((np.degrees(q - qr) ** 2).mean())
    assert rmse[LOWER].max() < 0.5, rmse[LOWER].sort_values().tail()
    rot = [c for c in _independent(info) if c not in TRANS]
    assert rmse[rot].max() < 2.0, rmse[rot].sort_values().tail()  # flat directions: forearm, shoulder rotation
    assert (q[TRANS] - qr[TRANS]).abs().max().max() < 1e-3
    # the weighted marker cost of every frame: nimble's <= OpenSim's (OpenSim stops at its accuracy)
    cols = list(res.marker_errors.columns)
    w = np.array([res.weights[c] for c in cols])
    cost_n = (w * res.marker_errors[cols].to_numpy() ** 2).sum(axis=1)
    cost_o = (w * ref.marker_errors[cols].to_numpy() ** 2).sum(axis=1)
    assert np.all(cost_n <= cost_o * (1 + 1e-6) + 1e-12), (cost_n / cost_o).max()
    assert abs(res.marker_rmse.mean() - ref.marker_rmse.mean()) < 1e-4  # 0.1 mm
    # as close to the true motion as OpenSim is
    err_n = np.sqrt((np.degrees(q[LOWER] - truth.loc[q.index, LOWER]) ** 2).mean())
    err_o = np.sqrt((np.degrees(qr[LOWER] - truth.loc[q.index, LOWER]) ** 2).mean())
    assert (err_n - err_o).max() < 0.25, (err_n - err_o).sort_values().tail()
    # the .mot: radians, OpenSim-readable, coupled coordinates from their coupler, settings beside it
    table, header = read_storage(res.out_mot)
    assert header["inDegrees"] == "no"
    assert np.allclose(table[list(info.coordinates)].to_numpy(), q.to_numpy())
    assert not opensim().Storage(str(res.out_mot)).isInDegrees()
    assert np.allclose(q["knee_angle_r_beta"], q["knee_angle_r"], atol=1e-9)  # Rajagopal's coupler: identity
    settings = json.loads(res.setup.read_text())
    assert res.setup.parent == res.out_mot.parent and settings["marker_weights"] == res.weights


def test_missing_markers(trial, tmp_path: Path) -> None:
    """NaN markers are left out frame by frame, as OpenSim IK does; a segment without markers keeps
    its last pose; a frame without any marker holds the pose and reports NaN errors."""
    mk = trial["markers"]
    n = 30
    xyz = mk.xyz[:n].copy()
    rng = np.random.default_rng(7)
    gaps = []
    for j in rng.choice(len(mk.names), 12, replace=False):
        s = int(rng.integers(1, 20))
        xyz[s:s + 5, j] = np.nan
        gaps.append((s, j))
    forearm = [mk.names.index(m) for m in mk.names if m.startswith("RFA")]
    assert forearm
    xyz[10:20, forearm] = np.nan
    xyz[25] = np.nan
    gappy = MarkerData(mk.time[:n], mk.names, xyz, mk.rate)
    res = nimble_ik(trial["model"], gappy, tmp_path / "gaps.mot")
    q = res.coordinates
    assert np.isfinite(q.to_numpy()).all()
    assert np.all(q.iloc[25] == q.iloc[24])  # nothing to fit: pose held
    assert np.isnan(res.marker_rmse[25]) and np.isfinite(np.delete(res.marker_rmse, 25)).all()
    for s, j in gaps:
        if mk.names[j] in res.marker_errors.columns:
            assert res.marker_errors[mk.names[j]].iloc[s:s + 5].isna().all()
    assert np.all(q["pro_sup_r"].iloc[10:20] == q["pro_sup_r"].iloc[9])  # no forearm marker: held
    # OpenSim IK on the same gaps (it cannot take the empty frame: frames before it)
    write_trc(tmp_path / "gaps.trc", MarkerData(gappy.time[:25], gappy.names, gappy.xyz[:25], mk.rate), units="m")
    ref = run_ik(trial["model"], tmp_path / "gaps.trc", tmp_path / "gaps_opensim.mot", report_errors=False)
    rmse = np.sqrt((np.degrees(q[LOWER].iloc[:25] - ref.coordinates[LOWER]) ** 2).mean())
    assert rmse.max() < 0.5, rmse.sort_values().tail()
    assert np.nanmean(res.marker_rmse[:25]) <= np.nanmean(ref.marker_rmse) + 1e-5


@pytest.mark.parametrize("yaw_deg", [90.0, -135.0])
def test_first_frame_finds_any_heading(trial, tmp_path: Path, yaw_deg: float) -> None:
    """The same trial turned about the vertical: joint angles and marker errors do not change."""
    mk = trial["markers"]
    n = 10
    base = nimble_ik(trial["model"], mk, tmp_path / "base.mot", time_range=(mk.time[0], mk.time[n - 1]))
    a = np.radians(yaw_deg)
    rot_y = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    turned = MarkerData(mk.time[:n], mk.names, mk.xyz[:n] @ rot_y.T, mk.rate)
    res = nimble_ik(trial["model"], turned, tmp_path / "turned.mot")
    joints = [c for c in _independent(trial["info"]) if not c.startswith("pelvis")]
    diff = np.degrees((res.coordinates[joints] - base.coordinates[joints]).abs().max())
    assert diff.max() < 1e-3, diff.sort_values().tail()
    assert np.allclose(res.marker_rmse, base.marker_rmse, atol=1e-7)


def test_bad_inputs(trial, tmp_path: Path) -> None:
    mk = trial["markers"]
    short = MarkerData(mk.time[:3], mk.names, mk.xyz[:3], mk.rate, source="short")
    with pytest.raises(ConfigError):
        nimble_ik(trial["model"], short, tmp_path / "x.mot", marker_weights={"NOPE": 1.0})
    unknown = MarkerData(short.time, ["A", "B"], short.xyz[:, :2], mk.rate)
    with pytest.raises(MarkerError):
        nimble_ik(trial["model"], unknown, tmp_path / "x.mot")
    with pytest.raises(MarkerError):
        nimble_ik(trial["model"], short, tmp_path / "x.mot", marker_weights={n: 0.0 for n in mk.names})
    with pytest.raises(MarkerError):
        nimble_ik(trial["model"], short, tmp_path / "x.mot", time_range=(100.0, 101.0))
    empty = MarkerData(short.time, short.names, np.full_like(short.xyz, np.nan), mk.rate)
    with pytest.raises(MarkerError):
        nimble_ik(trial["model"], empty, tmp_path / "x.mot")
    # a TRC path works as well as MarkerData, and gives the same result
    write_trc(tmp_path / "short.trc", short, units="mm")
    a = nimble_ik(trial["model"], tmp_path / "short.trc", tmp_path / "a.mot")
    b = nimble_ik(trial["model"], short, tmp_path / "b.mot")
    assert np.allclose(a.coordinates.to_numpy(), b.coordinates.to_numpy(), atol=1e-6)
    assert not (tmp_path / "x.mot").exists()
