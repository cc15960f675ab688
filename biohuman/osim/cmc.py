"""OpenSim Computed Muscle Control (CMCTool) as a reference activation solver.

`run_cmc` generates, for the given model, a residual/reserve actuator set (strong CoordinateActuator
residuals on the coordinates of the ground joint, weak reserves on every other unlocked,
independent coordinate that no model CoordinateActuator drives; all with finite control bounds),
a CMC task set (one CMC_Joint task per unlocked, independent coordinate: kp 100, kv 20), writes
the CMCTool setup XML, reloads it from the XML (as for the other OpenSim tools here) and runs it
over a time range. Coordinates are normalised first (`biohuman.osim.id.prepare_coordinates`:
radians, coupled coordinates recomputed from their couplers, trimmed to the range +- a margin).

Traps measured here (OpenSim 4.6):
* CMC costs ~600 s of computing per second of motion on this machine (Rajagopal, 80 muscles):
  use it on short windows for validation only.
* its `<name>_states.sto` header is malformed: nRows=0, nColumns=1, and the label line is broken
  after "time" (the next line holds the other labels, the first one missing its leading "/");
  `read_cmc_storage` reads it.
* CMC spends its first 0.03 s computing initial muscle states and stops one `cmc_time_window`
  before the final time: the results cover [initial + 0.03, final - window]. `run_cmc` starts
  0.03 s early and ends one window late so that they cover the requested range, and resamples
  the activations (written at integrator steps) onto the coordinate frames in range.
* ExternalLoads data files are resolved relative to the working directory first; the XML is
  copied with an absolute data file path (`absolute_external_loads`).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import ConfigError, InputFormatError, SolverError
from biohuman.osim._tools import capture_log, load_osim, sub, write_setup_xml
from biohuman.osim.id import TIME_MARGIN_S, prepare_coordinates
from biohuman.osim.model import opensim

RESIDUAL_PREFIX = "residual_"
RESERVE_PREFIX = "reserve_"


def absolute_external_loads(xml: str | Path, out_xml: str | Path) -> Path:
    """Copy an ExternalLoads XML to out_xml with its <datafile> made absolute.

    The data file is resolved against the XML's own folder (OpenSim's fallback); raises
    InputFormatError naming the XML when it does not exist there (or as an absolute path).
    """
    xml, out_xml = Path(xml), Path(out_xml)
    try:
        tree = ET.parse(xml)
    except (OSError, ET.ParseError) as exc:
        raise InputFormatError(f"cannot read ExternalLoads XML: {exc}", xml) from exc
    node = tree.getroot().find(".//ExternalLoads/datafile")
    if node is None or not (node.text or "").strip():
        raise InputFormatError("ExternalLoads XML has no <datafile>", xml)
    data = Path(node.text.strip())
    if not data.is_absolute():
        data = (xml.resolve().parent / data).resolve()
    if not data.is_file():
        raise InputFormatError(f"ExternalLoads data file {data} does not exist", xml)
    node.text = str(data)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    from biohuman.io.atomic import atomic_path

    with atomic_path(out_xml) as tmp:
        tree.write(tmp, encoding="UTF-8", xml_declaration=True)
    return out_xml


@dataclass(frozen=True)
class ReferenceResult:
    """Activations of a reference solver (CMC, MocoInverse).

    activation: (T x muscles) in [0, 1], index time (s). wall_s: solver wall time (s);
    s_per_s: wall seconds per second of requested motion (CMC simulates 0.03 s + one window more);
    outputs: files kept; settings: what was
    run (actuators, tasks, mesh, ...).
    """

    activation: pd.DataFrame
    wall_s: float
    s_per_s: float
    outputs: dict[str, Path] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def _free_coordinates(model) -> tuple[list[str], list[str]]:  # noqa: ANN001
    """(unlocked independent coordinates, those of the joint(s) attached to ground)."""
    from biohuman.dynamics.muscles import _independent_free

    free, _ = _independent_free(model)
    root = []
    js = model.getJointSet()
    for i in range(js.getSize()):
        j = js.get(i)
        if j.getParentFrame().findBaseFrame().getName() == "ground":
            root += [j.get_coordinates(k).getName() for k in range(j.numCoordinates())]
    return free, [c for c in root if c in free]


def actuator_set_xml(model, *, residual_optimal_force: float = 100.0,  # noqa: ANN001
                     reserve_optimal_force: float = 1.0, control_bound: float = 1000.0,
                     reserves: Mapping[str, float] | None = None) -> tuple[ET.Element, dict[str, str]]:
    """ForceSet of CoordinateActuators: residuals on the ground joint's coordinates, reserves
    elsewhere (default: every unlocked independent coordinate no model CoordinateActuator drives;
    or exactly `reserves`, coordinate -> optimal force), controls bounded by +-control_bound.
    Returns (element, {coordinate: actuator name})."""
    osim = opensim()
    if not (control_bound > 0 and math.isfinite(control_bound)):
        raise ConfigError(f"control_bound must be positive and finite, got {control_bound}")
    free, root = _free_coordinates(model)
    driven = set()
    fs = model.getForceSet()
    for i in range(fs.getSize()):
        ca = osim.CoordinateActuator.safeDownCast(fs.get(i))
        if ca is not None and ca.get_appliesForce():
            driven.add(ca.get_coordinate())
    wanted: dict[str, tuple[str, float]] = {c: (RESIDUAL_PREFIX + c, residual_optimal_force) for c in root}
    if reserves is None:
        wanted.update({c: (RESERVE_PREFIX + c, reserve_optimal_force)
                       for c in free if c not in root and c not in driven})
    else:
        unknown = [c for c in reserves if c not in free]
        if unknown:
            raise ConfigError(f"reserves name coordinates that are not free coordinates of the model: {unknown}")
        wanted.update({c: (RESERVE_PREFIX + c, float(f)) for c, f in reserves.items() if c not in root})
    el = ET.Element("ForceSet", name="biohuman_cmc_actuators")
    objs = sub(el, "objects")
    for c, (name, fopt) in wanted.items():
        a = sub(objs, "CoordinateActuator", name=name)
        sub(a, "min_control", -float(control_bound))
        sub(a, "max_control", float(control_bound))
        sub(a, "coordinate", c)
        sub(a, "optimal_force", float(fopt))
    sub(el, "groups")
    return el, {c: n for c, (n, _) in wanted.items()}


def task_set_xml(coordinates: Sequence[str], kp: float = 100.0, kv: float = 20.0) -> ET.Element:
    """CMC_TaskSet with one joint task per coordinate."""
    el = ET.Element("CMC_TaskSet", name="biohuman_cmc_tasks")
    objs = sub(el, "objects")
    for c in coordinates:
        t = sub(objs, "CMC_Joint", name=c)
        sub(t, "on", True)
        sub(t, "weight", [1.0, 1.0, 1.0])
        sub(t, "active", [True, False, False])
        sub(t, "kp", [float(kp), 1.0, 1.0])
        sub(t, "kv", [float(kv), 1.0, 1.0])
        sub(t, "coordinate", c)
    sub(el, "groups")
    return el


def cmc_tool_xml(name: str, model_osim: Path, kinematics: Path, external_loads: Path | None, actuators: Path,
                 tasks: Path, results_dir: Path, time_range: tuple[float, float], *, time_window: float,
                 fast_target: bool) -> ET.Element:
    """CMCTool element (absolute paths)."""
    root = ET.Element("CMCTool", name=name)
    sub(root, "model_file", model_osim)
    sub(root, "replace_force_set", False)
    sub(root, "force_set_files", [str(actuators)])
    sub(root, "results_directory", results_dir)
    sub(root, "output_precision", 10)
    sub(root, "initial_time", float(time_range[0]))
    sub(root, "final_time", float(time_range[1]))
    sub(root, "solve_for_equilibrium_for_auxiliary_states", True)
    sub(root, "maximum_number_of_integrator_steps", 30000)
    sub(root, "maximum_integrator_step_size", 1.0)
    sub(root, "minimum_integrator_step_size", 1e-8)
    sub(root, "integrator_error_tolerance", 1e-5)
    aset = sub(root, "AnalysisSet", name="Analyses")
    sub(aset, "objects")
    sub(aset, "groups")
    cset = sub(root, "ControllerSet", name="Controllers")
    sub(cset, "objects")
    sub(cset, "groups")
    sub(root, "external_loads_file", external_loads if external_loads else None)
    sub(root, "desired_points_file")
    sub(root, "desired_kinematics_file", kinematics)
    sub(root, "task_set_file", tasks)
    sub(root, "constraints_file")
    sub(root, "rra_controls_file")
    sub(root, "lowpass_cutoff_frequency", -1.0)
    sub(root, "cmc_time_window", float(time_window))
    sub(root, "use_fast_optimization_target", bool(fast_target))
    sub(root, "optimizer_algorithm", "ipopt")
    sub(root, "optimizer_max_iterations", 2000)
    sub(root, "optimizer_print_level", 0)
    sub(root, "use_verbose_printing", False)
    return root


CMC_INITIAL_STATES_S = 0.03
"""Time CMC spends computing initial states before its results start."""


def read_cmc_storage(path: str | Path) -> pd.DataFrame:
    """Read a CMC .sto (also its malformed `_states.sto`): DataFrame indexed by time (s)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputFormatError(f"cannot read CMC output: {exc}", path) from exc
    try:
        k = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader")
    except StopIteration:
        raise InputFormatError("no 'endheader' line", path) from None
    body = [ln for ln in lines[k + 1:] if ln.strip()]
    if len(body) < 2:
        raise InputFormatError("no data rows", path)
    labels = body[0].split("\t")
    row = 1
    first = body[row].split()
    while len(labels) < len(first):  # labels continued on the next line (malformed header)
        labels += [(lab if lab.startswith("/") or lab == "" else "/" + lab) for lab in body[row].split("\t")]
        row += 1
        first = body[row].split() if row < len(body) else []
    labels = [lab.strip() for lab in labels if lab.strip()]
    try:
        data = np.array([[float(v) for v in ln.split()] for ln in body[row:]])
    except ValueError as exc:
        raise InputFormatError(f"non-numeric data: {exc}", path) from exc
    if data.ndim != 2 or data.shape[1] != len(labels) or labels[0] != "time":
        raise InputFormatError(f"{data.shape[1] if data.ndim == 2 else 0} values for {len(labels)} labels", path)
    return pd.DataFrame(data[:, 1:], index=pd.Index(data[:, 0], name="time"), columns=labels[1:])


def activation_columns(table: pd.DataFrame, muscles: Sequence[str]) -> pd.DataFrame:
    """Muscle activations (T x muscles) from a states table (`/forceset/<m>/activation` or
    `<m>.activation` labels); SolverError when a muscle is missing."""
    cols = {}
    for m in muscles:
        for label in (f"/forceset/{m}/activation", f"{m}.activation", f"{m}/activation"):
            if label in table.columns:
                cols[m] = table[label].to_numpy(dtype=float)
                break
    missing = [m for m in muscles if m not in cols]
    if missing:
        raise SolverError(f"states lack activations of muscles {missing[:5]} (columns: {list(table.columns)[:5]}...)")
    out = pd.DataFrame(cols, index=pd.Index(table.index.to_numpy(dtype=float), name="time"))
    return out


def run_cmc(model_osim: str | Path, coordinates_mot: str | Path, external_loads_xml: str | Path | None,
            time_range: Sequence[float], out_dir: str | Path, *, name: str = "cmc",
            time_window: float = 0.01, fast_target: bool = True,
            residual_optimal_force: float = 100.0, reserve_optimal_force: float = 1.0,
            control_bound: float = 1000.0, reserves: Mapping[str, float] | None = None,
            kp: float = 100.0, kv: float = 20.0, margin_s: float = TIME_MARGIN_S) -> ReferenceResult:
    """Run OpenSim CMC over `time_range` (s, s) and return the muscle activations.

    model_osim: scaled .osim; coordinates_mot: IK / filtered coordinates (any OpenSim coordinates
    file; degrees or radians); external_loads_xml: ExternalLoads XML (data file resolved as
    OpenSim does) or None. Files kept in out_dir: `<name>_setup.xml`, `<name>_actuators.xml`,
    `<name>_tasks.xml`, `<name>_kinematics.mot`, `<name>_states.sto`, `<name>_controls.sto`.
    Raises SolverError naming the inputs and OpenSim's last log lines when CMC fails.
    """
    osim = opensim()
    model_osim, coordinates_mot, out_dir = Path(model_osim), Path(coordinates_mot), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(time_range) != 2 or not float(time_range[1]) > float(time_range[0]):
        raise ConfigError(f"time_range must be (start, end) with end > start, got {time_range}")
    model = load_osim(model_osim)
    ext = absolute_external_loads(external_loads_xml, out_dir / f"{name}_external_loads.xml") \
        if external_loads_xml else None
    kin = out_dir / f"{name}_kinematics.mot"
    q, (t0, t1) = prepare_coordinates(model, coordinates_mot, kin, time_range, margin_s)
    ti, tf = t0 - CMC_INITIAL_STATES_S, t1 + time_window
    if ti < float(q.index[0]) or tf > float(q.index[-1]):
        raise ConfigError(f"CMC needs coordinates from {ti:.3f} to {tf:.3f} s (0.03 s before, one window after "
                          f"the range); the file covers {float(q.index[0]):.3f}-{float(q.index[-1]):.3f} s",
                          coordinates_mot)
    free, _ = _free_coordinates(model)
    act_el, actuators = actuator_set_xml(model, residual_optimal_force=residual_optimal_force,
                                         reserve_optimal_force=reserve_optimal_force, control_bound=control_bound,
                                         reserves=reserves)
    act_xml = write_setup_xml(out_dir / f"{name}_actuators.xml", act_el)
    task_xml = write_setup_xml(out_dir / f"{name}_tasks.xml", task_set_xml(free, kp, kv))
    args = (model_osim.resolve(), kin.resolve(), ext.resolve() if ext else None, act_xml.resolve(), task_xml.resolve())
    setup = write_setup_xml(out_dir / f"{name}_setup.xml", cmc_tool_xml(
        name, *args, out_dir.resolve(), (ti, tf), time_window=time_window, fast_target=fast_target))
    stage = Path(tempfile.mkdtemp(prefix=".cmc.", dir=out_dir))
    try:
        run_xml = write_setup_xml(stage / "setup.xml", cmc_tool_xml(
            name, *args, stage, (ti, tf), time_window=time_window, fast_target=fast_target))
        with capture_log("info") as log:
            tic = time.perf_counter()
            try:
                tool = osim.CMCTool(str(run_xml))  # reload from XML
                ok = tool.run()
            except Exception as exc:  # noqa: BLE001 - OpenSim raises RuntimeError subclasses
                raise SolverError(f"CMC failed for model {model_osim}, coordinates {coordinates_mot}, external "
                                  f"loads {external_loads_xml}: {exc}. OpenSim log tail:\n{log.tail()}",
                                  out_dir) from exc
            wall = time.perf_counter() - tic
        states = stage / f"{name}_states.sto"
        if not ok or not states.is_file():
            raise SolverError(f"CMC produced no states (model {model_osim}, coordinates {coordinates_mot}). "
                              f"OpenSim log tail:\n{log.tail()}", out_dir)
        outputs = {}
        for f in stage.iterdir():
            if f.name.startswith(name) and f.suffix in (".sto", ".mot", ".xml"):
                shutil.move(str(f), out_dir / f.name)
                outputs[f.stem] = out_dir / f.name
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    table = read_cmc_storage(out_dir / f"{name}_states.sto")
    muscles = [model.getMuscles().get(i).getName() for i in range(model.getMuscles().getSize())]
    raw = activation_columns(table, muscles)
    frames = q.index.to_numpy(dtype=float)
    frames = frames[(frames >= t0 - 1e-9) & (frames <= t1 + 1e-9)]
    tt = raw.index.to_numpy(dtype=float)
    if frames.size == 0 or tt[0] > frames[0] + 1e-6 or tt[-1] < frames[-1] - 1e-6:
        raise SolverError(f"CMC results cover {tt[0]:.4f}-{tt[-1]:.4f} s, not the requested {t0:.4f}-{t1:.4f} s",
                          out_dir / f"{name}_states.sto")
    act = pd.DataFrame({m: np.interp(frames, tt, raw[m].to_numpy()) for m in muscles},
                       index=pd.Index(frames, name="time"))
    settings = {"solver": "cmc", "time_range": [t0, t1], "tool_time_range": [ti, tf], "cmc_time_window": time_window,
                "use_fast_optimization_target": fast_target, "actuators": actuators, "tasks": free,
                "kp": kp, "kv": kv, "residual_optimal_force": residual_optimal_force,
                "reserve_optimal_force": reserve_optimal_force, "control_bound": control_bound}
    outputs.update({"setup": setup, "actuators": act_xml, "tasks": task_xml, "kinematics": kin})
    return ReferenceResult(activation=act, wall_s=wall, s_per_s=wall / (t1 - t0), outputs=outputs, settings=settings)


__all__ = ["CMC_INITIAL_STATES_S", "ReferenceResult", "absolute_external_loads", "activation_columns",
           "actuator_set_xml", "cmc_tool_xml", "read_cmc_storage", "run_cmc", "task_set_xml"]
