"""OpenSim MocoInverse as a reference activation solver.

`run_moco_inverse` prescribes the coordinates exactly (PositionMotion) and solves for the muscle
and reserve controls minimising the sum of squared controls (direct collocation, IPOPT), with
the settings of OpenSim's own example3DWalking / testMocoInverse: DeGrooteFregly2016 muscles
(ModOpReplaceMusclesWithDeGrooteFregly2016), rigid tendons, passive fibre forces ignored, active
force-length curve width x1.5, reserves of optimal force `reserve_optimal_force` on coordinates
without actuators (ModOpAddReserves), external loads added to the model.

Model preparation (in a copy written to out_dir):
* MocoInverse rejects locked coordinates: joints whose coordinates are all locked are welded
  (ModOpReplaceJointsWithWelds) and the model's actuators on those coordinates are removed; a
  locked coordinate sharing a joint with free ones is unlocked (the kinematics hold it at its
  file / default value).
* residual CoordinateActuators (`residual_optimal_force`) are added to the coordinates of the
  ground joint when the model has none there, so that IK-based trials whose kinematics and
  ground forces do not balance stay feasible.

Measured here: ~850 s of computing per second of motion at a 0.02 s mesh (Rajagopal, 80
muscles, 2 cores): validation on short windows only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import ConfigError, SolverError
from biohuman.osim._tools import capture_log, load_osim
from biohuman.osim.cmc import ReferenceResult, absolute_external_loads, activation_columns
from biohuman.osim.id import TIME_MARGIN_S, prepare_coordinates
from biohuman.osim.model import opensim

RESIDUAL_PREFIX = "residual_"


def prepare_moco_model(model_osim: str | Path, out_osim: str | Path, *,
                       residual_optimal_force: float = 100.0) -> dict:
    """Write a MocoInverse-ready copy of a model (see the module docstring).

    Returns {"weld_joints": [...], "unlocked": [...], "removed_actuators": [...],
    "residuals": [...]} describing the changes.
    """
    osim = opensim()
    model = load_osim(model_osim)
    js = model.getJointSet()
    weld, unlocked, welded_coords = [], [], set()
    for i in range(js.getSize()):
        j = js.get(i)
        coords = [j.get_coordinates(k) for k in range(j.numCoordinates())]
        locked = [c for c in coords if c.get_locked()]
        if coords and len(locked) == len(coords):
            weld.append(j.getName())
            welded_coords.update(c.getName() for c in coords)
        else:
            for c in locked:
                c.set_locked(False)
                unlocked.append(c.getName())
    fs = model.updForceSet()
    removed = []
    for i in reversed(range(fs.getSize())):
        ca = osim.CoordinateActuator.safeDownCast(fs.get(i))
        if ca is not None and ca.get_coordinate() in welded_coords:
            removed.append(ca.getName())
            fs.remove(i)
    driven = set()
    for i in range(fs.getSize()):
        ca = osim.CoordinateActuator.safeDownCast(fs.get(i))
        if ca is not None:
            driven.add(ca.get_coordinate())
    residuals = []
    for i in range(js.getSize()):
        j = js.get(i)
        if j.getParentFrame().findBaseFrame().getName() != "ground" or j.getName() in weld:
            continue
        for k in range(j.numCoordinates()):
            c = j.get_coordinates(k).getName()
            if c in driven:
                continue
            act = osim.CoordinateActuator(c)
            act.setName(RESIDUAL_PREFIX + c)
            act.setOptimalForce(float(residual_optimal_force))
            act.setMinControl(-np.inf)
            act.setMaxControl(np.inf)
            model.addForce(act)
            residuals.append(act.getName())
    model.finalizeConnections()
    out_osim = Path(out_osim)
    out_osim.parent.mkdir(parents=True, exist_ok=True)
    from biohuman.io.atomic import atomic_path

    with atomic_path(out_osim) as tmp:
        model.printToXML(str(tmp))
    return {"weld_joints": weld, "unlocked": unlocked, "removed_actuators": removed, "residuals": residuals}


def run_moco_inverse(model_osim: str | Path, coordinates_mot: str | Path, external_loads_xml: str | Path | None,
                     time_range: Sequence[float], out_dir: str | Path, *, name: str = "moco_inverse",
                     mesh_interval: float = 0.02, reserve_optimal_force: float = 1.0,
                     residual_optimal_force: float = 100.0, convergence_tolerance: float = 1e-3,
                     constraint_tolerance: float = 1e-4, max_iterations: int = 1000,
                     active_force_width_scale: float = 1.5, margin_s: float = TIME_MARGIN_S) -> ReferenceResult:
    """Run MocoInverse over `time_range` (s, s) and return the muscle activations.

    model_osim: scaled .osim; coordinates_mot: coordinates file (degrees or radians, normalised
    first: coupled coordinates recomputed); external_loads_xml: ExternalLoads XML or None.
    Files kept in out_dir: `<name>_model.osim` (prepared copy), `<name>_kinematics.sto`,
    `<name>_solution.sto`. Raises SolverError naming the inputs when Moco fails or does not
    converge (the unsealed solution is still written for inspection).
    """
    osim = opensim()
    model_osim, coordinates_mot, out_dir = Path(model_osim), Path(coordinates_mot), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(time_range) != 2 or not float(time_range[1]) > float(time_range[0]):
        raise ConfigError(f"time_range must be (start, end) with end > start, got {time_range}")
    prepared = out_dir / f"{name}_model.osim"
    changes = prepare_moco_model(model_osim, prepared, residual_optimal_force=residual_optimal_force)
    model = load_osim(prepared)
    kin = out_dir / f"{name}_kinematics.sto"
    _, (t0, t1) = prepare_coordinates(model, coordinates_mot, kin, time_range, margin_s)
    if t1 - t0 < mesh_interval:
        raise ConfigError(f"time range {t0}-{t1} s is shorter than the mesh interval {mesh_interval} s")
    ext = absolute_external_loads(external_loads_xml, out_dir / f"{name}_external_loads.xml") \
        if external_loads_xml else None

    mp = osim.ModelProcessor(str(prepared))
    if changes["weld_joints"]:
        names = osim.StdVectorString()
        for j in changes["weld_joints"]:
            names.append(j)
        mp.append(osim.ModOpReplaceJointsWithWelds(names))
    if ext is not None:
        mp.append(osim.ModOpAddExternalLoads(str(ext)))
    mp.append(osim.ModOpIgnoreTendonCompliance())
    mp.append(osim.ModOpReplaceMusclesWithDeGrooteFregly2016())
    mp.append(osim.ModOpIgnorePassiveFiberForcesDGF())
    mp.append(osim.ModOpScaleActiveFiberForceCurveWidthDGF(float(active_force_width_scale)))
    mp.append(osim.ModOpAddReserves(float(reserve_optimal_force)))
    inverse = osim.MocoInverse()
    inverse.setName(name)
    inverse.setModel(mp)
    tp = osim.TableProcessor(str(kin))
    tp.append(osim.TabOpUseAbsoluteStateNames())
    inverse.setKinematics(tp)
    inverse.set_initial_time(float(t0))
    inverse.set_final_time(float(t1))
    inverse.set_mesh_interval(float(mesh_interval))
    inverse.set_kinematics_allow_extra_columns(True)
    inverse.set_convergence_tolerance(float(convergence_tolerance))
    inverse.set_constraint_tolerance(float(constraint_tolerance))
    inverse.set_max_iterations(int(max_iterations))
    with capture_log("info") as log:
        tic = time.perf_counter()
        try:
            result = inverse.solve()
        except Exception as exc:  # noqa: BLE001 - OpenSim raises RuntimeError subclasses
            raise SolverError(f"MocoInverse failed for model {model_osim}, coordinates {coordinates_mot}, "
                              f"external loads {external_loads_xml}: {exc}. OpenSim log tail:\n{log.tail()}",
                              out_dir) from exc
        wall = time.perf_counter() - tic
    solution = result.getMocoSolution()
    sol_path = out_dir / f"{name}_solution.sto"
    if not solution.success():
        solution.unseal()
        solution.write(str(sol_path))
        raise SolverError(f"MocoInverse did not converge ({solution.getStatus()}) for model {model_osim}, coordinates "
                          f"{coordinates_mot}; solution written for inspection. OpenSim log tail:\n{log.tail()}",
                          sol_path)
    solution.write(str(sol_path))
    table = solution.exportToStatesTable()
    labels = list(table.getColumnLabels())
    data = table.getMatrix().to_numpy()
    states = pd.DataFrame(data, index=np.asarray(table.getIndependentColumn(), dtype=float), columns=labels)
    muscles = [model.getMuscles().get(i).getName() for i in range(model.getMuscles().getSize())]
    act = activation_columns(states, muscles)
    settings = {"solver": "moco_inverse", "time_range": [t0, t1], "mesh_interval": mesh_interval,
                "muscle_model": "DeGrooteFregly2016 (rigid tendon, passive fibre force ignored)",
                "active_force_width_scale": active_force_width_scale, "reserve_optimal_force": reserve_optimal_force,
                "residual_optimal_force": residual_optimal_force, "convergence_tolerance": convergence_tolerance,
                "constraint_tolerance": constraint_tolerance, "iterations": int(solution.getNumIterations()),
                "objective": float(solution.getObjective()), **changes}
    outputs = {"model": prepared, "kinematics": kin, "solution": sol_path}
    return ReferenceResult(activation=act, wall_s=wall, s_per_s=wall / (t1 - t0), outputs=outputs, settings=settings)


__all__ = ["prepare_moco_model", "run_moco_inverse"]
