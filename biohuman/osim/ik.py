"""Inverse kinematics with OpenSim's InverseKinematicsTool.

The tool is configured through a setup XML that is written first and reloaded (tools assembled
in Python can lose settings); the filled setup is saved beside the output.

Units trap handled here: OpenSim writes IK results with `inDegrees=yes`, but converts only
*Rotational* coordinates; coupled coordinates (Rajagopal's `knee_angle_*_beta`) stay in radians
under that header. OpenSim's own readers apply the same rule, but any other reader that converts
every angle column gets them wrong. `run_ik` therefore rewrites the .mot in radians with
`inDegrees=no` (every value in rad or m), which OpenSim tools and the GUI read unambiguously.

Accuracy trap measured here: with exact (noise-free) markers on Rajagopal2015 the default
accuracy 1e-5 leaves ~1.6 mm marker RMS and up to 2 deg hip/knee and 8 deg forearm errors
(the solver stops early on flat directions); 1e-6 brings joint errors to ~0.15 deg at ~1.3x
the time, 1e-8 to <0.001 deg at ~2x. Default here: 1e-6.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import ConfigError, MarkerError, SolverError
from biohuman.osim._tools import (
    capture_log,
    check_output,
    load_osim,
    read_coordinates,
    read_storage,
    read_trc,
    sub,
    time_range_of,
    write_setup_xml,
    write_storage,
)
from biohuman.osim.model import VIRTUAL_MARKER_SUFFIXES, opensim


@dataclass(frozen=True)
class IKResult:
    """Result of `run_ik`.

    coordinates: (T x all model coordinates), index time (s); rotational in rad, translational
    in m, coupled coordinates in their own units (rad for knee_angle_*_beta).
    marker_errors: (T x tracked markers) distance model marker <-> measured marker (m), NaN
    where the marker is missing in that frame. marker_rmse, marker_max: (T,) per frame over the
    tracked markers (m). weights: marker -> IK weight used.
    """

    coordinates: pd.DataFrame
    marker_errors: pd.DataFrame
    marker_rmse: np.ndarray
    marker_max: np.ndarray
    out_mot: Path
    setup: Path
    weights: dict[str, float]
    marker_errors_sto: Path | None = None
    marker_locations_sto: Path | None = None


def ik_marker_weights(model, trc_names: Sequence[str], present: Sequence[str] | None = None,  # noqa: ANN001
                      marker_weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """IK weights: 1 for model skin markers found in the trial, overrides from `marker_weights`.

    Virtual markers (joint centres) get no task unless `marker_weights` names them. Markers the
    trial lacks are left out. Raises ConfigError for weights naming markers the model lacks.
    """
    ms = model.getMarkerSet()
    names = [ms.get(i).getName() for i in range(ms.getSize())]
    in_trial = set(present if present is not None else trc_names)
    weights = {n: 1.0 for n in names if n in in_trial and not n.endswith(VIRTUAL_MARKER_SUFFIXES)}
    for n, w in (marker_weights or {}).items():
        if n not in names:
            raise ConfigError(f"marker_weights names a marker the model lacks: {n}")
        if not (w >= 0 and math.isfinite(w)):
            raise ConfigError(f"marker weight for {n} must be finite and >= 0, got {w}")
        if n in in_trial:
            weights[n] = float(w)
    return {n: w for n, w in weights.items() if w > 0}


def ik_tool_xml(name: str, model_osim: Path, trc: Path, out_mot: Path, results_dir: Path,
                time_range: tuple[float, float], weights: Mapping[str, float], *,
                coordinate_tasks: Mapping[str, tuple[float, float]] | None = None,
                accuracy: float = 1e-6, constraint_weight: float = math.inf,
                report_errors: bool = True, report_marker_locations: bool = True) -> ET.Element:
    """InverseKinematicsTool element. coordinate_tasks: coordinate -> (weight, value in rad/m)."""
    root = ET.Element("InverseKinematicsTool", name=name)
    sub(root, "results_directory", results_dir)
    sub(root, "model_file", model_osim)
    sub(root, "constraint_weight", float(constraint_weight))
    sub(root, "accuracy", float(accuracy))
    ts = sub(root, "IKTaskSet")
    objs = sub(ts, "objects")
    for marker, w in weights.items():
        t = sub(objs, "IKMarkerTask", name=marker)
        sub(t, "apply", True)
        sub(t, "weight", float(w))
    for coord, (w, value) in (coordinate_tasks or {}).items():
        t = sub(objs, "IKCoordinateTask", name=coord)
        sub(t, "apply", True)
        sub(t, "weight", float(w))
        sub(t, "value_type", "manual_value")
        sub(t, "value", float(value))  # used as is: radians / metres
    sub(ts, "groups")
    sub(root, "marker_file", trc)
    sub(root, "coordinate_file", "Unassigned")
    sub(root, "time_range", [float(time_range[0]), float(time_range[1])])
    sub(root, "output_motion_file", out_mot)
    sub(root, "report_errors", bool(report_errors))
    sub(root, "report_marker_locations", bool(report_marker_locations))
    return root


def run_ik(model_osim: str | Path, trc: str | Path, out_mot: str | Path, *,
           setup_out: str | Path | None = None,
           time_range: Sequence[float] | None = None,
           marker_weights: Mapping[str, float] | None = None,
           accuracy: float = 1e-6,
           report_errors: bool = True,
           coordinate_tasks: Mapping[str, tuple[float, float]] | None = None) -> IKResult:
    """Run OpenSim IK of `trc` on `model_osim`; write `out_mot` (radians, inDegrees=no).

    time_range: (start, end) s, default the whole trial. marker_weights: marker -> weight
    (default 1 for the model's skin markers present in the trial; virtual markers only when
    named; 0 drops a marker). accuracy: solver accuracy (see module notes). coordinate_tasks:
    coordinate -> (weight, value rad/m) to hold. With report_errors, OpenSim's marker-error and
    model-marker-location files are kept beside the output (`<stem>_ik_marker_errors.sto`,
    `<stem>_ik_model_marker_locations.sto`). The setup XML goes to `setup_out` (default
    `<stem>_ik_setup.xml`). Raises MarkerError when no marker can be tracked, SolverError naming
    the inputs when IK fails.
    """
    osim = opensim()
    model_osim, trc, out_mot = (Path(p).resolve() for p in (model_osim, trc, out_mot))
    model = load_osim(model_osim)
    trial = read_trc(trc)
    t0, t1 = time_range_of(trial.time, time_range)
    sel = (trial.time >= t0 - 1e-9) & (trial.time <= t1 + 1e-9)
    if not sel.any():
        raise MarkerError(f"no frames in time range {t0}..{t1} s", trc)
    present = [n for j, n in enumerate(trial.names) if np.isfinite(trial.xyz[sel, j]).all(axis=1).any()]
    weights = ik_marker_weights(model, trial.names, present, marker_weights)
    if not weights:
        raise MarkerError(f"no marker of the trial matches a model marker ({model_osim.name})", trc)
    cs = model.getCoordinateSet()
    for c in coordinate_tasks or {}:
        if not cs.contains(c):
            raise ConfigError(f"coordinate task names a coordinate the model lacks: {c}", model_osim)
    stem = out_mot.stem
    setup_out = Path(setup_out).resolve() if setup_out else out_mot.with_name(f"{stem}_ik_setup.xml")
    err_final = out_mot.with_name(f"{stem}_ik_marker_errors.sto")
    loc_final = out_mot.with_name(f"{stem}_ik_model_marker_locations.sto")

    def build(mot: Path, results: Path) -> ET.Element:
        return ik_tool_xml(stem, model_osim.resolve(), trc.resolve(), mot, results, (t0, t1), weights,
                           coordinate_tasks=coordinate_tasks, accuracy=accuracy,
                           report_errors=report_errors, report_marker_locations=report_errors)

    write_setup_xml(setup_out, build(out_mot.resolve(), out_mot.parent.resolve()))
    out_mot.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".ik.", dir=out_mot.parent))
    try:
        run_xml = ik_tool_xml(stem, model_osim.resolve(), trc.resolve(), stage / out_mot.name, stage, (t0, t1),
                              weights, coordinate_tasks=coordinate_tasks, accuracy=accuracy,
                              report_errors=True, report_marker_locations=True)
        run_path = write_setup_xml(stage / "setup.xml", run_xml)
        with capture_log("info") as log:
            try:
                tool = osim.InverseKinematicsTool(str(run_path))  # reload from XML
                ok = tool.run()
            except Exception as exc:  # noqa: BLE001
                raise SolverError(f"IK failed for model {model_osim} and markers {trc}: {exc}. "
                                  f"OpenSim log tail:\n{log.tail()}", out_mot) from exc
        check_output(stage / out_mot.name, "InverseKinematicsTool", log, [model_osim, trc])
        if not ok:
            raise SolverError(f"IK reported failure for model {model_osim} and markers {trc}. "
                              f"OpenSim log tail:\n{log.tail()}", out_mot)
        q = read_coordinates(stage / out_mot.name, model)
        names = [cs.get(i).getName() for i in range(cs.getSize())]
        missing = [c for c in names if c not in q.columns]
        if missing:
            raise SolverError(f"IK output lacks coordinates {missing}", out_mot)
        q = q[names]
        if not np.isfinite(q.to_numpy()).all():
            raise SolverError(f"IK produced non-finite coordinates for markers {trc}", out_mot)
        write_storage(out_mot, q, name=stem, in_degrees=False)
        loc, _ = read_storage(stage / f"{stem}_ik_model_marker_locations.sto")
        errors = _marker_errors(loc, trial, list(weights))
        if report_errors:
            shutil.move(str(stage / f"{stem}_ik_marker_errors.sto"), err_final)
            shutil.move(str(stage / f"{stem}_ik_model_marker_locations.sto"), loc_final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    d2 = errors.to_numpy() ** 2
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # frames with every marker missing
        rmse = np.sqrt(np.nanmean(d2, axis=1))
        mx = np.nanmax(errors.to_numpy(), axis=1)
    return IKResult(coordinates=q, marker_errors=errors, marker_rmse=rmse, marker_max=mx, out_mot=out_mot,
                    setup=setup_out, weights=dict(weights),
                    marker_errors_sto=err_final if report_errors else None,
                    marker_locations_sto=loc_final if report_errors else None)


def _marker_errors(locations: pd.DataFrame, trial, markers: Sequence[str]) -> pd.DataFrame:  # noqa: ANN001
    """Distance (m) between IK model marker locations and the measured markers, per frame."""
    times = locations.index.to_numpy()
    k = np.searchsorted(trial.time, times)
    k = np.clip(k, 0, len(trial.time) - 1)
    km1 = np.clip(k - 1, 0, len(trial.time) - 1)
    k = np.where(np.abs(trial.time[km1] - times) < np.abs(trial.time[k] - times), km1, k)
    out = {}
    for n in markers:
        cols = [f"{n}_tx", f"{n}_ty", f"{n}_tz"]
        if not all(c in locations.columns for c in cols):
            continue
        model_xyz = locations[cols].to_numpy()
        meas = trial.xyz[k, trial.names.index(n)]
        out[n] = np.linalg.norm(model_xyz - meas, axis=1)
    return pd.DataFrame(out, index=pd.Index(times, name="time"))


__all__ = ["IKResult", "ik_marker_weights", "ik_tool_xml", "run_ik"]
