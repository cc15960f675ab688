"""Batched nimblephysics inverse dynamics: pointwise agreement with OpenSim's dynamics, ground
forces, differentiation, and the acceptance check against OpenSim's InverseDynamicsTool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biohuman.dynamics.grf import GroundForces, load_measured_grf
from biohuman.dynamics.nimble_id import NimbleModel, coordinate_derivatives, inverse_dynamics, inverse_dynamics_arrays
from biohuman.errors import InputFormatError
from biohuman.osim._tools import load_osim, read_coordinates, set_pose
from biohuman.osim.cmc import absolute_external_loads
from biohuman.osim.model import opensim

WALK = Path("opensim-core/OpenSim/Examples/Moco/example3DWalking")


def _opensim_solver(path: Path):  # noqa: ANN202
    """OpenSim model with all forces off, its state, InverseDynamicsSolver and u-index map."""
    osim = opensim()
    model = load_osim(path)
    fs = model.getForceSet()
    for i in range(fs.getSize()):
        fs.get(i).set_appliesForce(False)
    state = model.initSystem()
    cs = model.getCoordinateSet()
    umap = {}
    for i in range(cs.getSize()):
        c = cs.get(i)
        state.updU().setToZero()
        c.setSpeedValue(state, 1.0)
        u = state.getU()
        umap[c.getName()] = next(j for j in range(state.getNU()) if u.get(j) != 0)
    return model, state, osim.InverseDynamicsSolver(model), umap


def test_pointwise_matches_opensim_dynamics() -> None:
    """Random poses, speeds and accelerations on the generic Rajagopal model: nimble (bias
    'opensim', patellae attached) reproduces OpenSim's ID solver to 1e-4 N m (1e-5 relative;
    knees inside their range: outside it nimble extrapolates the walker-knee functions
    differently, 0.016 N m at -0.2 rad)."""
    nm = NimbleModel.load(None)
    model, state, solver, umap = _opensim_solver(nm.path)
    osim = opensim()
    cs = model.getCoordinateSet()
    rng = np.random.default_rng(3)
    free = [d for d in nm.dofs if d not in nm.locked]
    for _ in range(3):
        pose = {d: nm.defaults[d] for d in nm.dofs}
        pose.update({d: nm.defaults[d] + rng.uniform(-0.3, 0.3) for d in free if not d.endswith(("_tx", "_ty", "_tz"))})
        pose["knee_angle_r"], pose["knee_angle_l"] = rng.uniform(0.1, 1.2, 2)
        q = np.array([pose[d] for d in nm.dofs])
        qd = np.where(np.isin(nm.dofs, free), rng.normal(0, 2.0, len(q)), 0.0)
        qdd = np.where(np.isin(nm.dofs, free), rng.normal(0, 5.0, len(q)), 0.0)
        # OpenSim: dependent (beta) speeds/accelerations from the coupler, as nimble's chain rule
        set_pose(model, state, pose)
        state.updU().setToZero()
        udot = osim.Vector(state.getNU(), 0.0)
        for k, d in enumerate(nm.dofs):
            cs.get(d).setSpeedValue(state, float(qd[k]))
            udot.set(umap[d], float(qdd[k]))
        x = osim.Vector(1, 0.0)
        for body in nm.attached:
            ind = nm.dofs[body.independent]
            x.set(0, pose[ind])
            f1 = body.coupler.calcDerivative(osim.StdVectorInt([0]), x)
            f2 = body.coupler.calcDerivative(osim.StdVectorInt([0, 0]), x)
            k = nm.dofs.index(ind)
            cs.get(body.dependent).setSpeedValue(state, f1 * qd[k])
            udot.set(umap[body.dependent], f2 * qd[k] ** 2 + f1 * qdd[k])
        model.realizeVelocity(state)
        ref = solver.solve(state, udot)
        tau = inverse_dynamics_arrays(nm, q[None], qd[None], qdd[None])[0]
        cols = list(nm.dofs) + [b.dependent for b in nm.attached]
        for k, c in enumerate(cols):
            if c in nm.locked:
                continue
            assert tau[k] == pytest.approx(ref.get(umap[c]), rel=1e-5, abs=1e-4), c


def test_exact_bias_differs_only_with_knee_speed() -> None:
    """bias='exact' (nimble's own dynamics) equals bias='opensim' without knee speed and differs
    quadratically in knee speed (Simbody's CustomJoint velocity term)."""
    nm = NimbleModel.load(None)
    q = np.array([nm.defaults[d] for d in nm.dofs])[None]
    q[0, nm.dofs.index("knee_angle_r")] = 0.6
    qdd = np.zeros_like(q)
    diffs = []
    for speed in (0.0, 3.0, 6.0):
        qd = np.zeros_like(q)
        qd[0, nm.dofs.index("knee_angle_r")] = speed
        a = inverse_dynamics_arrays(nm, q, qd, qdd, bias="opensim")
        b = inverse_dynamics_arrays(nm, q, qd, qdd, bias="exact")
        diffs.append(np.abs(a - b).max())
    assert diffs[0] < 1e-9
    assert diffs[1] > 1e-3
    assert diffs[2] == pytest.approx(4 * diffs[1], rel=1e-6)


def test_ground_force_enters_through_the_foot() -> None:
    """A vertical ground force under the right heel lowers pelvis_ty's generalized force by
    exactly that force and loads the right ankle, not the left."""
    nm = NimbleModel.load(None)
    t = np.linspace(0, 0.1, 11)
    q = pd.DataFrame({d: np.full(len(t), nm.defaults[d]) for d in nm.dofs if d not in nm.locked}, index=t)
    calcn = nm.skeleton.getBodyNode("calcn_r")
    nm.skeleton.setPositions(np.array([nm.defaults[d] for d in nm.dofs]))
    heel = calcn.getWorldTransform().translation()
    force = np.zeros((len(t), 2, 3))
    force[:, 0, 1] = 300.0
    cop = np.zeros((len(t), 2, 3))
    cop[:, 0] = heel + np.array([0.15, 0.0, 0.0])
    gf = GroundForces(time=t, force=force, cop=cop, torque=np.zeros_like(force), contact=np.zeros((len(t), 2), bool))
    with_grf = inverse_dynamics(nm, q, gf)
    without = inverse_dynamics(nm, q, None)
    d = with_grf - without
    assert np.allclose(d["pelvis_ty"], -300.0, atol=1e-9)
    assert np.abs(d["ankle_angle_r"]).min() > 1.0
    assert np.allclose(d["ankle_angle_l"], 0.0, atol=1e-9)


def test_spline_derivatives_match_opensim_gcv_spline(tmp_path: Path) -> None:
    """method 'spline' = OpenSim's GCVSplineSet(5) (error variance 0), which OpenSim's ID uses."""
    from biohuman.io.storage import write_storage

    osim = opensim()
    t = np.linspace(0.0, 1.0, 101)
    y = np.sin(7 * t) + 0.3 * t**2
    qd, qdd = coordinate_derivatives(t, y[:, None])
    write_storage(tmp_path / "y.sto", pd.DataFrame({"y": y}, index=t), in_degrees=False)
    storage = osim.Storage(str(tmp_path / "y.sto"))
    splines = osim.GCVSplineSet(5, storage)  # keep alive: get() returns a reference into it
    f = splines.get("y")
    for i in (10, 50, 90):
        x = osim.Vector(1, float(t[i]))
        assert qd[i, 0] == pytest.approx(f.calcDerivative(osim.StdVectorInt([0]), x), rel=1e-6)
        assert qdd[i, 0] == pytest.approx(f.calcDerivative(osim.StdVectorInt([0, 0]), x), rel=1e-4)


def test_bad_inputs_raise_typed_errors() -> None:
    nm = NimbleModel.load(None)
    t = np.linspace(0, 0.1, 11)
    with pytest.raises(InputFormatError, match="not coordinates of the model"):
        inverse_dynamics(nm, pd.DataFrame({"no_such_coordinate": np.zeros(len(t))}, index=t), None)
    q = pd.DataFrame({"hip_flexion_r": np.zeros(len(t))}, index=t)
    short = GroundForces(time=t[:5], force=np.zeros((5, 2, 3)), cop=np.zeros((5, 2, 3)), torque=np.zeros((5, 2, 3)),
                         contact=np.zeros((5, 2), bool))
    with pytest.raises(InputFormatError, match="ground forces cover"):
        inverse_dynamics(nm, q, short)


def test_matches_opensim_inverse_dynamics_tool(external_dir: Path, tmp_path: Path, reduced: bool) -> None:
    """Acceptance: example3DWalking, same coordinates file and ground forces: nimble ID vs
    OpenSim's InverseDynamicsTool RMSE < 1 % of each coordinate's peak (unlocked coordinates
    with a peak above 1 N m); measured here: < 0.002 %."""
    from biohuman.osim.id import run_id

    d = external_dir / WALK
    xml = absolute_external_loads(d / "grf_walk.xml", tmp_path / "grf.xml")
    t1 = 0.7 if reduced else 0.9
    ref = run_id(d / "subject_walk_scaled.osim", d / "coordinates.sto", tmp_path / "id.sto",
                 external_loads_xml=xml, time_range=(0.6, t1))
    q = read_coordinates(tmp_path / "id_coordinates.mot", load_osim(d / "subject_walk_scaled.osim"))
    grf = load_measured_grf(d / "grf_walk.mot", xml, contact_threshold_n=-np.inf)
    tau = inverse_dynamics(d / "subject_walk_scaled.osim", q, grf)
    tau = tau.loc[ref.index[0] - 1e-9: ref.index[-1] + 1e-9]
    assert len(tau) == len(ref)
    checked = 0
    for c in tau.columns:
        a, b = ref[c].to_numpy(), tau[c].to_numpy()
        peak = np.abs(a).max()
        if peak < 1.0:
            continue
        rmse = np.sqrt(np.mean((a - b) ** 2))
        assert rmse < 0.01 * peak, (c, rmse, peak)
        assert np.corrcoef(a, b)[0, 1] > 0.9999, c
        checked += 1
    assert checked >= 20
