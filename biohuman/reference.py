"""Reference activation solvers (OpenSim CMC, MocoInverse) in the workflow.

They are slow (CMC ~600 s, MocoInverse ~300-850 s of computing per second of motion on this
machine) and exist to validate the fast solver and for users who want the classic tools, so the
workflow runs them on a configured subset of trials and a time window (`reference_solvers` in the
config):

* `solve_reference` runs one of them on one trial (whole trial or a window) and writes its
  results in the files the dataset step reads: an OpenSim activation .sto, a violation CSV and a
  reserves CSV indexed by `time` (the same status-record shape as `pipeline.step_activations`).
* `step_reference_activations` is the per-trial step of rule `reference_activations`: it picks
  the window, runs the solver, writes the window as a trial NetCDF of the dataset spec (attribute
  `activation_solver` = cmc / moco_inverse) and an agreement JSON against the trial's main
  activations (normally static optimization) on the same frames.

The reference solvers solve no static-optimization moment balance, so their per-frame
`constraint_violation` is NaN (not applicable) and the trial NetCDF of a window carries no
`so_constraint_violation_max` check.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biohuman.errors import ConfigError, InputFormatError, SolverError

SOLVERS: tuple[str, ...] = ("cmc", "moco_inverse")
"""Reference solvers this module runs."""

CMC_OPTIONS = ("time_window", "fast_target", "residual_optimal_force", "reserve_optimal_force", "control_bound",
               "kp", "kv")
MOCO_OPTIONS = ("mesh_interval", "reserve_optimal_force", "residual_optimal_force", "convergence_tolerance",
                "constraint_tolerance", "max_iterations", "active_force_width_scale")
"""Keyword options of `osim.cmc.run_cmc` / `osim.moco.run_moco_inverse` settable from the config."""

ACTIVE_STD = 0.005
"""Muscles whose main-solver activation has a larger standard deviation enter the Pearson r."""

EDGE_S = 0.05
"""Coordinates kept before and after an automatically chosen window (s): CMC starts 0.03 s early
and ends one `cmc_time_window` late."""


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------


def reference_jobs(config: Mapping[str, Any], plan: Any) -> list[tuple[str, str, str]]:
    """(solver, subject, trial) of every configured reference run.

    config: validated config; plan: `biohuman.workflow.plan(config)`. Raises ConfigError naming
    unknown solvers or trial ids (`subject/trial`) with the known ones.
    """
    ref = config.get("reference_solvers", {}) or {}
    solvers = list(ref.get("solvers", []) or [])
    bad = [s for s in solvers if s not in SOLVERS]
    if bad:
        raise ConfigError(f"reference_solvers.solvers: unknown solver(s) {bad}; known: {list(SOLVERS)}")
    known = [f"{t.subject}/{t.trial}" for t in plan.trials]
    wanted = list(ref.get("trials", []) or [])
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise ConfigError(f"reference_solvers.trials: unknown trial id(s) {unknown}; trials of this config: "
                          f"{', '.join(known) or 'none'}")
    return [(s, *t.split("/", 1)) for s in solvers for t in wanted]  # type: ignore[misc]


def check_reference_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError when `reference_solvers` names unknown solvers or trials (called by
    `biohuman.config.validate_config` after the schema check; nothing to do without trials)."""
    ref = config.get("reference_solvers") or {}
    if not ref.get("trials") and not ref.get("solvers"):
        return
    from biohuman.workflow import plan

    reference_jobs(config, plan(config))


def reference_targets(config: Mapping[str, Any], plan: Any) -> list[str]:
    """Status-record paths of every configured reference run (target rule `reference`)."""
    R = config["results"]
    return [f"{R}/reference/{s}/{subj}/{trial}.status.json" for s, subj, trial in reference_jobs(config, plan)]


def solver_options(solver: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword options for the solver's wrapper from the `reference_solvers` config section
    (`settings[solver]`, e.g. {"time_window": 0.01} for cmc). Unknown keys raise ConfigError."""
    if solver not in SOLVERS:
        raise ConfigError(f"unknown reference solver '{solver}'; known: {list(SOLVERS)}")
    opts = dict((settings or {}).get(solver, {}) or {})
    allowed = CMC_OPTIONS if solver == "cmc" else MOCO_OPTIONS
    bad = [k for k in opts if k not in allowed]
    if bad:
        raise ConfigError(f"reference_solvers.{solver}: unknown option(s) {bad}; known: {list(allowed)}")
    return opts


# ------------------------------------------------------------------------------------------
# One solve, written in the files the dataset step reads
# ------------------------------------------------------------------------------------------


def feasible_range(solver: str, times: np.ndarray, options: Mapping[str, Any]) -> tuple[float, float]:
    """(start, end) s that the solver can cover with coordinates at `times`: CMC needs 0.03 s of
    coordinates before the range (initial states) and one `time_window` after it."""
    from biohuman.osim.cmc import CMC_INITIAL_STATES_S

    t0, t1 = float(times[0]), float(times[-1])
    if solver == "cmc":
        eps = 1e-6
        return t0 + CMC_INITIAL_STATES_S + eps, t1 - float(options.get("time_window", 0.01)) - eps
    return t0, t1


def _reserve_table(columns: Mapping[str, np.ndarray], times: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(columns, index=pd.Index(times, name="time"))


def _cmc_reserves(res: Any, frames: np.ndarray, out_dir: Path, name: str) -> pd.DataFrame:
    """Generalized forces of CMC's residual/reserve actuators (N m / N) on the frames, by coordinate."""
    from biohuman.osim.cmc import read_cmc_storage

    path = out_dir / f"{name}_Actuation_force.sto"
    if not path.is_file():
        raise SolverError("CMC wrote no actuation forces", path)
    forces = read_cmc_storage(path)
    tt = forces.index.to_numpy(dtype=float)
    cols = {}
    for coord, actuator in res.settings["actuators"].items():
        if actuator in forces.columns:
            cols[coord] = np.interp(frames, tt, forces[actuator].to_numpy(dtype=float))
    return _reserve_table(cols, frames)


def _moco_reserves(res: Any, frames: np.ndarray, coordinates: Sequence[str],
                   options: Mapping[str, Any]) -> pd.DataFrame:
    """Generalized forces of MocoInverse's reserves (`reserve_*`, ModOpAddReserves) and residuals
    (`residual_*`) on the frames: control x optimal force, by coordinate (longest name match)."""
    from biohuman.osim.model import opensim

    osim = opensim()
    traj = osim.MocoTrajectory(str(res.outputs["solution"]))
    table = traj.exportToControlsTable()
    labels = list(table.getColumnLabels())
    data = table.getMatrix().to_numpy()
    tt = np.asarray(table.getIndependentColumn(), dtype=float)
    by_len = sorted(coordinates, key=len, reverse=True)
    f_res = float(options.get("reserve_optimal_force", 1.0))
    f_resid = float(options.get("residual_optimal_force", 100.0))
    cols: dict[str, np.ndarray] = {}
    for k, lab in enumerate(labels):
        act = lab.rsplit("/", 1)[-1]
        if act.startswith("reserve_"):
            fopt = f_res
        elif act.startswith("residual_"):
            fopt = f_resid
        else:
            continue
        coord = next((c for c in by_len if act.endswith("_" + c)), None)
        if coord is None:
            continue
        vals = np.interp(frames, tt, data[:, k]) * fopt
        cols[coord] = cols.get(coord, 0.0) + vals
    return _reserve_table(cols, frames)


def solve_reference(solver: str, model_osim: str | Path, coordinates_mot: str | Path,
                    external_loads_xml: str | Path | None, out_dir: str | Path, name: str,
                    time_range: Sequence[float] | None, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run a reference solver on one trial and write its results as the dataset step reads them.

    solver: "cmc" | "moco_inverse". model_osim: scaled .osim; coordinates_mot: filtered IK
    coordinates (.mot); external_loads_xml: the trial's ExternalLoads XML (or None). time_range:
    (start, end) s, or None for the whole trial; clipped to what the solver can cover (CMC: 0.03 s
    after the first and one CMC window before the last coordinate row). settings: the
    `reference_solvers` config section (per-solver options under `cmc` / `moco_inverse`).

    Writes in out_dir: `{name}_{solver}_activation.sto` (OpenSim storage, time x muscles, the
    solver's activations on the coordinate frames of the range), `{name}_{solver}_violation.csv`
    (`time`, `constraint_violation`: NaN, the solvers have no static-optimization constraint),
    `{name}_{solver}_reserves.csv` (`time` x coordinate: residual/reserve generalized forces,
    N m / N), plus the solver's own files (setup XML, states / solution). Returns
    `{"outputs": {...}, "extra": {solver, frames, time_range, wall_s, s_per_s, settings}}`.
    """
    from biohuman.io.storage import read_storage, write_storage
    from biohuman.osim.model import model_info

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = solver_options(solver, settings)
    times = read_storage(coordinates_mot).table.index.to_numpy(dtype=float)
    if len(times) < 2:
        raise InputFormatError("coordinates file has fewer than two rows", coordinates_mot)
    lo, hi = feasible_range(solver, times, opts)
    want = (float(times[0]), float(times[-1])) if time_range is None else (float(time_range[0]), float(time_range[1]))
    t0, t1 = max(want[0], lo), min(want[1], hi)
    if not t1 > t0:
        raise ConfigError(f"{solver}: time range {want[0]:.3f}-{want[1]:.3f} s leaves nothing inside the range the "
                          f"solver can cover ({lo:.3f}-{hi:.3f} s)", coordinates_mot)
    if solver == "cmc":
        from biohuman.osim.cmc import run_cmc

        res = run_cmc(model_osim, coordinates_mot, external_loads_xml, (t0, t1), out_dir, name=name, **opts)
    else:
        from biohuman.osim.moco import run_moco_inverse

        res = run_moco_inverse(model_osim, coordinates_mot, external_loads_xml, (t0, t1), out_dir,
                               name=f"{name}_moco_inverse", **opts)
    act = res.activation
    if not np.isfinite(act.to_numpy()).all():
        raise SolverError(f"{solver} returned non-finite activations", out_dir)
    # on the coordinate frames of the range (MocoInverse returns its collocation grid)
    frames = times[(times >= t0 - 1e-9) & (times <= t1 + 1e-9)]
    ta = act.index.to_numpy(dtype=float)
    if frames.size == 0 or ta[0] > frames[0] + 1e-6 or ta[-1] < frames[-1] - 1e-6:
        raise SolverError(f"{solver} activations cover {ta[0]:.4f}-{ta[-1]:.4f} s, not the frames "
                          f"{frames[0] if frames.size else t0:.4f}-{frames[-1] if frames.size else t1:.4f} s", out_dir)
    act = pd.DataFrame({m: np.interp(frames, ta, act[m].to_numpy(dtype=float)) for m in act.columns},
                       index=pd.Index(frames, name="time"))
    if solver == "cmc":
        reserves = _cmc_reserves(res, frames, out_dir, name)
    else:
        reserves = _moco_reserves(res, frames, model_info(model_osim).coordinates, opts)
    act_sto = out_dir / f"{name}_{solver}_activation.sto"
    write_storage(act_sto, act, in_degrees=False, name=f"{name}_{solver}_activation")
    viol_csv = out_dir / f"{name}_{solver}_violation.csv"
    pd.DataFrame({"constraint_violation": np.full(len(frames), np.nan)},
                 index=pd.Index(frames, name="time")).to_csv(viol_csv, index_label="time")
    res_csv = out_dir / f"{name}_{solver}_reserves.csv"
    reserves.to_csv(res_csv, index_label="time")
    outputs: dict[str, Any] = {"activation_sto": act_sto, "violation": viol_csv, "reserves": res_csv}
    outputs.update({f"{solver}_{k}": v for k, v in res.outputs.items()})
    span = float(frames[-1] - frames[0]) if len(frames) > 1 else float(t1 - t0)
    settings_out = json.loads(json.dumps(res.settings, default=str))  # plain JSON values (paths as text)
    return {"outputs": outputs,
            "extra": {"solver": solver, "frames": int(len(frames)), "time_range": [float(t0), float(t1)],
                      "wall_s": float(res.wall_s), "s_per_s": float(res.s_per_s), "motion_s": span,
                      "requested_range": list(want), "settings": settings_out,
                      "moment_arm_definition": "opensim", "max_violation": None}}


# ------------------------------------------------------------------------------------------
# Window, agreement
# ------------------------------------------------------------------------------------------


def choose_window(times: np.ndarray, contact: np.ndarray | None, window_s: float, start_s: float | None,
                  edge_s: float = EDGE_S) -> tuple[float, float]:
    """(start, end) s of the reference window on a trial.

    times: (T,) s of the coordinate frames; contact: (T, 2) bool foot contact (r, l) on the same
    times, or None. start_s given: [start_s, start_s + window_s], which must lie in the trial
    (ConfigError otherwise). start_s None: the window starts at the first foot strike (right foot
    first, then left) that leaves `edge_s` of frames before it and room for the window after it
    (stance of a walk); without one, the window is centred in the trial. A window longer than the
    trial (less the edges) is shortened to it.
    """
    times = np.asarray(times, dtype=float)
    first, last = float(times[0]) + edge_s, float(times[-1]) - edge_s
    if not last > first:
        raise ConfigError(f"trial of {times[-1] - times[0]:.3f} s is too short for a reference window")
    if not window_s > 0:
        raise ConfigError(f"reference_solvers.window_s must be > 0, got {window_s}")
    if start_s is not None:
        a, b = float(start_s), float(start_s) + float(window_s)
        if a < float(times[0]) or b > float(times[-1]):
            raise ConfigError(f"reference window {a:.3f}-{b:.3f} s is outside the trial ({times[0]:.3f}-"
                              f"{times[-1]:.3f} s)")
        return a, b
    w = min(float(window_s), last - first)
    if contact is not None and len(contact) == len(times):
        c = np.asarray(contact, dtype=bool)
        for foot in (0, 1):
            onsets = np.flatnonzero(c[1:, foot] & ~c[:-1, foot]) + 1
            for k in onsets:
                a = float(times[k])
                if a >= first and a + w <= last:
                    return a, a + w
    mid = 0.5 * (float(times[0]) + float(times[-1]))
    return mid - 0.5 * w, mid + 0.5 * w


def agreement(reference: pd.DataFrame, main: pd.DataFrame, *, active_std: float = ACTIVE_STD) -> dict[str, Any]:
    """Agreement of reference activations with the main solver's on the reference's frames.

    reference, main: (T x muscles) activations indexed by time (s); `main` is linearly
    interpolated onto the reference times. Returns rmse and max_abs_error over all muscles and
    frames (activation, 0-1), the muscle of the largest error, and the per-muscle Pearson r
    (median, min, muscle of the min) over muscles whose main activation varies (std >
    `active_std`; r is NaN when no muscle qualifies or a reference activation is constant).
    """
    muscles = [m for m in reference.columns if m in main.columns]
    missing = [m for m in reference.columns if m not in main.columns]
    if not muscles:
        raise InputFormatError("no muscle in common between the reference and the main activations")
    t = reference.index.to_numpy(dtype=float)
    tm = main.index.to_numpy(dtype=float)
    if t[0] < tm[0] - 1e-6 or t[-1] > tm[-1] + 1e-6:
        raise InputFormatError(f"main activations cover {tm[0]:.3f}-{tm[-1]:.3f} s, not the reference window "
                               f"{t[0]:.3f}-{t[-1]:.3f} s")
    a = reference[muscles].to_numpy(dtype=float)
    b = np.column_stack([np.interp(t, tm, main[m].to_numpy(dtype=float)) for m in muscles])
    err = a - b
    k = int(np.argmax(np.abs(err).max(axis=0)))
    active = [j for j in range(len(muscles)) if b[:, j].std() > active_std]
    rs = []
    for j in active:
        sa = a[:, j].std()
        rs.append(float(np.corrcoef(a[:, j], b[:, j])[0, 1]) if sa > 0 else float("nan"))
    rs_arr = np.array(rs, dtype=float)
    fin = np.isfinite(rs_arr)
    jmin = active[int(np.nanargmin(rs_arr))] if fin.any() else None
    return {
        "frames": int(len(t)), "muscles": len(muscles), "missing_in_main": missing,
        "rmse": float(np.sqrt(np.mean(err**2))), "max_abs_error": float(np.abs(err).max()),
        "max_abs_error_muscle": muscles[k],
        "muscles_varying": len(active), "active_std_threshold": active_std,
        "r_median": float(np.median(rs_arr[fin])) if fin.any() else float("nan"),
        "r_min": float(np.min(rs_arr[fin])) if fin.any() else float("nan"),
        "r_min_muscle": muscles[jmin] if jmin is not None else None,
        "r_undefined": int((~fin).sum()),
        "mean_reference": float(a.mean()), "mean_main": float(b.mean()),
    }


# ------------------------------------------------------------------------------------------
# The workflow step
# ------------------------------------------------------------------------------------------


def _window_ik_record(ik: Mapping[str, Any], model: Path, t0: float, t1: float, out_dir: Path, name: str) -> dict:
    """A copy of the IK record whose filtered coordinates and marker errors hold only the window's
    frames (so that the dataset step smooths, checks and stores the window alone)."""
    from biohuman.pipeline import read_coordinates, write_coordinates

    coords = read_coordinates(ik["outputs"]["filtered_mot"], model)
    keep = (coords.index >= t0 - 1e-9) & (coords.index <= t1 + 1e-9)
    mot = write_coordinates(out_dir / f"{name}_window_filtered.mot", coords.loc[keep], model, f"{name}_window")
    err = pd.read_csv(ik["outputs"]["marker_errors"], index_col="time")
    err = err.loc[(err.index >= t0 - 1e-9) & (err.index <= t1 + 1e-9)]
    err_csv = out_dir / f"{name}_window_marker_errors.csv"
    err.to_csv(err_csv, index_label="time")
    rec = json.loads(json.dumps(dict(ik), default=str))
    rec["outputs"] = {**rec["outputs"], "filtered_mot": str(mot), "marker_errors": str(err_csv)}
    return rec


def _drop_inapplicable_checks(ds: Any) -> Any:  # noqa: ANN401 - xarray Dataset
    """Remove the SO-constraint check when it holds NaN (a reference solver has no such
    constraint) and recompute qc_status from the remaining flags."""
    name = "so_constraint_violation_max"
    if "check" not in ds.dims or name not in [str(c) for c in ds["check"].values]:
        return ds
    if np.isfinite(float(ds["qc_value"].sel(check=name))):
        return ds
    ds = ds.drop_sel(check=name)
    ds.attrs["qc_status"] = "flagged" if bool((ds["qc_flag"].to_numpy() == 1).any()) else "pass"
    return ds


def step_reference_activations(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any],
                               trial: Mapping[str, Any], solver: str, out_dir: str | Path,
                               config_hash: str) -> dict[str, Any]:
    """Run a reference solver on the configured window of one trial and store it as a dataset.

    upstream: records `scale`, `ik`, `grf`, `id` and `activations` (the run's main solver).
    Window: `reference_solvers.start_s` / `window_s` (`choose_window`). Writes in out_dir
    `{trial}.nc` (the window in the dataset spec, `activation_solver` = solver, plus
    `reference_*` attributes) and `{trial}_agreement.json` (activation RMSE, max abs error,
    median / worst per-muscle Pearson r against the main activations on the same frames, and
    wall seconds per second of motion). Status: the window's QC (ok / flagged).
    """
    from biohuman.io.dataset import open_trial, save_trial
    from biohuman.io.atomic import atomic_write_text
    from biohuman.io.storage import read_storage
    from biohuman.pipeline import read_coordinates, step_trial_dataset

    if solver not in SOLVERS:
        raise ConfigError(f"unknown reference solver '{solver}'; known: {list(SOLVERS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = trial["trial"]
    model = Path(upstream["scale"]["outputs"]["model"])
    ref_cfg = config.get("reference_solvers", {}) or {}
    coords = read_coordinates(upstream["ik"]["outputs"]["filtered_mot"], model)
    times = coords.index.to_numpy(dtype=float)
    contact = None
    cpath = upstream["grf"]["outputs"].get("contact")
    if cpath and Path(cpath).is_file():
        c = np.load(cpath)
        contact = np.stack([np.interp(times, c["time"], c["contact"][:, k].astype(float)) for k in range(2)],
                           axis=1) > 0.5
    w0, w1 = choose_window(times, contact, float(ref_cfg.get("window_s", 0.3)), ref_cfg.get("start_s"))
    log.info("%s on %s/%s, window %.3f-%.3f s", solver, trial["subject"], name, w0, w1)
    rec = solve_reference(solver, model, upstream["ik"]["outputs"]["filtered_mot"],
                          upstream["grf"]["outputs"].get("external_loads"), out_dir, name, (w0, w1), ref_cfg)
    ex = rec["extra"]
    t0, t1 = ex["time_range"]
    log.info("%s: %d frames, %.1f s wall, %.0f s per s of motion", solver, ex["frames"], ex["wall_s"], ex["s_per_s"])

    # the window in the dataset spec, built by the dataset step from window-only upstream records
    ups = dict(upstream)
    ups["ik"] = _window_ik_record(upstream["ik"], model, t0, t1, out_dir, name)
    ups["activations"] = {"status": "ok", "outputs": {k: str(v) for k, v in rec["outputs"].items()},
                          "extra": ex}
    staging = out_dir / f".{name}.staging.nc"
    try:
        step_trial_dataset(upstream=ups, log=log, config={**config, "activation_solver": solver},
                           trial=trial, out_path=staging, config_hash=config_hash, render_status=None)
        ds = _drop_inapplicable_checks(open_trial(staging))
    finally:
        staging.unlink(missing_ok=True)
    main_solver = str(upstream["activations"].get("extra", {}).get("solver", config.get("activation_solver", "")))
    ds.attrs.update({
        "video": "none: reference-solver window",
        "reference_window_start_s": float(t0), "reference_window_end_s": float(t1),
        "reference_wall_s": float(ex["wall_s"]), "reference_s_per_s": float(ex["s_per_s"]),
        "reference_settings": json.dumps(ex["settings"], sort_keys=True),
        "main_activation_solver": main_solver,
    })
    nc = save_trial(ds, out_dir / f"{name}.nc")

    # agreement with the main activations on the same frames (raw solver outputs)
    ref_act = read_storage(rec["outputs"]["activation_sto"]).table
    main_act = read_storage(upstream["activations"]["outputs"]["activation_sto"]).table
    agree = agreement(ref_act, main_act)
    agree.update({"solver": solver, "main_solver": main_solver, "trial_id": f"{trial['subject']}/{name}",
                  "window_s": [float(t0), float(t1)], "wall_s": float(ex["wall_s"]),
                  "s_per_s": float(ex["s_per_s"]), "compared": "raw solver activations (before smoothing)"})
    # the same after the dataset's Savitzky-Golay smoothing, both applied to the window alone
    agree["smoothed"] = agreement(_smoothed(ref_act, config), _smoothed(_on_frames(main_act, ref_act.index), config))
    agree_path = out_dir / f"{name}_agreement.json"
    atomic_write_text(agree_path, json.dumps(_finite_or_null(agree), indent=1, allow_nan=False) + "\n")
    log.info("agreement with %s: RMSE %.4f, max %.3f (%s), r median %.3f, min %.3f (%s)", main_solver,
             agree["rmse"], agree["max_abs_error"], agree["max_abs_error_muscle"], agree["r_median"],
             agree["r_min"], agree["r_min_muscle"])
    qc = str(ds.attrs["qc_status"])
    status = "ok" if qc == "pass" else "flagged"
    failed = [str(c) for c, f in zip(ds["check"].values, ds["qc_flag"].values) if int(f) == 1]
    msg = "" if status == "ok" else "QC flagged: " + ", ".join(failed)
    return {"status": status, "message": msg,
            "outputs": {"netcdf": nc, "agreement": agree_path, **rec["outputs"]},
            "extra": {"solver": solver, "window_s": [float(t0), float(t1)], "frames": ex["frames"],
                      "wall_s": ex["wall_s"], "s_per_s": ex["s_per_s"],
                      "agreement": {k: agree[k] for k in ("rmse", "max_abs_error", "r_median", "r_min")},
                      "qc": {str(c): {"value": float(v), "flag": int(f)} for c, v, f in
                             zip(ds["check"].values, ds["qc_value"].values, ds["qc_flag"].values)}}}


def _on_frames(table: pd.DataFrame, times: pd.Index) -> pd.DataFrame:
    """A time-indexed table linearly interpolated onto `times` (s)."""
    t = np.asarray(times, dtype=float)
    src = table.index.to_numpy(dtype=float)
    return pd.DataFrame({c: np.interp(t, src, table[c].to_numpy(dtype=float)) for c in table.columns},
                        index=pd.Index(t, name="time"))


def _smoothed(table: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """Activations smoothed as the dataset step does (Savitzky-Golay, config `smoothing`), in [0, 1]."""
    from biohuman.dynamics.filters import savgol_smooth

    t = table.index.to_numpy(dtype=float)
    rate = 1.0 / float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    sm = config["smoothing"]
    out = np.clip(savgol_smooth(table.to_numpy(dtype=float), rate, sm["window_s"], sm["polyorder"]), 0.0, 1.0)
    return pd.DataFrame(out, index=table.index, columns=table.columns)


def _finite_or_null(obj: Any) -> Any:  # noqa: ANN401 - JSON-able tree
    """Plain JSON values with non-finite floats as null (strict JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


__all__ = ["SOLVERS", "agreement", "check_reference_config", "choose_window", "feasible_range", "reference_jobs",
           "reference_targets", "solve_reference", "solver_options", "step_reference_activations"]
