"""Batched SO on other muscle classes and models: Thelen2003 / DeGrooteFregly2016 force capacity
against OpenSim's own `calcInextensibleTendonActiveFiberForce`, a clear error for unsupported
classes, and the acceptance check against OpenSim's Static Optimization tutorial on gait2392
(92 Thelen2003Muscle, OpenSim's own inputs and reference activations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from biohuman.dynamics.batched_so import MUSCLE_CLASSES, force_capacity, muscle_parameters
from biohuman.errors import ModelFileError
from biohuman.osim.model import opensim

JR = Path("opensim-models/Tutorials/Estimating_Joint_Reaction_Loads")
MOCO18 = Path("opensim-core/OpenSim/Moco/Test/subject_walk_armless_18musc.osim")
F64 = {"dtype": torch.float64}


def _opensim_capacity(model_path: Path, seed: int, n_poses: int, speed_sd: float) -> tuple:
    """(lengths, speeds, OpenSim capacities) (P, M) at random poses / speeds of the leg and
    lumbar coordinates; speeds are large enough to reach the force-velocity extrapolations."""
    osim = opensim()
    model = osim.Model(str(model_path))
    state = model.initSystem()
    cs, ms = model.getCoordinateSet(), model.getMuscles()
    rng = np.random.default_rng(seed)
    coords = [c.getName() for c in cs if c.getMotionType() == 1 and not c.getName().startswith("pelvis")
              and not c.get_locked() and not c.isDependent(state)]
    lengths, speeds, ref = [], [], []
    for _ in range(n_poses):
        for c in coords:
            co = cs.get(c)
            lo, hi = co.getRangeMin(), co.getRangeMax()
            co.setValue(state, rng.uniform(max(lo, -1.2), min(hi, 1.2)), False)
            co.setSpeedValue(state, rng.normal(0.0, speed_sd))
        model.assemble(state)
        model.realizeVelocity(state)
        lengths.append([ms.get(i).getLength(state) for i in range(ms.getSize())])
        speeds.append([ms.get(i).getLengtheningSpeed(state) for i in range(ms.getSize())])
        ref.append([ms.get(i).calcInextensibleTendonActiveFiberForce(state, 1.0) for i in range(ms.getSize())])
    return torch.tensor(lengths, **F64), torch.tensor(speeds, **F64), np.array(ref)


def test_thelen_capacity_matches_opensim(external_dir: Path) -> None:
    """gait2392 (92 Thelen2003Muscle): capacity equals OpenSim's to 1e-5 N at random poses, over
    concentric, eccentric and both extrapolated force-velocity regions."""
    model = external_dir / JR / "subject01_simbody_adjusted_StaticOp.osim"
    params = muscle_parameters(model)
    assert set(params.kind) == {MUSCLE_CLASSES.index("Thelen2003Muscle")}
    lengths, speeds, ref = _opensim_capacity(model, seed=3, n_poses=6, speed_sd=8.0)
    cap = force_capacity(params, lengths, speeds, "opensim").numpy()
    assert np.abs(cap - ref).max() < 1e-5  # N
    # the regions the test claims to cover were reached (normalised fibre velocity)
    h = params.height
    lf = np.sqrt(h**2 + (lengths.numpy() - params.l_ts) ** 2)
    vn = speeds.numpy() * np.sqrt(1 - (h / lf) ** 2) / (params.l_opt * params.v_max)
    assert vn.min() < -1.0 and vn.max() > 0.75 and ((vn > -1) & (vn < 0)).any() and ((vn > 0) & (vn < 0.7)).any()
    # Thelen uses the true pennation angle: both pennation modes agree
    phys = force_capacity(params, lengths, speeds, "physical").numpy()
    assert np.allclose(phys, cap, atol=1e-9)


def test_degroote_capacity_matches_opensim(external_dir: Path, tmp_path: Path) -> None:
    """OpenSim's 18-muscle Rajagopal walking model with its muscles replaced by
    DeGrooteFregly2016Muscle (as MocoInverse does): capacity equals OpenSim's to 1e-5 N."""
    osim = opensim()
    m = osim.Model(str(external_dir / MOCO18))
    m.initSystem()
    osim.DeGrooteFregly2016Muscle.replaceMuscles(m)
    model = tmp_path / "dg18.osim"
    m.printToXML(str(model))
    params = muscle_parameters(model)
    assert set(params.kind) == {MUSCLE_CLASSES.index("DeGrooteFregly2016Muscle")}
    lengths, speeds, ref = _opensim_capacity(model, seed=5, n_poses=6, speed_sd=4.0)
    cap = force_capacity(params, lengths, speeds, "opensim").numpy()
    assert np.abs(cap - ref).max() < 1e-5  # N
    phys = force_capacity(params, lengths, speeds, "physical").numpy()
    assert np.all(phys <= cap + 1e-9) and np.abs(phys - cap).max() > 1.0


def test_unknown_muscle_class_names_the_class(tmp_path: Path) -> None:
    osim = opensim()
    model = osim.Model()
    body = osim.Body("b", 1.0, osim.Vec3(0), osim.Inertia(0.1))
    model.addBody(body)
    model.addJoint(osim.PinJoint("j", model.getGround(), body))
    mus = osim.RigidTendonMuscle("m", 100.0, 0.1, 0.1, 0.0)
    mus.addNewPathPoint("p0", model.getGround(), osim.Vec3(0.0, 0.1, 0.0))
    mus.addNewPathPoint("p1", body, osim.Vec3(0.1, 0.0, 0.0))
    model.addForce(mus)
    model.finalizeConnections()
    path = tmp_path / "rigid.osim"
    model.printToXML(str(path))
    with pytest.raises(ModelFileError, match="RigidTendonMuscle"):
        muscle_parameters(path)


@pytest.mark.slow
def test_gait2392_matches_opensim_so(external_dir: Path, tmp_path: Path, reduced: bool) -> None:
    """Acceptance on OpenSim's Static Optimization tutorial (gait2392, 92 Thelen muscles, its
    own inputs and pelvis residual actuators): median per-muscle Pearson r >= 0.9 against
    OpenSim's reference activations over muscles whose reference varies; every frame converges
    and the residual actuators follow OpenSim's. Reduced mode: 0.5-0.8 s and a smaller
    surrogate sample (the surrogate fit is the one-off cost)."""
    from biohuman.validation.gait2392 import validate_gait2392

    tr = (0.5, 0.8) if reduced else None
    s = validate_gait2392(external_dir, tmp_path, time_range=tr, n_samples=700, plots=not reduced)
    act = s["activation"]
    assert act["n_frames"] == (31 if reduced else 151) and act["n_muscles"] == 92
    assert act["n_varying"] >= 60
    assert act["r_median"] >= 0.9
    assert s["converged_frames"] == s["frames"]
    assert s["constraint_violation_max"] < 1e-6
    assert set(s["residual_actuators"]) == {"FX", "FY", "FZ", "MX", "MY", "MZ"}
    for name, r in s["residual_actuators"].items():  # same inverse dynamics as OpenSim's SO
        assert r["rmse"] < 0.01 * r["ref_peak"], name
    for key in ("summary_json", "activation_sto") + (() if reduced else ("activations_png", "muscle_r_png")):
        assert Path(s["outputs"][key]).is_file()


@pytest.mark.slow
def test_degroote_model_matches_opensim_so(external_dir: Path, tmp_path: Path, reduced: bool) -> None:
    """Batched SO vs OpenSim SO on the same DeGrooteFregly2016 model (OpenSim's 18-muscle armless
    Rajagopal walking model, muscles replaced as MocoInverse does), same prepared coordinates and
    ground forces. The model's own reserve CoordinateActuators get unbounded controls and knee /
    ankle get 50 N m reserves, so that both problems are feasible (with the model's +-1 bounds
    OpenSim's IPOPT reports every frame infeasible)."""
    from biohuman.dynamics.batched_so import batched_so_trial
    from biohuman.dynamics.grf import load_measured_grf
    from biohuman.dynamics.muscles import coordinate_ranges, fit_muscle_surrogate
    from biohuman.osim._tools import load_osim, read_coordinates
    from biohuman.osim.cmc import absolute_external_loads
    from biohuman.osim.so import run_static_optimization

    osim = opensim()
    d = external_dir / MOCO18.parent
    m = osim.Model(str(external_dir / MOCO18))
    m.initSystem()
    osim.DeGrooteFregly2016Muscle.replaceMuscles(m)
    fs = m.getForceSet()
    for i in range(fs.getSize()):
        ca = osim.CoordinateActuator.safeDownCast(fs.get(i))
        if ca is not None:
            ca.setMinControl(-np.inf)
            ca.setMaxControl(np.inf)
    model = tmp_path / "dg18.osim"
    m.printToXML(str(model))
    reserves = {f"{j}_{s}": 50.0 for j in ("knee_angle", "ankle_angle") for s in "rl"}
    xml = absolute_external_loads(d / "subject_walk_armless_external_loads.xml", tmp_path / "grf.xml")
    t0, t1 = (0.6, 0.7) if reduced else (0.6, 1.0)
    ref = run_static_optimization(model, d / "subject_walk_armless_coordinates.mot", tmp_path, external_loads_xml=xml,
                                  lowpass_hz=None, time_range=(t0, t1), name="so", reserves=reserves)
    assert not ref.failed.any()
    om = load_osim(model)
    q = read_coordinates(ref.coordinates_mot, om)
    full = read_coordinates(d / "subject_walk_armless_coordinates.mot", om)
    sur = fit_muscle_surrogate(model, coordinate_ranges(full[[c for c in full.columns if "beta" not in c]]),
                               n_samples=700)
    grf = load_measured_grf(d / "subject_walk_armless_grfs.mot", xml, contact_threshold_n=-np.inf)
    res = batched_so_trial(model, q, grf, time_range=(t0, t1), qdd_method="speed_spline", surrogate=sur,
                           reserves=reserves)
    a = res.activation.to_numpy()
    b = ref.activation[list(res.activation.columns)].to_numpy()
    assert a.shape == b.shape
    assert res.converged.all()
    err = a - b
    assert np.sqrt(np.mean(err**2)) <= 0.01
    assert np.abs(err).max() <= 0.05
    varying = np.flatnonzero(b.std(axis=0) > 0.005)
    r = np.array([np.corrcoef(a[:, i], b[:, i])[0, 1] for i in varying])
    assert len(r) >= 8 and np.median(r) >= 0.98
