"""Inverse dynamics with OpenSim's InverseDynamicsTool.

Input coordinates are normalised first into `<stem>_coordinates.mot` beside the output (radians,
plain coordinate names, coupled coordinates recomputed from their coupler functions, trimmed to
the time range plus a margin); the tool then runs from a setup XML written first and reloaded.

Traps measured here (OpenSim 4.6):
* the ID tool matches columns by coordinate name only: a file with state-path labels
  (`/jointset/hip_r/hip_flexion_r/value`, as Moco and TableReporter write) is read as "column
  missing, assuming default value" for every coordinate, silently.
* example3DWalking's `coordinates.sto` stores `knee_angle_*_beta` in degrees under
  `inDegrees=no` (IK files store them in radians under `inDegrees=yes`): taken as is, the patella
  swings through tens of radians and hip/pelvis moments oscillate by +-200 N m. Recomputing the
  dependent coordinates from the coupler constraint avoids both beta conventions.
* the tool's run time grows with the length of the coordinates file, not the time range.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import InputFormatError, SolverError
from biohuman.osim._tools import (
    capture_log,
    check_output,
    coordinate_kinds,
    load_osim,
    read_coordinates,
    read_storage,
    sub,
    time_range_of,
    write_setup_xml,
    write_storage,
)
from biohuman.osim.model import opensim, single_couplers

TIME_MARGIN_S = 0.25
"""Coordinates kept on each side of the requested time range (filter and spline edge effects)."""


def prepare_coordinates(model, coordinates_file: str | Path, out_mot: str | Path,  # noqa: ANN001
                        time_range: Sequence[float] | None = None,
                        margin_s: float = TIME_MARGIN_S,
                        strict: bool = False) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Write a clean copy of a coordinates file for OpenSim's ID / Analyze tools.

    Reads `coordinates_file` (degrees or radians, plain or state-path labels), keeps the model's
    coordinates in model order, recomputes coupled (dependent) coordinates from their coupler
    functions, keeps `time_range` +- `margin_s`, and writes `out_mot` in radians
    (inDegrees=no). Coordinates the file lacks are held at their default values (a warning
    names unlocked ones; `table.attrs["defaulted"]` lists all); with `strict`, a missing
    unlocked coordinate raises InputFormatError naming the file instead. Returns (table,
    (start, end) of the requested range clipped to the data).
    """
    osim = opensim()
    coordinates_file = Path(coordinates_file)
    q = read_coordinates(coordinates_file, model)
    if len(q) < 2:
        raise InputFormatError("a coordinates file needs at least two rows", coordinates_file)
    cs = model.getCoordinateSet()
    names = [cs.get(i).getName() for i in range(cs.getSize())]
    dependents = single_couplers(model)
    missing = [c for c in names if c not in q.columns and c not in dependents]
    unlocked = [c for c in missing if not cs.get(c).get_locked()]
    if unlocked and strict:
        raise InputFormatError(f"coordinates missing for the model: {unlocked}", coordinates_file)
    if unlocked:
        warnings.warn(f"{coordinates_file}: coordinates {unlocked} missing; held at their default values",
                      stacklevel=2)
    t0, t1 = time_range_of(q.index.to_numpy(), time_range)
    q = q.loc[(q.index >= t0 - margin_s) & (q.index <= t1 + margin_s)]
    out = pd.DataFrame(index=q.index)
    for c in names:
        if c in dependents:
            continue
        if c in q.columns:
            out[c] = q[c].to_numpy()
        else:  # absent: its default value
            out[c] = cs.get(c).getDefaultValue()
    for dep, (ind, fn) in dependents.items():
        x = osim.Vector(1, 0.0)
        vals = []
        for v in out[ind].to_numpy():
            x.set(0, float(v))
            vals.append(fn.calcValue(x))
        out[dep] = vals
    out = out[names]
    if not np.isfinite(out.to_numpy()).all():
        raise InputFormatError("coordinates contain non-finite values in the time range", coordinates_file)
    write_storage(out_mot, out, name=Path(out_mot).stem, in_degrees=False)
    out.attrs["defaulted"] = missing
    return out, (t0, t1)


def generalized_force_columns(labels: Iterable[str], model) -> dict[str, str]:  # noqa: ANN001
    """Map OpenSim ID labels (`hip_flexion_r_moment`, `pelvis_tx_force`) to coordinate names."""
    kinds = coordinate_kinds(model)
    out = {}
    for lab in labels:
        for suffix in ("_moment", "_force"):
            if lab.endswith(suffix) and lab[: -len(suffix)] in kinds:
                out[lab] = lab[: -len(suffix)]
                break
        else:
            out[lab] = lab
    return out


def id_tool_xml(name: str, model_osim: Path, coordinates: Path, results_dir: Path, out_name: str,
                time_range: tuple[float, float], external_loads_xml: Path | None, lowpass_hz: float,
                excluded_forces: Sequence[str]) -> ET.Element:
    """InverseDynamicsTool element (absolute paths)."""
    root = ET.Element("InverseDynamicsTool", name=name)
    sub(root, "results_directory", results_dir)
    sub(root, "model_file", model_osim)
    sub(root, "time_range", [float(time_range[0]), float(time_range[1])])
    sub(root, "forces_to_exclude", list(excluded_forces) if excluded_forces else None)
    sub(root, "external_loads_file", external_loads_xml if external_loads_xml else "Unassigned")
    sub(root, "coordinates_file", coordinates)
    sub(root, "lowpass_cutoff_frequency_for_coordinates", float(lowpass_hz))
    sub(root, "output_gen_force_file", out_name)
    sub(root, "joints_to_report_body_forces")
    sub(root, "output_body_forces_file", "Unassigned")
    return root


def run_id(model_osim: str | Path, coordinates_mot: str | Path, out_sto: str | Path, *,
           external_loads_xml: str | Path | None = None,
           setup_out: str | Path | None = None,
           lowpass_hz: float | None = None,
           time_range: Sequence[float] | None = None,
           excluded_forces: Sequence[str] = ("Muscles",),
           margin_s: float = TIME_MARGIN_S) -> pd.DataFrame:
    """Run OpenSim inverse dynamics; write `out_sto` and return the generalized forces.

    coordinates_mot: IK result or any OpenSim coordinates file (see `prepare_coordinates`; the
    clean copy the tool reads is kept as `<stem>_coordinates.mot`). external_loads_xml: an
    OpenSim ExternalLoads file (its data file is resolved relative to the XML, as OpenSim does).
    lowpass_hz: the tool's own coordinate filter (None or <= 0: off). time_range: (s, s), default
    all; `margin_s` of coordinates on each side is kept for the filter and splines (the tool's
    run time grows with the rows kept). excluded_forces: model forces left out ("Muscles",
    "Actuators", names or groups).
    Returns a DataFrame (T x coordinates) indexed by time (s): N m for rotational coordinates, N
    for translational ones; `df.attrs["labels"]` maps each column to OpenSim's label
    (`hip_flexion_r_moment`), `df.attrs["units"]` to its unit. Raises SolverError naming inputs.
    """
    osim = opensim()
    model_osim, coordinates_mot, out_sto = (Path(p).resolve() for p in (model_osim, coordinates_mot, out_sto))
    ext = Path(external_loads_xml).resolve() if external_loads_xml else None
    if ext is not None and not ext.is_file():
        raise InputFormatError("external loads file does not exist", ext)
    model = load_osim(model_osim)
    stem = out_sto.stem
    out_sto.parent.mkdir(parents=True, exist_ok=True)
    q_path = out_sto.with_name(f"{stem}_coordinates.mot")
    q, (t0, t1) = prepare_coordinates(model, coordinates_mot, q_path, time_range, margin_s)
    lp = -1.0 if lowpass_hz is None or lowpass_hz <= 0 else float(lowpass_hz)
    setup_out = Path(setup_out).resolve() if setup_out else out_sto.with_name(f"{stem}_id_setup.xml")
    write_setup_xml(setup_out, id_tool_xml(stem, model_osim.resolve(), q_path.resolve(), out_sto.parent.resolve(),
                                           out_sto.name, (t0, t1), ext, lp, excluded_forces))
    stage = Path(tempfile.mkdtemp(prefix=".id.", dir=out_sto.parent))
    try:
        run_xml = write_setup_xml(stage / "setup.xml", id_tool_xml(
            stem, model_osim.resolve(), q_path.resolve(), stage, out_sto.name, (t0, t1), ext, lp, excluded_forces))
        with capture_log("info") as log:
            try:
                tool = osim.InverseDynamicsTool(str(run_xml))  # reload from XML
                ok = tool.run()
            except Exception as exc:  # noqa: BLE001
                raise SolverError(f"ID failed for model {model_osim}, coordinates {coordinates_mot}, "
                                  f"external loads {ext}: {exc}. OpenSim log tail:\n{log.tail()}", out_sto) from exc
        check_output(stage / out_sto.name, "InverseDynamicsTool", log, [model_osim, coordinates_mot, ext])
        if not ok:
            raise SolverError(f"ID reported failure (model {model_osim}, coordinates {coordinates_mot}). "
                              f"OpenSim log tail:\n{log.tail()}", out_sto)
        table, _ = read_storage(stage / out_sto.name)
        shutil.move(str(stage / out_sto.name), out_sto)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    mapping = generalized_force_columns(table.columns, model)
    kinds = coordinate_kinds(model)
    df = table.rename(columns=mapping)
    df.index.name = "time"
    df.attrs["labels"] = {v: k for k, v in mapping.items()}
    df.attrs["units"] = {c: ("N" if kinds.get(c) == "translational" else "N m") for c in df.columns}
    df.attrs["defaulted_coordinates"] = list(q.attrs.get("defaulted", []))
    if not np.isfinite(df.to_numpy()).all():
        raise SolverError(f"ID produced non-finite generalized forces (coordinates {coordinates_mot})", out_sto)
    return df


__all__ = ["TIME_MARGIN_S", "generalized_force_columns", "id_tool_xml", "prepare_coordinates", "run_id"]
