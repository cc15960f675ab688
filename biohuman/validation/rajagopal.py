"""Validation on OpenSim's Rajagopal walking trial (example3DWalking, same subject as the
Rajagopal 2016 model distribution): IK, ID, estimated ground forces and activations against
OpenSim's own reference results, each twice:

* solver-only: our solver given the reference's own model, kinematics and loads (for IK: the
  pipeline's own scaled model, rebuilt by `original_pipeline_model`, the model coordinates.sto
  comes from; IK on `subject_walk_scaled.osim` is kept as a secondary figure);
* whole-chain: from the markers and force plates through our scaling, IK, low-pass, nimble ID
  and batched static optimization.

Reference files (relative to the external data folder, see its CATALOG.md §1a/§1b):
markers `opensim-models/Pipelines/Rajagopal/ExpData/motion_capture_walk.trc`, force plates
`.../example3DWalking/grf_walk.mot` + `grf_walk.xml`, reference coordinates `coordinates.sto`
(IK + RRA of the original Rajagopal 2016 pipeline, i.e. on its own scaled model, 0.45-1.799 s,
1 kHz; its `knee_angle_*_beta` columns are garbage and are recomputed from the coupler), reference
ID `id_walk.sto` (computed on `subject_walk_scaled.osim`, the AddBiomechanics-scaled model, with
those coordinates), the pipeline's scaling inputs `Scale/scale_setup_walk_scaleOnly.xml`,
`scaleSet_applied_walk.xml`, `subject_scaled_walk_markerset.xml`, and the MocoInverse reference
activations of the 18-muscle model (`std_testMocoInverse_subject_18musc_solution.sto`, 0.45-1.0 s).

Whole-chain scaling: the walking session's markers (`R.ASIS`, `R.Knee`, ...) are not the generic
model's (`RASI`, `RLFC`, ...), and the running session's static trial (`static_run.trc`, the
generic model's marker names) was taken with markers re-applied. So the segment factors are
fitted by `biohuman.osim.scale.scale_model` on `static_run.trc` with the shipped measurement set
minus its cluster-marker pairs (`anatomical_measurements`), the generic model carrying the walking marker set (`Scale/markerset_walk_preScale.xml`, the
pipeline's own pre-scale marker set) is scaled by those factors, and the walking markers are
placed on the walking session's static trial (`static_walk_1.trc`) with the lower limbs held
in the anatomical pose, exactly as `scale_model` places markers. Subject mass: mean total
vertical force of the force plates over the complete stride / g.
"""

from __future__ import annotations

import math
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import InputFormatError

WALK = Path("opensim-core/OpenSim/Examples/Moco/example3DWalking")
MOCO = Path("opensim-core/OpenSim/Moco/Test")
PIPE = Path("opensim-models/Pipelines/Rajagopal")

FILES: dict[str, Path] = {
    "markers": PIPE / "ExpData/motion_capture_walk.trc",
    "grf_mot": WALK / "grf_walk.mot",
    "grf_xml": WALK / "grf_walk.xml",
    "coordinates": WALK / "coordinates.sto",
    "id": WALK / "id_walk.sto",
    "model": WALK / "subject_walk_scaled.osim",
    "emg": WALK / "electromyography.sto",
    "moco_solution": MOCO / "std_testMocoInverse_subject_18musc_solution.sto",
    "moco_model": MOCO / "subject_walk_armless_18musc.osim",
    "moco_coordinates": MOCO / "subject_walk_armless_coordinates.mot",
    "moco_grf_mot": MOCO / "subject_walk_armless_grfs.mot",
    "moco_grf_xml": MOCO / "subject_walk_armless_external_loads.xml",
    "static_run": PIPE / "ExpData/static_run.trc",
    "static_walk": PIPE / "ExpData/static_walk_1.trc",
    "walk_markerset": PIPE / "Scale/markerset_walk_preScale.xml",
    "original_scale_setup": PIPE / "Scale/scale_setup_walk_scaleOnly.xml",
    "original_scale_set": PIPE / "Scale/scaleSet_applied_walk.xml",
    "original_markerset": PIPE / "Scale/subject_scaled_walk_markerset.xml",
}
"""Every reference file this validation reads, relative to the external data folder."""

REFERENCE_WINDOW: tuple[float, float] = (0.45, 1.799)
"""Time span of the reference coordinates and ID (s)."""
MOCO_WINDOW: tuple[float, float] = (0.45, 1.0)
"""Time span of the MocoInverse reference activations (s)."""
CUTOFF_HZ = 6.0
"""Low-pass cutoff of our IK coordinates (Hz): the MocoInverse reference's own (TabOpLowPassFilter(6))."""
SIDES = ("r", "l")
IK_COORDINATES: tuple[str, ...] = tuple(f"{c}_{s}" for s in SIDES for c in ("hip_flexion", "knee_angle", "ankle_angle"))
"""Coordinates under the IK acceptance line (<= 3 deg)."""
ID_COORDINATES: tuple[str, ...] = tuple(f"{c}_{s}" for s in SIDES
                                        for c in ("hip_flexion", "hip_adduction", "knee_angle", "ankle_angle"))
"""Coordinates under the ID acceptance line (<= 5 % of peak moment)."""
REPORT_COORDINATES: tuple[str, ...] = tuple(f"{c}_{s}" for s in SIDES for c in
                                            ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle",
                                             "ankle_angle"))
MOCO_TO_RAJAGOPAL: dict[str, str] = {
    "bifemsh": "bfsh", "med_gas": "gasmed", "glut_max2": "glmax2", "psoas": "psoas", "rect_fem": "recfem",
    "semimem": "semimem", "soleus": "soleus", "tib_ant": "tibant", "vas_int": "vasint",
}
"""MocoInverse 18-muscle model muscle -> the same muscle in Rajagopal2015 (per side)."""
WELDED_IN_REFERENCE: tuple[str, ...] = ("subtalar_angle_r", "subtalar_angle_l", "mtp_angle_r", "mtp_angle_l")
"""Coordinates the MocoInverse reference welds (locked in our copy of its model)."""
STATIC_POSE_WEIGHT = 1000.0
MIN_STD_FOR_R = 1e-3
"""Muscles whose reference activation varies less than this are left out of the correlation."""


def check_files(external: Path, keys: Sequence[str] | None = None) -> dict[str, Path]:
    """Absolute paths of the reference files; InputFormatError naming the first missing one."""
    out = {}
    for k in keys or FILES:
        p = Path(external) / FILES[k]
        if not p.is_file():
            raise InputFormatError(f"reference file for {k!r} is missing", p)
        out[k] = p
    return out


# --------------------------------------------------------------------------------------------
# comparisons


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean square of a - b over finite entries."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(np.sqrt(np.nanmean(d**2)))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (NaN when either signal is constant)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.std() < 1e-12 or b.std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def on_times(table: pd.DataFrame, times: np.ndarray) -> pd.DataFrame:
    """Columns of `table` (index time, s) linearly interpolated onto `times`."""
    t = table.index.to_numpy(dtype=float)
    return pd.DataFrame({c: np.interp(times, t, table[c].to_numpy(dtype=float)) for c in table.columns},
                        index=pd.Index(times, name="time"))


def common_times(a: pd.DataFrame, window: Sequence[float]) -> np.ndarray:
    """Times of `a` inside window (s, inclusive within 1e-9)."""
    t = a.index.to_numpy(dtype=float)
    return t[(t >= window[0] - 1e-9) & (t <= window[1] + 1e-9)]


def compare_angles(ours: pd.DataFrame, ref: pd.DataFrame, coordinates: Sequence[str],
                   window: Sequence[float]) -> dict[str, dict[str, float]]:
    """Per coordinate: RMSE, mean offset (ours - ref) and RMSE after removing the offset (deg),
    and Pearson r, on our frames inside `window`; both inputs in radians."""
    t = common_times(ours, window)
    r = on_times(ref[list(coordinates)], t)
    out = {}
    for c in coordinates:
        a, b = np.rad2deg(ours.loc[t, c].to_numpy()), np.rad2deg(r[c].to_numpy())
        off = float(np.mean(a - b))
        out[c] = {"rmse_deg": rmse(a, b), "offset_deg": off, "rmse_without_offset_deg": rmse(a - off, b),
                  "r": pearson(a, b)}
    return out


def compare_moments(ours: pd.DataFrame, ref: pd.DataFrame, coordinates: Sequence[str],
                    window: Sequence[float]) -> dict[str, dict[str, float]]:
    """Per coordinate: RMSE (N m), peak |reference| (N m), RMSE in % of that peak, Pearson r."""
    t = common_times(ours, window)
    r = on_times(ref[list(coordinates)], t)
    out = {}
    for c in coordinates:
        a, b = ours.loc[t, c].to_numpy(), r[c].to_numpy()
        peak = float(np.max(np.abs(b)))
        e = rmse(a, b)
        out[c] = {"rmse_nm": e, "peak_nm": peak, "rmse_pct_peak": 100.0 * e / peak, "r": pearson(a, b)}
    return out


def compare_grf(est, meas, window: Sequence[float], cop_min_frac: float = 0.2) -> dict:  # noqa: ANN001
    """Estimated vs measured GroundForces on the estimate's frames inside `window`.

    Vertical force RMSE per foot and of the total, in % of body weight (the estimate's
    `info["body_weight_n"]`); CoP error (cm): horizontal distance between the two CoPs of a foot
    on frames where the measured force on that foot exceeds `cop_min_frac` body weight (the
    measured CoP is meaningless at small forces), RMS and mean; contact agreement (% frames).
    """
    from biohuman.dynamics.nimble_id import grf_on_times

    t = est.time[(est.time >= window[0] - 1e-9) & (est.time <= window[1] + 1e-9)]
    k = np.searchsorted(est.time, t)
    f_m, p_m, _ = grf_on_times(meas, t)
    f_e, p_e = est.force[k], est.cop[k]
    bw = float(est.info["body_weight_n"])
    out: dict = {"body_weight_n": bw, "frames": int(len(t)), "window_s": [float(t[0]), float(t[-1])],
                 "cop_min_force_frac_bw": cop_min_frac}
    cop_all = []
    for i, s in enumerate(SIDES):
        out[f"vertical_rmse_pct_bw_{s}"] = 100.0 * rmse(f_e[:, i, 1], f_m[:, i, 1]) / bw
        loaded = f_m[:, i, 1] > cop_min_frac * bw
        d = np.linalg.norm((p_e[:, i] - p_m[:, i])[:, [0, 2]], axis=1)[loaded] * 100.0
        cop_all.append(d)
        out[f"cop_error_rms_cm_{s}"] = float(np.sqrt(np.mean(d**2))) if d.size else float("nan")
    tot_e, tot_m = f_e[:, :, 1].sum(axis=1), f_m[:, :, 1].sum(axis=1)
    out["vertical_rmse_pct_bw_total"] = 100.0 * rmse(tot_e, tot_m) / bw
    out["vertical_rmse_pct_bw"] = max(out["vertical_rmse_pct_bw_r"], out["vertical_rmse_pct_bw_l"])
    d = np.concatenate(cop_all)
    out["cop_error_rms_cm"] = float(np.sqrt(np.mean(d**2)))
    out["cop_error_mean_cm"] = float(np.mean(d))
    contact_m = f_m[:, :, 1] > 20.0
    out["contact_agreement_pct"] = 100.0 * float(np.mean(contact_m == est.contact[k]))
    for ax, name in ((0, "ap"), (2, "ml")):
        out[f"{name}_rmse_pct_bw"] = 100.0 * max(rmse(f_e[:, i, ax], f_m[:, i, ax]) for i in range(2)) / bw
    return out


# --------------------------------------------------------------------------------------------
# inputs


def ik_task_weights(external: Path) -> dict[str, float]:
    """Marker weights of the trial's own IK task set (example3DWalking `ik_tasks_walk.xml`:
    pelvis 20, knee/ankle/heel 10, ...); markers with apply=false are left out."""
    path = Path(external) / WALK / "ik_tasks_walk.xml"
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputFormatError(f"cannot read the IK task set: {exc}", path) from exc
    out = {}
    for t in root.iter("IKMarkerTask"):
        if (t.findtext("apply") or "").strip().lower() == "true":
            out[str(t.get("name"))] = float(t.findtext("weight") or 1.0)
    if not out:
        raise InputFormatError("no applied IKMarkerTask", path)
    return out


def reference_coordinates(model_osim: Path, coordinates_file: Path, out_mot: Path) -> pd.DataFrame:
    """The reference coordinates in radians, coupled `knee_angle_*_beta` recomputed from the
    coupler (the file's own are not angles), written to `out_mot` (OpenSim-readable)."""
    from biohuman.osim._tools import load_osim
    from biohuman.osim.id import prepare_coordinates

    import warnings

    with warnings.catch_warnings():  # mtp_angle_* are absent from the file: welded in this model
        warnings.filterwarnings("ignore", message=".*missing; held at their default values")
        q, _ = prepare_coordinates(load_osim(model_osim), coordinates_file, out_mot, margin_s=0.0)
    return q


def every_kth(q: pd.DataFrame, rate_hz: float) -> pd.DataFrame:
    """Rows of a uniformly sampled table taken at `rate_hz` (an integer divisor of its rate)."""
    t = q.index.to_numpy(dtype=float)
    step = int(round(1.0 / (float(np.median(np.diff(t))) * rate_hz)))
    return q.iloc[::max(step, 1)]


def subject_mass_from_plates(grf, stride: Sequence[float] = (0.248, 1.3925)) -> float:  # noqa: ANN001
    """Body mass (kg) = mean total vertical plate force over one complete stride / g.

    stride: right foot strikes of this trial (s; from the pipeline's `validationPlots_emg_walk.m`)."""
    sel = (grf.time >= stride[0]) & (grf.time <= stride[1])
    return float(np.mean(grf.force[sel, :, 1].sum(axis=1)) / 9.80665)


def measured_grf(files: dict[str, Path]):  # noqa: ANN201 - GroundForces
    """The force plates of the walking trial, per foot (biohuman.dynamics.grf.load_measured_grf)."""
    from biohuman.dynamics.grf import load_measured_grf

    return load_measured_grf(files["grf_mot"], files["grf_xml"])


def lowpass_table(q: pd.DataFrame, cutoff_hz: float) -> pd.DataFrame:
    """Zero-lag Butterworth low-pass of every column (biohuman.dynamics.filters.lowpass)."""
    from biohuman.dynamics.filters import lowpass

    t = q.index.to_numpy(dtype=float)
    rate = 1.0 / float(np.median(np.diff(t)))
    return pd.DataFrame(lowpass(q.to_numpy(dtype=float), rate, cutoff_hz), index=q.index, columns=q.columns)


# --------------------------------------------------------------------------------------------
# the reference pipeline's own scaled model (solver-only IK)


def original_pipeline_model(files: dict[str, Path], out: Path) -> dict:
    """Rebuild the scaled walking model of the Rajagopal 2016 pipeline, the model whose IK (+ RRA)
    produced `coordinates.sto` (the pipeline's `subject_scaled_walk.osim`, not distributed).

    Its construction is fully given in `Pipelines/Rajagopal/Scale`: the ScaleSet the ScaleTool
    applied (`scaleSet_applied_walk.xml`: femur 0.958, tibia 1.149, ...) is applied to the generic
    Rajagopal2015 (the nimblephysics copy; same joints, bodies, masses and centres of mass as the
    pipeline's generic Rajagopal2016) with the setup's subject mass, mass distribution preserved as
    the setup says (`scale_setup_walk_scaleOnly.xml`), and the marker set is replaced by the final
    placed one (`subject_scaled_walk_markerset.xml`). The model is written under `out`.
    Returns {"model": path, "mass_kg", "scale_factors": {body: [x, y, z]}, "markers": count}.
    """
    from biohuman.io.atomic import atomic_path
    from biohuman.osim._tools import load_osim
    from biohuman.osim.model import opensim, rajagopal_path
    from biohuman.osim.scale import _model_bodies, read_scale_set, scale_model_manual

    setup_path = files["original_scale_setup"]
    try:
        setup = ET.parse(setup_path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputFormatError(f"cannot read the scale setup: {exc}", setup_path) from exc
    try:
        mass = float(setup.findtext(".//ScaleTool/mass") or setup.findtext(".//mass") or "nan")
    except ValueError as exc:
        raise InputFormatError(f"scale setup mass is not a number: {exc}", setup_path) from exc
    preserve = (setup.findtext(".//ModelScaler/preserve_mass_distribution") or "").strip().lower()
    if not (mass > 0 and math.isfinite(mass)) or preserve != "true":
        # scale_model_manual always preserves the mass distribution: only that case is rebuilt
        raise InputFormatError(f"expected a subject mass and preserve_mass_distribution=true, got {mass}, "
                               f"{preserve!r}", setup_path)
    generic = rajagopal_path()
    bodies = set(_model_bodies(generic))
    factors = {b: v for b, v in read_scale_set(files["original_scale_set"]).items() if b in bodies}
    if "femur_r" not in factors or "tibia_r" not in factors:
        raise InputFormatError("the applied scale set names no femur/tibia of the generic model",
                               files["original_scale_set"])
    out.mkdir(parents=True, exist_ok=True)
    unplaced = scale_model_manual(generic, factors, mass, out / "original_scaled_walk_unplaced.osim")
    osim = opensim()
    model = load_osim(unplaced)
    try:
        markers = osim.MarkerSet(str(files["original_markerset"]))
    except Exception as exc:  # noqa: BLE001
        raise InputFormatError(f"OpenSim could not read the marker set: {exc}", files["original_markerset"]) from exc
    model.updMarkerSet().clearAndDestroy()
    for i in range(markers.getSize()):
        model.addMarker(markers.get(i).clone())
    model.finalizeConnections()
    model.initSystem()
    final = out / "original_scaled_walk.osim"
    with atomic_path(final) as tmp:
        model.printToXML(str(tmp))
    return {"model": str(final), "mass_kg": mass, "generic": str(generic),
            "scale_factors": {b: [float(x) for x in v] for b, v in factors.items()},
            "markers": int(markers.getSize()),
            "sources": [str(files[k]) for k in ("original_scale_setup", "original_scale_set", "original_markerset")]}


# --------------------------------------------------------------------------------------------
# whole-chain scaling


def _virtual_walk_marker(name: str) -> bool:
    """Markers of the walking set computed from others (joint centres, floor projections, midpoints)."""
    return name.endswith(("JC", "Joint", "Ground")) or name.startswith("Mid") or "JointGround" in name


def generic_with_walk_markers(markerset_xml: Path, out_osim: Path) -> Path:
    """Generic Rajagopal2015 (the nimblephysics copy) carrying the walking session's pre-scale
    marker set (OpenSim 3 format, converted by OpenSim on reading) in place of its own markers;
    measured markers are left free for placement, computed ones (joint centres, floor points) fixed."""
    from biohuman.io.atomic import atomic_path
    from biohuman.osim._tools import load_osim
    from biohuman.osim.model import opensim, rajagopal_path

    osim = opensim()
    model = load_osim(rajagopal_path())
    try:
        walk = osim.MarkerSet(str(markerset_xml))
    except Exception as exc:  # noqa: BLE001
        raise InputFormatError(f"OpenSim could not read the marker set: {exc}", markerset_xml) from exc
    model.updMarkerSet().clearAndDestroy()
    for i in range(walk.getSize()):
        mk = walk.get(i).clone()
        # the pipeline fixes ASIS, knee, elbow ... for its own model's geometry; on ours every
        # measured (non-virtual) marker is placed on the static trial
        mk.set_fixed(_virtual_walk_marker(mk.getName()))
        model.addMarker(mk)
    model.finalizeConnections()
    model.initSystem()
    out_osim.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_osim) as tmp:
        model.printToXML(str(tmp))
    return out_osim


CLUSTER_MARKERS = ("TH1", "TH2", "TH3", "TB1", "TB2", "TB3", "UA1", "UA2", "UA3", "FAsuperior")
"""Suffixes of the static trial's cluster markers (thigh, shank, upper-arm plates)."""


def anatomical_measurements() -> dict:
    """The shipped measurement set (models/rajagopal2015_scaling.yaml) without the pairs that use
    cluster markers: those assume the clusters sit where the generic model puts them, which a
    real session does not (on static_run.trc the thigh clusters leave 10-16 cm pair residuals and
    the femur factor comes out 1.19)."""
    import yaml

    from biohuman.osim.scale import DEFAULT_MEASUREMENTS

    data = yaml.safe_load(DEFAULT_MEASUREMENTS.read_text())
    for spec in data["measurements"].values():
        spec["pairs"] = [p for p in spec["pairs"] if not any(m[1:] in CLUSTER_MARKERS for m in p)]
    return data


def scale_whole_chain(files: dict[str, Path], mass_kg: float, out: Path) -> dict:
    """Our scaling of the subject (see the module docstring). Returns the scaled model path and
    a report: fitted segment factors, static-fit marker errors, pose deviation, placement."""
    from biohuman.io.atomic import atomic_path
    from biohuman.osim._tools import load_osim, model_marker_positions, read_trc, write_trc
    from biohuman.osim.ik import run_ik
    from biohuman.osim.scale import (
        LOWER_LIMB_STATIC_POSE,
        _place_markers,
        scale_model,
        scale_model_manual,
        scale_muscle_strength,
    )

    out.mkdir(parents=True, exist_ok=True)
    run = scale_model(None, files["static_run"], mass_kg, out / "run_static" / "model.osim",
                      measurements=anatomical_measurements())
    generic = generic_with_walk_markers(files["walk_markerset"], out / "generic_walk_markers.osim")
    generic_model = load_osim(generic)  # kept alive: the body set belongs to it
    bodies = generic_model.getBodySet()
    body_names = {bodies.get(i).getName() for i in range(bodies.getSize())}
    factors = {b: v for b, v in run.scale_factors.items() if b in body_names}
    if "femur_r" not in factors:
        raise InputFormatError("the static-trial scale set names none of the generic model's bodies", run.scale_set)
    unplaced = scale_model_manual(generic, factors, mass_kg,
                                  out / "model_unplaced.osim")
    model = load_osim(unplaced)
    static = read_trc(files["static_walk"])
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(static.xyz, axis=0)
    ms = model.getMarkerSet()
    model_names = {ms.get(i).getName() for i in range(ms.getSize())}
    exp = {n: mean[j] for j, n in enumerate(static.names)
           if n in model_names and not _virtual_walk_marker(n) and np.all(np.isfinite(mean[j]))}
    avg = out / "static_walk_mean.trc"
    write_trc(avg, list(exp), np.array([0.0, 0.01]), np.repeat(np.stack(list(exp.values()))[None], 2, axis=0),
              units="m")
    ik = run_ik(unplaced, avg, out / "static_walk_pose.mot", time_range=(0.0, 0.0), accuracy=1e-8,
                marker_weights={n: 1.0 for n in exp}, report_errors=False,
                coordinate_tasks={c: (STATIC_POSE_WEIGHT, v) for c, v in LOWER_LIMB_STATIC_POSE.items()})
    pose = {c: float(ik.coordinates[c].iloc[0]) for c in ik.coordinates.columns}
    names = list(exp)
    before = np.linalg.norm(model_marker_positions(model, pose, names) - np.stack([exp[n] for n in names]), axis=1)
    offsets = _place_markers(model, pose, exp)
    final = out / "model.osim"
    with atomic_path(final) as tmp:
        model.printToXML(str(tmp))
    # muscle strengths follow the subject's mass as in the workflow's scale step (default setting)
    strength = scale_muscle_strength(final, generic)
    deviation = {c: float(np.rad2deg(abs(pose[c] - v))) for c, v in LOWER_LIMB_STATIC_POSE.items()}
    return {
        "model": str(final), "mass_kg": mass_kg, "muscle_strength": strength,
        "segment_factors_static_run": run.segment_factors,
        "static_run_marker_rmse_before_placement_mm": 1000 * run.marker_rmse_before,
        "static_walk_marker_rmse_before_placement_mm": 1000 * float(np.sqrt(np.mean(before**2))),
        "static_walk_pose_max_deviation_deg": max(deviation.values()),
        "walk_marker_offsets_mm_median": 1000 * float(np.median([v for v in offsets.values()])),
        "walk_marker_offsets_mm_max": 1000 * float(max(offsets.values())),
        "static_trials": [str(files["static_run"]), str(files["static_walk"])],
    }


# --------------------------------------------------------------------------------------------
# steps


def run_walk_ik(model_osim: Path, files: dict[str, Path], weights: dict[str, float], out_mot: Path,
                window: Sequence[float]) -> tuple[pd.DataFrame, dict]:
    """OpenSim IK (biohuman.osim.ik.run_ik) of the walking markers over `window` (s, plus 0.1 s
    each side for the filter); returns (coordinates rad/m, marker-error summary in mm)."""
    from biohuman.osim._tools import load_osim
    from biohuman.osim.ik import run_ik

    model = load_osim(model_osim)
    ms = model.getMarkerSet()
    names = {ms.get(i).getName() for i in range(ms.getSize())}
    w = {n: v for n, v in weights.items() if n in names}
    ik = run_ik(model_osim, files["markers"], out_mot, time_range=(window[0] - 0.1, window[1] + 0.1),
                marker_weights=w | {n: 0.0 for n in names - set(w)}, report_errors=False)
    return ik.coordinates, {"marker_rmse_mm_mean": 1000 * float(np.nanmean(ik.marker_rmse)),
                            "marker_max_mm": 1000 * float(np.nanmax(ik.marker_max)), "frames": len(ik.coordinates)}


def nimble_id(model_osim: Path, coordinates: pd.DataFrame, grf) -> pd.DataFrame:  # noqa: ANN001
    """Inverse dynamics with nimblephysics (biohuman.dynamics.nimble_id.inverse_dynamics)."""
    from biohuman.dynamics.nimble_id import inverse_dynamics

    return inverse_dynamics(model_osim, coordinates, grf)


def estimate_forces(model_osim: Path, coordinates: pd.DataFrame):  # noqa: ANN201 - GroundForces
    """Ground forces estimated from kinematics alone (biohuman.dynamics.grf.estimate_grf, defaults
    except the floor height, estimated from the data: both models leave the feet some cm off y = 0)."""
    from biohuman.dynamics.grf import ContactConfig, estimate_grf

    return estimate_grf(model_osim, coordinates, cutoff_hz=CUTOFF_HZ, contact=ContactConfig(floor_height=None))


def _free_columns(q: pd.DataFrame) -> pd.DataFrame:
    """Coordinates without the coupled `*_beta` columns (the surrogate box is over free ones)."""
    return q[[c for c in q.columns if not str(c).endswith("_beta")]]


def batched_activations(model_osim: Path, coordinates: pd.DataFrame, grf, window: Sequence[float]):  # noqa: ANN001, ANN201
    """Our default activation solver (nimble ID + batched static optimization, auto reserves) on
    the frames of `window`; the muscle surrogate is fitted over the trial's coordinate box (cached
    beside the model). Returns the BatchedSOResult."""
    from biohuman.dynamics.batched_so import batched_so_trial
    from biohuman.dynamics.muscles import coordinate_ranges, fit_muscle_surrogate
    from biohuman.osim._tools import coordinate_kinds, load_osim

    known = coordinate_kinds(load_osim(model_osim))
    coordinates = coordinates[[c for c in coordinates.columns if c in known]]  # e.g. arms of an armless model
    free = _free_columns(coordinates)
    sur = fit_muscle_surrogate(model_osim, coordinate_ranges(free), poses=free)
    return batched_so_trial(model_osim, coordinates, grf, time_range=tuple(window), surrogate=sur)


def moco_reference_activations(path: Path) -> pd.DataFrame:
    """MocoInverse reference activations (time x muscle, 0-1) from its solution .sto."""
    from biohuman.io.storage import read_storage

    table = read_storage(path).table
    cols = {c: c.split("/")[2] for c in table.columns if c.startswith("/forceset/") and c.endswith("/activation")}
    if not cols:
        raise InputFormatError("no /forceset/<muscle>/activation columns", path)
    return table[list(cols)].rename(columns=cols)


def compare_activations(ours: pd.DataFrame, ref: pd.DataFrame, mapping: dict[str, str]) -> dict:
    """Per reference muscle: Pearson r and RMSE of our activation (column mapping[muscle])
    interpolated onto the reference times; median r over muscles whose reference varies
    (std > MIN_STD_FOR_R), a muscle ours holds constant counting as r = 0."""
    t = ref.index.to_numpy(dtype=float)
    t = t[(t >= ours.index[0] - 1e-9) & (t <= ours.index[-1] + 1e-9)]
    mine = on_times(ours[list(mapping.values())], t)
    per = {}
    for m, o in mapping.items():
        a, b = mine[o].to_numpy(), ref.loc[t, m].to_numpy()
        per[m] = {"ours": o, "r": pearson(a, b), "rmse": rmse(a, b), "ref_std": float(np.std(b))}
    # a muscle our solver leaves constant (at its bound) while the reference varies counts as r = 0
    rs = [v["r"] if math.isfinite(v["r"]) else 0.0 for v in per.values() if v["ref_std"] > MIN_STD_FOR_R]
    return {"muscles": per, "median_r": float(np.median(rs)), "min_r": float(np.min(rs)), "n_muscles_r": len(rs),
            "n_constant_ours": int(sum(not math.isfinite(v["r"]) for v in per.values())),
            "rmse_all": rmse(mine[list(mapping.values())].to_numpy(), ref.loc[t, list(mapping)].to_numpy()),
            "frames": int(len(t)), "window_s": [float(t[0]), float(t[-1])]}


# --------------------------------------------------------------------------------------------
# the whole validation


THRESHOLDS: dict[str, float] = {
    "ik_rmse_deg": 3.0, "id_rmse_pct_peak": 5.0, "activation_median_r": 0.8, "grf_vertical_rmse_pct_bw": 10.0,
    "emg_agreement_margin_pct": 10.0,
}
"""Acceptance thresholds (issue 6): IK hip/knee/ankle RMSE, ID RMSE per coordinate in % of its peak
reference moment, median per-muscle r vs MocoInverse, estimated vertical GRF RMSE in % body
weight, on/off agreement with EMG no more than this many points below the reference's."""


def _worst(table: Mapping, coordinates: Sequence[str], key: str) -> float:
    return float(max(table[c][key] for c in coordinates))


def validate_rajagopal(external: str | Path, out: str | Path) -> dict:
    """Run every Rajagopal-walking comparison; write intermediate files under `out` and return
    the figures (JSON-ready; keys starting with "_" hold series for the plots and are dropped
    from validation.json).

    There is no reduced form: a window shorter than the reference's 0.45-1.8 s puts the 6 Hz
    filter's edges into the comparison (measured on 0.45-1.0 s: whole-chain vertical GRF 11.6 %
    instead of 9.1 % BW) and saves little, since most of the ~3.5 min is the one-off muscle
    surrogate fit of our scaled 80-muscle model.
    """
    from biohuman.dynamics.grf import load_measured_grf
    from biohuman.io.storage import read_storage
    from biohuman.osim._tools import load_osim, read_coordinates
    from biohuman.osim.id import generalized_force_columns
    from biohuman.validation.emg import EMG_TO_18MUSC, EMG_TO_RAJAGOPAL, compare_emg, read_emg

    external, out = Path(external), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = check_files(external)
    timing: dict[str, float] = {}
    tic = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tic
        now = time.perf_counter()
        timing[name] = round(now - tic, 2)
        tic = now

    window = REFERENCE_WINDOW
    ref_model = load_osim(files["model"])
    q_ref = reference_coordinates(files["model"], files["coordinates"], out / "reference_coordinates.mot")
    id_table = read_storage(files["id"]).table
    id_ref = id_table.rename(columns=generalized_force_columns(id_table.columns, ref_model))
    plates = measured_grf(files)
    mass = subject_mass_from_plates(plates)
    weights = ik_task_weights(external)
    moco_ref = moco_reference_activations(files["moco_solution"])
    emg = read_emg(files["emg"])
    lap("inputs")

    # ---- solver-only ------------------------------------------------------------------------
    so: dict = {"model": str(files["model"])}
    # IK: on the model coordinates.sto was computed with (the pipeline's own scaled model, rebuilt)
    so["original_model"] = original_pipeline_model(files, out / "solver_only" / "original_model")
    q_ik, ik_err = run_walk_ik(Path(so["original_model"]["model"]), files, weights, out / "solver_only" / "ik.mot",
                               window)
    so["ik"] = {"coordinates": compare_angles(q_ik, q_ref, REPORT_COORDINATES, window), "markers": ik_err,
                "window_s": list(window), "model": "the Rajagopal 2016 pipeline's scaled walking model, rebuilt "
                "(original_pipeline_model), the model coordinates.sto comes from"}
    # secondary: the same IK on subject_walk_scaled.osim (AddBiomechanics markers): constant offsets
    q_ik_addb, ik_err_addb = run_walk_ik(files["model"], files, weights, out / "solver_only" / "ik_addbiomechanics.mot",
                                         window)
    ik_addb = compare_angles(q_ik_addb, q_ref, REPORT_COORDINATES, window)
    so["ik_addbiomechanics_model"] = {
        "coordinates": ik_addb, "markers": ik_err_addb, "window_s": list(window),
        "model": f"{files['model'].name} (markers placed by AddBiomechanics; not the model coordinates.sto comes "
                 "from; secondary, not under the acceptance line)",
        "worst_rmse_deg": _worst(ik_addb, IK_COORDINATES, "rmse_deg"),
    }
    lap("solver_only_ik")
    q_ref_f = lowpass_table(q_ref, CUTOFF_HZ)  # id_walk.sto was computed from 6 Hz low-passed coordinates
    tau_ref_inputs = nimble_id(files["model"], q_ref_f, plates)
    so["id"] = {"coordinates": compare_moments(tau_ref_inputs, id_ref, REPORT_COORDINATES, REFERENCE_WINDOW),
                "inputs": "reference coordinates.sto low-passed 6 Hz + force plates, nimble ID",
                "window_s": list(REFERENCE_WINDOW)}
    lap("solver_only_id")
    est_ref = estimate_forces(files["model"], every_kth(q_ref, 100.0))
    so["grf"] = compare_grf(est_ref, plates, REFERENCE_WINDOW)
    lap("solver_only_grf")
    moco_dir = out / "solver_only" / "moco18"
    moco_dir.mkdir(parents=True, exist_ok=True)
    moco_model = moco_dir / files["moco_model"].name  # copy: the muscle surrogate cache lands beside it
    shutil.copy(files["moco_model"], moco_model)
    q_moco = lowpass_table(read_coordinates(files["moco_coordinates"], load_osim(moco_model)), CUTOFF_HZ)
    grf_moco = load_measured_grf(files["moco_grf_mot"], files["moco_grf_xml"])
    act18 = batched_activations(moco_model, q_moco, grf_moco, MOCO_WINDOW)
    so["activation"] = compare_activations(act18.activation, moco_ref, {m: m for m in moco_ref.columns}) | {
        "solver": "batched_so (nimble ID + batched static optimization, auto reserves)",
        "model": f"{files['moco_model'].name} (18 Millard2012 muscles as in the file, subtalar/mtp locked "
                 "as in the file; the reference replaced them with DeGrooteFregly2016, compliant tendon)",
        "inputs": "subject_walk_armless_coordinates.mot low-passed 6 Hz + subject_walk_armless_grfs.mot",
        "max_constraint_violation": float(np.max(act18.constraint_violation)),
    }
    lap("solver_only_activation")
    ours18 = on_times(act18.activation, common_times(moco_ref, MOCO_WINDOW))
    emg_ref = compare_emg(moco_ref, emg, EMG_TO_18MUSC, MOCO_WINDOW)
    emg_so = compare_emg(ours18, emg, EMG_TO_18MUSC, MOCO_WINDOW)

    # ---- whole chain ------------------------------------------------------------------------
    wc: dict = {"mass_kg_from_plates": mass}
    wc["scale"] = scale_whole_chain(files, mass, out / "whole_chain" / "scale")
    model = Path(wc["scale"]["model"])
    lap("whole_chain_scale")
    q_wc, wc_err = run_walk_ik(model, files, weights, out / "whole_chain" / "ik.mot", window)
    wc["ik"] = {"coordinates": compare_angles(q_wc, q_ref, REPORT_COORDINATES, window), "markers": wc_err,
                "window_s": list(window)}
    lap("whole_chain_ik")
    q_wc_f = lowpass_table(q_wc, CUTOFF_HZ)
    tau_wc = nimble_id(model, q_wc_f, plates)
    wc["id"] = {"coordinates": compare_moments(tau_wc, id_ref, REPORT_COORDINATES, window),
                "inputs": "our IK low-passed 6 Hz + force plates, nimble ID", "window_s": list(window)}
    lap("whole_chain_id")
    est_wc = estimate_forces(model, q_wc_f)
    wc["grf"] = compare_grf(est_wc, plates, window)
    lap("whole_chain_grf")
    act80 = batched_activations(model, q_wc_f, plates, (window[0], window[1]))
    mapping80 = {f"{m}_{s}": f"{MOCO_TO_RAJAGOPAL[m]}_{s}" for m in MOCO_TO_RAJAGOPAL for s in SIDES}
    wc["activation"] = compare_activations(act80.activation, moco_ref, mapping80) | {
        "solver": "batched_so", "model": "our scaled Rajagopal2015 (80 Millard2012 muscles); the 18 reference "
        "muscles compared with their Rajagopal2015 namesakes", "inputs": "our IK low-passed 6 Hz + force plates",
        "max_constraint_violation": float(np.max(act80.constraint_violation)),
    }
    lap("whole_chain_activation")
    ours80 = on_times(act80.activation, common_times(moco_ref, MOCO_WINDOW))
    emg_wc18 = compare_emg(ours80.rename(columns={v: k for k, v in mapping80.items()}), emg, EMG_TO_18MUSC,
                           MOCO_WINDOW)
    emg_wc80 = compare_emg(act80.activation, emg, EMG_TO_RAJAGOPAL, MOCO_WINDOW)

    # ---- acceptance -------------------------------------------------------------------------
    th = THRESHOLDS

    def accept(part: dict, emg_ours: dict) -> dict:
        return {
            "ik_worst_rmse_deg": _worst(part["ik"]["coordinates"], IK_COORDINATES, "rmse_deg"),
            "ik_pass": _worst(part["ik"]["coordinates"], IK_COORDINATES, "rmse_deg") <= th["ik_rmse_deg"],
            "id_worst_rmse_pct_peak": _worst(part["id"]["coordinates"], ID_COORDINATES, "rmse_pct_peak"),
            "id_pass": _worst(part["id"]["coordinates"], ID_COORDINATES, "rmse_pct_peak") <= th["id_rmse_pct_peak"],
            "activation_median_r": part["activation"]["median_r"],
            "activation_pass": part["activation"]["median_r"] >= th["activation_median_r"],
            "grf_vertical_rmse_pct_bw": part["grf"]["vertical_rmse_pct_bw"],
            "grf_pass": part["grf"]["vertical_rmse_pct_bw"] <= th["grf_vertical_rmse_pct_bw"],
            "emg_agreement_pct": emg_ours["mean_agreement_pct"],
            "emg_reference_agreement_pct": emg_ref["mean_agreement_pct"],
            "emg_pass": emg_ours["mean_agreement_pct"] >= emg_ref["mean_agreement_pct"] - th["emg_agreement_margin_pct"],
        }

    result = {
        "trial": "OpenSim example3DWalking (Rajagopal 2016 subject, walking)",
        "thresholds": th,
        "ik_coordinates": list(IK_COORDINATES), "id_coordinates": list(ID_COORDINATES),
        "solver_only": so, "whole_chain": wc,
        "emg": {"method": {"delay_s": emg_ref["delay_s"], "threshold": emg_ref["threshold"],
                           "normalisation": "min-max over the window, both signals",
                           "window_s": list(MOCO_WINDOW)},
                "reference_moco_inverse": emg_ref, "solver_only_18musc": emg_so,
                "whole_chain_same_muscles": emg_wc18, "whole_chain_rajagopal_muscles": emg_wc80},
        "acceptance": {"solver_only": accept(so, emg_so), "whole_chain": accept(wc, emg_wc18)},
        "timing_s": timing, "files": {k: str(v) for k, v in files.items()},
    }
    result["_series"] = {
        "q_ref": q_ref, "q_so": q_ik, "q_so_addbiomechanics": q_ik_addb, "q_wc": q_wc, "id_ref": id_ref, "id_so": tau_ref_inputs, "id_wc": tau_wc,
        "grf_meas": plates, "grf_so": est_ref, "grf_wc": est_wc, "act_ref": moco_ref, "act_so": act18.activation,
        "act_wc": ours80.rename(columns={v: k for k, v in mapping80.items()}), "emg": emg,
    }
    return result
