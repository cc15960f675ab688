"""The biohuman dataset spec: one home for the dims, variables, units and attributes of a trial.

One trial = one `xarray.Dataset`. `validate` enforces the spec on save and on load;
docs/dataset_spec.md is its human-readable mirror (a test keeps the two in step).
"""

from __future__ import annotations

import datetime as _dt
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from biohuman.errors import SpecError

SPEC_VERSION = "1.0"
"""Version of this spec, stored in every trial's `spec_version` attribute."""

ACTIVATION_TOLERANCE = 1e-6
"""Activations may leave [0, 1] by this much (float32 rounding) and still validate."""

AXES = ("x", "y", "z")
FEET = ("r", "l")


@dataclass(frozen=True)
class DimSpec:
    """A dimension: what its labels are and, where fixed, the labels themselves."""

    description: str
    labels: tuple[str, ...] | None = None  # fixed labels, in this order


DIMS: dict[str, DimSpec] = {
    "time": DimSpec("time since the start of the trial, seconds (float64 coordinate, strictly increasing)"),
    "coordinate": DimSpec("rotational model coordinates (names from the model, e.g. hip_flexion_r)"),
    "translational_coordinate": DimSpec("translational model coordinates (e.g. pelvis_tx, pelvis_ty, pelvis_tz)"),
    "muscle": DimSpec("muscles of the model (80 for Rajagopal2015)"),
    "marker": DimSpec("experimental markers as used by inverse kinematics"),
    "joint": DimSpec("joint centres (e.g. pelvis, hip_r, knee_r, ankle_r, mtp_r, lumbar, shoulder_r)"),
    "axis": DimSpec("Cartesian axis of the OpenSim ground frame (y up)", AXES),
    "foot": DimSpec("foot side", FEET),
    "check": DimSpec("quality-control check names"),
    "body": DimSpec("model bodies (for scale factors)"),
}


@dataclass(frozen=True)
class VarSpec:
    """A data variable: dims (in order), CF units, long_name, whether required, on-disk dtype,
    whether every value must be finite, and flag encoding for flag variables."""

    dims: tuple[str, ...]
    units: str
    long_name: str
    required: bool = True
    dtype: str = "float32"
    finite: bool = False
    flag_values: tuple[int, ...] | None = None
    flag_meanings: str | None = None

    def attrs(self) -> dict[str, Any]:
        """Attributes a variable of this spec carries (units, long_name, flag encoding)."""
        out: dict[str, Any] = {"units": self.units, "long_name": self.long_name}
        if self.flag_values is not None:
            out["flag_values"] = np.array(self.flag_values, dtype=np.int8)
            out["flag_meanings"] = self.flag_meanings
        return out


QC_UNITS_COORD = "qc_units"
"""Non-dimension string coordinate on `check` giving each QC check's units (e.g. "m", "N m")."""

_QC_UNITS = "see qc_units"

VARIABLES: dict[str, VarSpec] = {
    "joint_angle": VarSpec(("time", "coordinate"), "degree", "joint angle (rotational coordinate value)", finite=True),
    "translation": VarSpec(("time", "translational_coordinate"), "m", "translational coordinate value", finite=True),
    "joint_moment": VarSpec(("time", "coordinate"), "N m",
                            "inverse-dynamics generalized force of a rotational coordinate (pelvis: residual moment)",
                            finite=True),
    "residual_force": VarSpec(("time", "translational_coordinate"), "N",
                              "inverse-dynamics residual force on a translational coordinate", finite=True),
    "marker_position": VarSpec(("time", "marker", "axis"), "m",
                               "experimental marker position in ground (NaN = missing)"),
    "marker_error": VarSpec(("time", "marker"), "m", "inverse-kinematics marker error", required=False),
    "joint_position": VarSpec(("time", "joint", "axis"), "m", "joint centre position in ground from the IK model"),
    "ground_force": VarSpec(("time", "foot", "axis"), "N", "ground reaction force on the foot"),
    "center_of_pressure": VarSpec(("time", "foot", "axis"), "m", "centre of pressure in ground"),
    "ground_torque": VarSpec(("time", "foot", "axis"), "N m", "ground reaction free moment"),
    "foot_contact": VarSpec(("time", "foot"), "1", "foot contact flag", dtype="int8",
                            flag_values=(0, 1), flag_meanings="swing stance"),
    "activation": VarSpec(("time", "muscle"), "1", "muscle activation in [0, 1] (smoothed)", finite=True),
    "activation_raw": VarSpec(("time", "muscle"), "1", "muscle activation in [0, 1] before Savitzky-Golay smoothing",
                              required=False),
    "reserve_actuation": VarSpec(("time", "coordinate"), "N m",
                                 "reserve/residual actuator output of the activation solver (NaN = none)"),
    "qc_value": VarSpec(("check",), _QC_UNITS, "quality-control measured value"),
    "qc_threshold": VarSpec(("check",), _QC_UNITS, "quality-control threshold"),
    "qc_flag": VarSpec(("check",), "1", "quality-control result", dtype="int8",
                       flag_values=(0, 1), flag_meanings="pass fail"),
    "scale_factor": VarSpec(("body", "axis"), "1", "per-body scale factor of the subject model", required=False),
}
"""Every variable of the spec, by name. Variables not listed are allowed but still need units and
long_name."""


@dataclass(frozen=True)
class AttrSpec:
    """A global attribute: its kind ("str" or "float") and, where restricted, its allowed values."""

    kind: str
    description: str
    allowed: tuple[str, ...] | None = None


ATTRS: dict[str, AttrSpec] = {
    "spec_version": AttrSpec("str", f"version of this spec ({SPEC_VERSION})"),
    "trial_id": AttrSpec("str", "unique id of the trial in its dataset"),
    "subject_id": AttrSpec("str", "subject id (splits are by subject)"),
    "motion_type": AttrSpec("str", "kind of motion (walk, run, squat, ...)"),
    "source": AttrSpec("str", "where the motion came from ('predicted': estimated from video by a model)",
                       ("synthetic", "trc", "c3d", "smpl", "predicted")),
    "model_name": AttrSpec("str", "musculoskeletal model name (e.g. Rajagopal2015)"),
    "model_path": AttrSpec("str", "path of the (scaled) model used"),
    "subject_mass_kg": AttrSpec("float", "subject body mass, kg (> 0)"),
    "subject_height_m": AttrSpec("float", "subject height, m (> 0)"),
    "activation_solver": AttrSpec("str", "solver that produced `activation` (e.g. batched_so, opensim_so, cmc)"),
    "biohuman_version": AttrSpec("str", "biohuman package version"),
    "git_sha": AttrSpec("str", "git commit of the biohuman checkout ('unknown' outside git)"),
    "config_hash": AttrSpec("str", "hash of the validated labelling configuration (train and reference_solvers excluded)"),
    "opensim_version": AttrSpec("str", "OpenSim version used"),
    "created": AttrSpec("str", "creation time, ISO 8601 with a UTC offset of zero"),
    "qc_status": AttrSpec("str", "'flagged' when any qc_flag is 1, else 'pass'", ("pass", "flagged")),
    "status": AttrSpec("str", "trial status; a saved trial is 'ok'", ("ok",)),
}
REQUIRED_ATTRS: tuple[str, ...] = tuple(ATTRS)
"""Global attributes every trial must carry."""


PREDICTED_VARIABLES: tuple[str, ...] = ("joint_angle", "translation", "joint_position", "activation")
"""The required variables of a predicted trial (attribute source = 'predicted', written by
`biohuman predict` from video): a model estimates pose and activations only, so the other
variables are optional there (validated when present)."""


def attrs_for(name: str) -> dict[str, Any]:
    """The attributes (units, long_name, flag encoding) to put on spec variable `name`."""
    if name not in VARIABLES:
        raise SpecError(f"{name!r} is not a spec variable (known: {', '.join(VARIABLES)})")
    return VARIABLES[name].attrs()


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


def _check_attrs(ds: xr.Dataset, problems: list[str]) -> None:
    for name, spec in ATTRS.items():
        if name not in ds.attrs:
            problems.append(f"missing global attribute '{name}' ({spec.description})")
            continue
        value = ds.attrs[name]
        if spec.kind == "float":
            if isinstance(value, np.ndarray) and value.size == 1:
                value = value.item()
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
                problems.append(f"global attribute '{name}' must be a positive number, got {value!r}")
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"global attribute '{name}' must be a non-empty string, got {value!r}")
            continue
        if spec.allowed is not None and value not in spec.allowed:
            problems.append(f"global attribute '{name}' is {value!r}, must be one of {', '.join(spec.allowed)}")
    version = ds.attrs.get("spec_version")
    if isinstance(version, str) and version.split(".")[0] != SPEC_VERSION.split(".")[0]:
        problems.append(f"spec_version {version!r} is incompatible with this reader's {SPEC_VERSION!r}")
    created = ds.attrs.get("created")
    if isinstance(created, str) and created.strip():
        try:
            stamp = _dt.datetime.fromisoformat(created)
            if stamp.utcoffset() != _dt.timedelta(0):
                problems.append(f"global attribute 'created' {created!r} must be UTC (offset +00:00 or Z)")
        except ValueError:
            problems.append(f"global attribute 'created' {created!r} is not ISO 8601")


def _check_time(ds: xr.Dataset, problems: list[str]) -> None:
    if "time" not in ds.coords:
        problems.append("missing coordinate 'time' (seconds)")
        return
    time = ds["time"]
    if time.dims != ("time",):
        problems.append(f"coordinate 'time' must have dims ('time',), has {time.dims}")
        return
    if time.dtype.kind != "f":
        problems.append(f"coordinate 'time' must be float seconds, has dtype {time.dtype}")
        return
    if time.attrs.get("units") != "s":
        problems.append(f"coordinate 'time' needs units 's', has {time.attrs.get('units')!r}")
    t = np.asarray(time.values, dtype=np.float64)
    if t.size == 0:
        problems.append("dimension 'time' is empty")
    elif not np.isfinite(t).all():
        problems.append("coordinate 'time' has non-finite values")
    elif (np.diff(t) <= 0).any():
        i = int(np.flatnonzero(np.diff(t) <= 0)[0])
        problems.append(f"time is not strictly increasing (index {i + 1}: {t[i]:.6g} s then {t[i + 1]:.6g} s)")


def _check_labels(ds: xr.Dataset, problems: list[str]) -> None:
    for dim in ds.dims:
        if dim == "time" or dim not in DIMS:
            continue
        if dim not in ds.coords:
            problems.append(f"dimension '{dim}' has no coordinate of labels")
            continue
        labels = ds[dim].values
        if labels.dtype.kind not in "UO" or not all(isinstance(x, str) for x in labels.tolist()):
            problems.append(f"coordinate '{dim}' must hold string labels, has dtype {labels.dtype}")
            continue
        labels = [str(x) for x in labels.tolist()]
        if len(set(labels)) != len(labels):
            dup = sorted({x for x in labels if labels.count(x) > 1})
            problems.append(f"coordinate '{dim}' has duplicate labels: {', '.join(dup[:5])}")
        fixed = DIMS[dim].labels
        if fixed is not None and tuple(labels) != fixed:
            problems.append(f"coordinate '{dim}' must be {list(fixed)}, is {labels}")
    if "coordinate" in ds.coords and "translational_coordinate" in ds.coords:
        rot = {str(x) for x in ds["coordinate"].values.tolist()}
        both = rot & {str(x) for x in ds["translational_coordinate"].values.tolist()}
        if both:
            problems.append(f"coordinates in both 'coordinate' (angles) and 'translational_coordinate': "
                            f"{', '.join(sorted(both))}")
    if "check" in ds.dims:
        if QC_UNITS_COORD not in ds.coords:
            where = "a data variable" if QC_UNITS_COORD in ds.data_vars else "missing"
            problems.append(f"'{QC_UNITS_COORD}' must be a string coordinate on 'check' (it is {where}; "
                            f"use ds.set_coords('{QC_UNITS_COORD}'))")
        elif ds[QC_UNITS_COORD].dims != ("check",) or ds[QC_UNITS_COORD].dtype.kind not in "UO":
            problems.append(f"'{QC_UNITS_COORD}' must be a string coordinate with dims ('check',)")


def _check_variable(name: str, var: xr.DataArray, spec: VarSpec, problems: list[str]) -> None:
    if var.dims != spec.dims:
        problems.append(f"variable '{name}' has dims {var.dims}, must be {spec.dims}")
    units = var.attrs.get("units")
    if units != spec.units:
        problems.append(f"variable '{name}' has units {units!r}, must be {spec.units!r}")
    want_int = spec.dtype.startswith("int")
    if want_int and var.dtype.kind not in "iu":
        problems.append(f"flag variable '{name}' must be integer (stored as {spec.dtype}), has dtype {var.dtype}")
        return
    if not want_int and var.dtype.kind != "f":
        problems.append(f"variable '{name}' must be floating point, has dtype {var.dtype}")
        return
    if spec.flag_values is not None:
        fv = var.attrs.get("flag_values")
        if fv is None or [int(x) for x in np.atleast_1d(fv)] != list(spec.flag_values):
            problems.append(f"flag variable '{name}' needs flag_values {list(spec.flag_values)}, has {fv!r}")
        if var.attrs.get("flag_meanings") != spec.flag_meanings:
            problems.append(f"flag variable '{name}' needs flag_meanings {spec.flag_meanings!r}, "
                            f"has {var.attrs.get('flag_meanings')!r}")
        values = np.unique(np.asarray(var.values))
        bad = [int(v) for v in values if int(v) not in spec.flag_values]
        if bad:
            problems.append(f"flag variable '{name}' has values {bad} outside flag_values {list(spec.flag_values)}")
        return
    values = np.asarray(var.values, dtype=np.float64)
    if spec.finite and not np.isfinite(values).all():
        n = int((~np.isfinite(values)).sum())
        problems.append(f"variable '{name}' has {n} non-finite values (must be all finite)")
    if name in ("activation", "activation_raw"):
        fin = values[np.isfinite(values)]
        if fin.size and (fin.min() < -ACTIVATION_TOLERANCE or fin.max() > 1 + ACTIVATION_TOLERANCE):
            problems.append(f"variable '{name}' outside [0, 1] (min {fin.min():.6g}, max {fin.max():.6g})")


def problems_of(ds: xr.Dataset) -> list[str]:
    """Every way `ds` departs from the spec (empty list when it conforms)."""
    problems: list[str] = []
    _check_attrs(ds, problems)
    _check_time(ds, problems)
    _check_labels(ds, problems)
    predicted = ds.attrs.get("source") == "predicted"
    for name, spec in VARIABLES.items():
        if name not in ds.data_vars:
            if name in ds.coords:
                problems.append(f"'{name}' must be a data variable, not a coordinate")
            elif spec.required and (not predicted or name in PREDICTED_VARIABLES):
                problems.append(f"missing required variable '{name}' {spec.dims} [{spec.units}]")
            continue
        _check_variable(name, ds[name], spec, problems)
    for name, var in ds.data_vars.items():
        for key in ("units", "long_name"):
            value = var.attrs.get(key)
            if not isinstance(value, str) or (key == "long_name" and not value.strip()):
                problems.append(f"variable '{name}' has no '{key}' attribute")
        if name not in VARIABLES and "flag_values" in var.attrs and "flag_meanings" not in var.attrs:
            problems.append(f"flag variable '{name}' has flag_values but no flag_meanings")
    if "qc_flag" in ds.data_vars and ds.attrs.get("qc_status") in ("pass", "flagged"):
        flags = np.asarray(ds["qc_flag"].values)
        expected = "flagged" if (flags.size and (flags == 1).any()) else "pass"
        if ds.attrs["qc_status"] != expected:
            problems.append(f"qc_status is {ds.attrs['qc_status']!r} but qc_flag says {expected!r}")
    return problems


def validate(ds: xr.Dataset, *, path: str | Path | None = None) -> None:
    """Raise SpecError listing every departure of `ds` from the spec (naming `path` if given)."""
    problems = problems_of(ds)
    if problems:
        raise SpecError(f"not a valid biohuman {SPEC_VERSION} trial ({len(problems)} problems):\n  - "
                        + "\n  - ".join(problems), path)


# ------------------------------------------------------------------------------------------------
# On-disk encoding
# ------------------------------------------------------------------------------------------------


def encoding_for(ds: xr.Dataset, time_chunk: int = 256) -> dict[str, dict[str, Any]]:
    """netCDF4 encoding: float32 + zlib level 4 for float variables, chunked along `time`
    (time_chunk frames, whole extent on the other dims); int8 + zlib for flag variables; time
    itself stays float64. String coordinates are left to the backend."""
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        name = str(name)
        if name == "time":
            enc[name] = {"dtype": "float64", "_FillValue": None}
            continue
        spec = VARIABLES.get(name)
        is_flag = (spec is not None and spec.flag_values is not None) or "flag_values" in var.attrs
        if var.dtype.kind == "f" and not is_flag:
            e: dict[str, Any] = {"dtype": "float32", "zlib": True, "complevel": 4}
        elif var.dtype.kind in "iub":
            dtype = "int8" if is_flag or var.dtype.kind == "b" else var.dtype.str.lstrip("<>|=")
            e = {"dtype": dtype, "zlib": True, "complevel": 4}
        else:
            continue
        shape = var.shape
        if var.ndim and all(n > 0 for n in shape):
            e["chunksizes"] = tuple(min(time_chunk, n) if d == "time" else n for d, n in zip(var.dims, shape))
        enc[name] = e
    return enc
