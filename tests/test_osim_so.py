"""Static optimization on example3DWalking (80-muscle Rajagopal-based model with measured GRF)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from biohuman.osim._tools import load_osim
from biohuman.osim.id import run_id
from biohuman.osim.model import model_info, opensim, rajagopal_path
from biohuman.osim.so import auto_reserves, parse_so_log, run_static_optimization

WALK = Path("opensim-core") / "OpenSim" / "Examples" / "Moco" / "example3DWalking"
JOINTS = [f"{j}_{s}" for s in "rl"
          for j in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle", "ankle_angle")]
PELVIS = ["pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz"]


@pytest.fixture(scope="module")
def walk(external_dir: Path) -> Path:
    d = external_dir / WALK
    if not (d / "subject_walk_scaled.osim").is_file():
        pytest.skip(f"example3DWalking not found under {d}")
    return d


def test_parse_so_log() -> None:
    text = ("time = 1.0009999999993204 Performance = 1.4927367600268304 Constraint violation = 4.2e-13\n"
            "StaticOptimization.record:  WARN- The optimizer could not find a solution at time = 1.003\n"
            "time = 1.003 Performance = nan Constraint violation = 12.5\n")
    table, fails = parse_so_log(text)
    assert table["time"].tolist() == [1.0009999999993204, 1.003]
    assert table["performance"].iloc[0] == pytest.approx(1.4927367600268304) and np.isnan(table["performance"].iloc[1])
    assert table["constraint_violation"].tolist() == [4.2e-13, 12.5]
    assert fails == [1.003]


def test_auto_reserves_on_rajagopal() -> None:
    model = load_osim(rajagopal_path())
    res = auto_reserves(model, residual_optimal_force=100.0, reserve_optimal_force=1.0)
    info = model_info()
    assert {c: res[c] for c in PELVIS} == dict.fromkeys(PELVIS, 100.0)
    assert {c for c, f in res.items() if f == 1.0} == set(JOINTS)  # arms/lumbar have actuators; beta coupled
    assert not set(res) & set(info.locked)


def _check(res, ids, reserve_fraction: float = 0.05) -> None:  # noqa: ANN001
    act = res.activation.to_numpy()
    assert np.isfinite(act).all() and act.min() >= 0.0 and act.max() <= 1.0
    assert act.max() > 0.05  # muscles do the work
    assert not res.failed.any()
    assert np.isfinite(res.performance).all()
    assert np.nanmax(res.constraint_violation) < 1e-6
    peak = float(ids[JOINTS].abs().to_numpy().max())
    reserve = float(res.reserve_actuation[JOINTS].abs().to_numpy().max())
    assert reserve < reserve_fraction * peak, (reserve, peak)
    # pelvis residuals carry exactly what ID says the pelvis needs (muscles cannot)
    r = ids.reindex(res.reserve_actuation.index, method="nearest")
    for c in PELVIS:
        scale = max(1.0, float(ids[c].abs().max()))
        assert float((res.reserve_actuation[c] - r[c]).abs().max()) < 0.05 * scale, c


def test_so_tiny_window(walk: Path, tmp_path: Path) -> None:
    model = walk / "subject_walk_scaled.osim"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mtp coordinates absent from coordinates.sto
        res = run_static_optimization(model, walk / "coordinates.sto", tmp_path,
                                      external_loads_xml=walk / "grf_walk.xml",
                                      time_range=(1.0, 1.009), name="walk.v1", margin_s=0.1)  # a dot: OpenSim would cut it
        ids = run_id(model, walk / "coordinates.sto", tmp_path / "id.sto", external_loads_xml=walk / "grf_walk.xml",
                     lowpass_hz=6.0, time_range=(1.0, 1.009), margin_s=0.1)
    assert res.activation.shape == (10, 80)
    assert list(res.activation.columns) == list(model_info(str(model)).muscles)
    _check(res, ids)
    assert set(res.reserves) == set(res.reserve_actuation.columns)
    assert "lumbar_ext" in res.force.columns and "reserve_hip_flexion_r" in res.force.columns
    for p in (res.activation_sto, res.force_sto, res.setup, res.coordinates_mot, res.reserves_xml):
        assert Path(p).is_file(), p
    osim = opensim()
    fs = osim.ForceSet(str(res.reserves_xml))
    assert fs.getSize() == len(res.reserves)
    assert not list(tmp_path.glob(".so.*"))


@pytest.mark.slow
def test_so_stance_window(walk: Path, tmp_path: Path, reduced: bool) -> None:
    """A longer window across left heel strike (100 Hz frames from the 1 kHz coordinates)."""
    window, step = ((1.0, 1.1), 10) if reduced else ((0.8, 1.4), 10)
    model = walk / "subject_walk_scaled.osim"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_static_optimization(model, walk / "coordinates.sto", tmp_path,
                                      external_loads_xml=walk / "grf_walk.xml",
                                      time_range=window, step_interval=step, name="walk")
        ids = run_id(model, walk / "coordinates.sto", tmp_path / "id.sto", external_loads_xml=walk / "grf_walk.xml",
                     lowpass_hz=6.0, time_range=window)
    assert len(res.activation) >= 10
    _check(res, ids)
    # soleus and gastrocnemius carry the stance ankle moment: they are active when it peaks
    plantar = -ids["ankle_angle_l"].reindex(res.activation.index, method="nearest").to_numpy()
    k = int(np.argmax(plantar))
    soleus = res.activation["soleus_l"]
    assert soleus.iloc[k] >= soleus.median()
    if plantar[k] > 50.0:
        assert soleus.iloc[k] > 0.1
