"""Reference activation solvers: OpenSim CMC and MocoInverse wrappers.

The solves themselves are slow (CMC ~300-600 s, MocoInverse ~300-850 s of computing per second
of motion here) and run on 0.04 s windows behind @pytest.mark.slow; file handling and model
preparation are checked by fast tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biohuman.errors import InputFormatError
from biohuman.osim.cmc import absolute_external_loads, actuator_set_xml, read_cmc_storage, run_cmc, task_set_xml
from biohuman.osim.model import load_model, rajagopal_path
from biohuman.osim.moco import prepare_moco_model, run_moco_inverse

WALK = Path("opensim-core/OpenSim/Examples/Moco/example3DWalking")


def test_absolute_external_loads(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "grf.mot").write_text("x\n")
    xml = tmp_path / "data" / "loads.xml"
    xml.write_text('<?xml version="1.0"?><OpenSimDocument Version="40000"><ExternalLoads name="l"><objects/>'
                   "<datafile>grf.mot</datafile></ExternalLoads></OpenSimDocument>")
    out = absolute_external_loads(xml, tmp_path / "elsewhere" / "loads.xml")
    assert f"<datafile>{(tmp_path / 'data' / 'grf.mot').resolve()}</datafile>" in out.read_text()
    xml.write_text(xml.read_text().replace("grf.mot", "missing.mot"))
    with pytest.raises(InputFormatError, match="does not exist"):
        absolute_external_loads(xml, tmp_path / "x.xml")


def test_read_malformed_cmc_states(tmp_path: Path) -> None:
    """CMC's states file: nRows=0, nColumns=1, labels broken after 'time'."""
    p = tmp_path / "cmc_states.sto"
    p.write_text("UNKNOWN\nversion=1\nnRows=0\nnColumns=1\ninDegrees=no\nendheader\ntime\n"
                 "jointset/j/q/value\t/forceset/m/activation\n"
                 "      0.1\t 1.0\t 0.2\n      0.2\t 1.5\t 0.3\n")
    t = read_cmc_storage(p)
    assert list(t.columns) == ["/jointset/j/q/value", "/forceset/m/activation"]
    assert np.allclose(t.index, [0.1, 0.2]) and np.allclose(t["/forceset/m/activation"], [0.2, 0.3])


def test_generated_cmc_actuators_and_tasks() -> None:
    model = load_model(None)
    el, acts = actuator_set_xml(model)
    assert acts["pelvis_tx"] == "residual_pelvis_tx"
    assert "subtalar_angle_r" not in acts and "knee_angle_r_beta" not in acts  # locked / coupled
    bounds = {float(e.text) for e in el.iter("max_control")}
    assert all(np.isfinite(b) for b in bounds)
    tasks = task_set_xml(["hip_flexion_r", "knee_angle_r"])
    assert [t.get("name") for t in tasks.iter("CMC_Joint")] == ["hip_flexion_r", "knee_angle_r"]


def test_moco_model_preparation_welds_locked_joints(tmp_path: Path) -> None:
    changes = prepare_moco_model(rajagopal_path(), tmp_path / "m.osim")
    welded = {"subtalar_r", "subtalar_l", "mtp_r", "mtp_l", "radius_hand_r", "radius_hand_l"}
    assert welded <= set(changes["weld_joints"])
    assert "residual_pelvis_ty" in changes["residuals"]
    m = load_model(tmp_path / "m.osim")
    assert m.getForceSet().contains("residual_pelvis_tilt")


@pytest.mark.slow
def test_cmc_tiny_window(external_dir: Path, tmp_path: Path) -> None:
    d = external_dir / WALK
    res = run_cmc(d / "subject_walk_scaled.osim", d / "coordinates.sto", d / "grf_walk.xml", (0.6, 0.64), tmp_path)
    act = res.activation
    assert act.shape == (41, 80)
    assert np.isfinite(act.to_numpy()).all() and act.to_numpy().min() >= 0.0 and act.to_numpy().max() <= 1.0
    assert act.to_numpy().std(axis=0).max() > 1e-3
    assert res.s_per_s > 0 and (tmp_path / "cmc_setup.xml").is_file()
    print(f"CMC: {res.wall_s:.1f} s wall for 0.04 s ({res.s_per_s:.0f} s per second of motion)")


@pytest.mark.slow
def test_moco_inverse_tiny_window(external_dir: Path, tmp_path: Path) -> None:
    d = external_dir / WALK
    res = run_moco_inverse(d / "subject_walk_scaled.osim", d / "coordinates.sto", d / "grf_walk.xml", (0.6, 0.64),
                           tmp_path)
    act = res.activation
    assert act.shape[1] == 80 and len(act) >= 3
    assert np.isfinite(act.to_numpy()).all() and act.to_numpy().min() >= 0.0 and act.to_numpy().max() <= 1.0
    assert res.settings["muscle_model"].startswith("DeGrooteFregly2016")
    print(f"MocoInverse: {res.wall_s:.1f} s wall for 0.04 s ({res.s_per_s:.0f} s per second of motion)")
