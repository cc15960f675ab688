"""Static optimization with OpenSim's AnalyzeTool + StaticOptimization analysis.

The AnalyzeTool is written to a setup XML and reloaded before running (an AnalyzeTool assembled
in Python runs without its analyses attached: trap measured here). Reserve and residual
actuators are added through the tool's `force_set_files` (`replace_force_set=false`); their
ForceSet XML is saved beside the results. Coordinates are normalised as for inverse dynamics
(see `biohuman.osim.id.prepare_coordinates`): the coupled `knee_angle_*_beta` are recomputed.

OpenSim 4.6 logs one line per frame at info level,
`time = <t> Performance = <cost> Constraint violation = <norm>`, and on failure
`... The optimizer could not find a solution at time = <t>`; both are captured and parsed.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import ConfigError, InputFormatError, SolverError
from biohuman.osim._tools import (
    capture_log,
    check_output,
    coordinate_kinds,
    load_osim,
    read_storage,
    sub,
    write_setup_xml,
)
from biohuman.osim.id import TIME_MARGIN_S, prepare_coordinates
from biohuman.osim.model import opensim

RESERVE_PREFIX = "reserve_"
"""Name prefix of the CoordinateActuators `run_static_optimization` adds."""

_PERF = re.compile(r"time\s*=\s*([-+0-9.eE]+)\s+Performance\s*=\s*([-+0-9.eEnaif]+)\s+"
                   r"Constraint violation\s*=\s*([-+0-9.eEnaif]+)")
_FAIL = re.compile(r"could not find a solution at time\s*=\s*([-+0-9.eE]+)")


@dataclass(frozen=True)
class SOResult:
    """Result of `run_static_optimization`.

    activation: (T x muscles) in [0, 1]. force: (T x all actuators incl. reserves), N for
    muscles and force actuators, N m for torque actuators. reserve_actuation: (T x coordinates
    that got an added reserve/residual), the reserve's generalized force (N m; N for
    translational coordinates). constraint_violation, performance: (T,) as OpenSim logged them
    (NaN where no line was found). failed: (T,) True where the optimizer reported no solution.
    reserves: coordinate -> added actuator name.
    """

    activation: pd.DataFrame
    force: pd.DataFrame
    reserve_actuation: pd.DataFrame
    constraint_violation: np.ndarray
    performance: np.ndarray
    failed: np.ndarray
    activation_sto: Path
    force_sto: Path
    setup: Path
    coordinates_mot: Path
    reserves_xml: Path | None
    reserves: dict[str, str] = field(default_factory=dict)


def auto_reserves(model, residual_optimal_force: float = 100.0,  # noqa: ANN001
                  reserve_optimal_force: float = 1.0) -> dict[str, float]:
    """Reserve set "auto": coordinate -> optimal force of the actuator to add.

    Residuals (strong, `residual_optimal_force`) on every coordinate of the joint(s) attaching
    a body to ground (the pelvis' 6 dofs); weak reserves (`reserve_optimal_force`, N m) on every
    unlocked, independent rotational coordinate that no CoordinateActuator of the model drives
    already (Rajagopal's arm and lumbar actuators stay as they are).
    """
    osim = opensim()
    kinds = coordinate_kinds(model)
    cs = model.getCoordinateSet()
    driven = set()
    fs = model.getForceSet()
    for i in range(fs.getSize()):
        ca = osim.CoordinateActuator.safeDownCast(fs.get(i))
        if ca is not None and ca.get_appliesForce():
            driven.add(ca.get_coordinate())
    root_coords: list[str] = []
    js = model.getJointSet()
    for i in range(js.getSize()):
        j = js.get(i)
        if j.getParentFrame().findBaseFrame().getName() == "ground":
            root_coords += [j.get_coordinates(k).getName() for k in range(j.numCoordinates())]
    out: dict[str, float] = {}
    for c in root_coords:
        if not cs.get(c).get_locked():
            out[c] = float(residual_optimal_force)
    for c, kind in kinds.items():
        if c in out or c in driven or kind != "rotational" or cs.get(c).get_locked():
            continue
        out[c] = float(reserve_optimal_force)
    return out


def resolve_reserves(model, reserves: Mapping[str, float] | str | None,  # noqa: ANN001
                     residual_optimal_force: float = 100.0, reserve_optimal_force: float = 1.0) -> dict[str, float]:
    """The `reserves` argument of the SO solvers as coordinate -> optimal force: "auto" (see
    `auto_reserves`), a mapping, or None (no reserves). Anything else raises ConfigError."""
    if reserves == "auto":
        return auto_reserves(model, residual_optimal_force, reserve_optimal_force)
    if reserves is None:
        return {}
    if isinstance(reserves, Mapping):
        return {str(c): float(f) for c, f in reserves.items()}
    raise ConfigError(f"reserves must be 'auto', a mapping or None, got {reserves!r}")


def reserves_xml(reserves: Mapping[str, float], max_control: float = math.inf) -> ET.Element:
    """ForceSet element with one CoordinateActuator `reserve_<coordinate>` per entry."""
    fs = ET.Element("ForceSet", name="biohuman_reserves")
    objs = sub(fs, "objects")
    for c, fopt in reserves.items():
        a = sub(objs, "CoordinateActuator", name=f"{RESERVE_PREFIX}{c}")
        sub(a, "min_control", -float(max_control))
        sub(a, "max_control", float(max_control))
        sub(a, "coordinate", c)
        sub(a, "optimal_force", float(fopt))
    sub(fs, "groups")
    return fs


def analyze_tool_xml(name: str, model_osim: Path, coordinates: Path, results_dir: Path,
                     time_range: tuple[float, float], external_loads_xml: Path | None,
                     force_set_files: Sequence[Path], lowpass_hz: float, *, activation_exponent: float,
                     use_muscle_physiology: bool, step_interval: int, convergence: float,
                     max_iterations: int) -> ET.Element:
    """AnalyzeTool element running one StaticOptimization analysis (absolute paths)."""
    t0, t1 = float(time_range[0]), float(time_range[1])
    root = ET.Element("AnalyzeTool", name=name)
    sub(root, "model_file", model_osim)
    sub(root, "replace_force_set", False)
    sub(root, "force_set_files", [str(p) for p in force_set_files] if force_set_files else None)
    sub(root, "results_directory", results_dir)
    sub(root, "output_precision", 10)
    sub(root, "initial_time", t0)
    sub(root, "final_time", t1)
    sub(root, "solve_for_equilibrium_for_auxiliary_states", False)
    aset = sub(root, "AnalysisSet", name="Analyses")
    objs = sub(aset, "objects")
    so = sub(objs, "StaticOptimization", name="StaticOptimization")
    sub(so, "on", True)
    sub(so, "start_time", t0)
    sub(so, "end_time", t1)
    sub(so, "step_interval", int(step_interval))
    sub(so, "in_degrees", True)
    sub(so, "use_model_force_set", True)
    sub(so, "activation_exponent", float(activation_exponent))
    sub(so, "use_muscle_physiology", bool(use_muscle_physiology))
    sub(so, "optimizer_convergence_criterion", float(convergence))
    sub(so, "optimizer_max_iterations", int(max_iterations))
    sub(aset, "groups")
    cset = sub(root, "ControllerSet", name="Controllers")
    sub(cset, "objects")
    sub(cset, "groups")
    sub(root, "external_loads_file", external_loads_xml if external_loads_xml else None)
    sub(root, "states_file")
    sub(root, "coordinates_file", coordinates)
    sub(root, "speeds_file")
    sub(root, "lowpass_cutoff_frequency_for_coordinates", float(lowpass_hz))
    return root


def parse_so_log(text: str) -> tuple[pd.DataFrame, list[float]]:
    """Per-frame (time, performance, constraint_violation) lines and failure times from a log."""
    rows = [(float(t), float(p), float(c)) for t, p, c in _PERF.findall(text)]
    table = pd.DataFrame(rows, columns=["time", "performance", "constraint_violation"])
    fails = [float(t.rstrip(".")) for t in _FAIL.findall(text)]
    return table, fails


def _nearest(times: np.ndarray, query: Sequence[float], tol: float) -> np.ndarray:
    """Index of the nearest `times` entry for each query (-1 when farther than `tol`)."""
    out = np.full(len(query), -1)
    for i, q in enumerate(query):
        k = int(np.argmin(np.abs(times - q)))
        if abs(times[k] - q) <= tol:
            out[i] = k
    return out


def run_static_optimization(model_osim: str | Path, coordinates_mot: str | Path, out_dir: str | Path, *,
                            external_loads_xml: str | Path | None = None,
                            setup_out: str | Path | None = None,
                            time_range: Sequence[float] | None = None,
                            activation_exponent: float = 2.0,
                            use_muscle_physiology: bool = True,
                            lowpass_hz: float | None = 6.0,
                            reserves: Mapping[str, float] | str | None = "auto",
                            reserve_max_control: float = math.inf,
                            residual_optimal_force: float = 100.0,
                            reserve_optimal_force: float = 1.0,
                            name: str | None = None,
                            step_interval: int = 1,
                            convergence: float = 1e-4,
                            max_iterations: int = 100,
                            margin_s: float = TIME_MARGIN_S) -> SOResult:
    """Run OpenSim static optimization; write results into `out_dir` and return them.

    coordinates_mot: IK result or any coordinates file (a clean copy is kept as
    `<name>_coordinates.mot`). external_loads_xml: OpenSim ExternalLoads file. time_range:
    (s, s), default all; SO solves every `step_interval`-th row of the coordinates in range;
    `margin_s` of coordinates on each side is kept for the filter and splines (AnalyzeTool's
    set-up costs ~15 ms per row kept, measured on example3DWalking at 1 kHz).
    lowpass_hz: the tool's coordinate filter (None or <= 0: off). reserves: "auto" (see
    `auto_reserves`), a mapping coordinate -> optimal force, or None; `reserve_max_control`
    bounds their controls (+-). Files written in `out_dir` (name default: the coordinates
    file's stem; characters other than letters, digits, _ and - become _, since OpenSim cuts
    names at dots): `<name>_StaticOptimization_activation.sto`, `..._force.sto`,
    `..._controls.xml`, `<name>_reserves.xml`, `<name>_coordinates.mot`, setup XML
    (`setup_out`, default `<name>_so_setup.xml`). Raises SolverError naming the inputs when
    the tool fails or returns nothing; per-frame optimizer failures are reported in `failed`.
    """
    osim = opensim()
    model_osim, coordinates_mot, out_dir = (Path(p).resolve() for p in (model_osim, coordinates_mot, out_dir))
    ext = Path(external_loads_xml).resolve() if external_loads_xml else None
    if ext is not None and not ext.is_file():
        raise InputFormatError("external loads file does not exist", ext)
    if step_interval < 1:
        raise ConfigError(f"step_interval must be >= 1, got {step_interval}")
    model = load_osim(model_osim)
    # OpenSim cuts a tool name at its first dot when it names the result files: keep names plain
    name = re.sub(r"[^A-Za-z0-9_-]", "_", name or coordinates_mot.stem)
    out_dir.mkdir(parents=True, exist_ok=True)

    res = resolve_reserves(model, reserves, residual_optimal_force, reserve_optimal_force)
    kinds = coordinate_kinds(model)
    unknown = [c for c in res if c not in kinds]
    if unknown:
        raise ConfigError(f"reserves name coordinates the model lacks: {unknown}", model_osim)
    bad = [c for c, f in res.items() if not (f > 0 and math.isfinite(f))]
    if bad:
        raise ConfigError(f"reserve optimal forces must be positive and finite: {bad}")
    res_path = out_dir / f"{name}_reserves.xml" if res else None
    if res_path is not None:
        write_setup_xml(res_path, reserves_xml(res, reserve_max_control))

    q_path = out_dir / f"{name}_coordinates.mot"
    _, (t0, t1) = prepare_coordinates(model, coordinates_mot, q_path, time_range, margin_s)
    lp = -1.0 if lowpass_hz is None or lowpass_hz <= 0 else float(lowpass_hz)
    setup_out = Path(setup_out).resolve() if setup_out else out_dir / f"{name}_so_setup.xml"
    kw = dict(activation_exponent=activation_exponent, use_muscle_physiology=use_muscle_physiology,
              step_interval=step_interval, convergence=convergence, max_iterations=max_iterations)
    fsets = [res_path.resolve()] if res_path is not None else []
    write_setup_xml(setup_out, analyze_tool_xml(name, model_osim.resolve(), q_path.resolve(), out_dir.resolve(),
                                                (t0, t1), ext, fsets, lp, **kw))
    products = [f"{name}_StaticOptimization_activation.sto", f"{name}_StaticOptimization_force.sto",
                f"{name}_StaticOptimization_controls.xml"]
    stage = Path(tempfile.mkdtemp(prefix=".so.", dir=out_dir))
    try:
        run_xml = write_setup_xml(stage / "setup.xml", analyze_tool_xml(
            name, model_osim.resolve(), q_path.resolve(), stage, (t0, t1), ext, fsets, lp, **kw))
        with capture_log("info") as log:
            try:
                tool = osim.AnalyzeTool(str(run_xml))  # reload from XML: analyses attached
                ok = tool.run()
            except Exception as exc:  # noqa: BLE001
                raise SolverError(f"static optimization failed for model {model_osim}, coordinates "
                                  f"{coordinates_mot}, external loads {ext}: {exc}. OpenSim log tail:\n"
                                  f"{log.tail()}", out_dir) from exc
        for p in products[:2]:
            check_output(stage / p, "AnalyzeTool/StaticOptimization", log, [model_osim, coordinates_mot, ext])
        if not ok:
            raise SolverError(f"AnalyzeTool reported failure (model {model_osim}, coordinates {coordinates_mot}). "
                              f"OpenSim log tail:\n{log.tail()}", out_dir)
        act, _ = read_storage(stage / products[0])
        frc, _ = read_storage(stage / products[1])
        for p in products:
            if (stage / p).is_file():
                shutil.move(str(stage / p), out_dir / p)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    muscles = [model.getMuscles().get(i).getName() for i in range(model.getMuscles().getSize())]
    missing = [m for m in muscles if m not in act.columns]
    if missing:
        raise SolverError(f"activation output lacks muscles {missing[:5]}...", out_dir / products[0])
    activation = act[muscles].copy()
    activation.index.name = "time"
    frc.index.name = "time"
    reserve_names = {c: f"{RESERVE_PREFIX}{c}" for c in res}
    reserve_actuation = pd.DataFrame({c: frc[a].to_numpy() for c, a in reserve_names.items() if a in frc.columns},
                                     index=frc.index)
    perf_table, fails = parse_so_log(log.text)
    times = activation.index.to_numpy()
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    k = _nearest(perf_table["time"].to_numpy(), times, 0.5 * dt) if len(perf_table) else np.full(len(times), -1)
    performance = np.where(k >= 0, perf_table["performance"].to_numpy()[k] if len(perf_table) else np.nan, np.nan)
    violation = np.where(k >= 0, perf_table["constraint_violation"].to_numpy()[k] if len(perf_table) else np.nan,
                         np.nan)
    failed = np.zeros(len(times), dtype=bool)
    if fails:
        kf = _nearest(times, fails, 0.5 * dt)
        failed[kf[kf >= 0]] = True
    return SOResult(
        activation=activation,
        force=frc,
        reserve_actuation=reserve_actuation,
        constraint_violation=violation.astype(float),
        performance=performance.astype(float),
        failed=failed,
        activation_sto=out_dir / products[0],
        force_sto=out_dir / products[1],
        setup=setup_out,
        coordinates_mot=q_path,
        reserves_xml=res_path,
        reserves=reserve_names,
    )


__all__ = ["RESERVE_PREFIX", "SOResult", "analyze_tool_xml", "auto_reserves", "parse_so_log", "reserves_xml",
           "run_static_optimization"]
