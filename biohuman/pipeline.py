"""The per-trial labelling steps the workflow runs: scale -> IK -> ground forces -> ID ->
activations -> trial dataset. Each step reads its upstream status records, writes its artefacts
under results/{step}/{subject}/ and returns {"outputs": ..., "extra": ...} for its own record.

Functions here never read ground truth: their inputs are marker files, subject sheets (mass and
height) and upstream artefacts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from biohuman.errors import ConfigError, InputFormatError
from biohuman.osim.model import model_info, resolve_model_path

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def _guard(path: str | Path) -> Path:
    """Refuse ground-truth files as labelling inputs (they exist only to validate)."""
    p = Path(path)
    if "ground_truth" in p.parts:
        raise ConfigError("labelling must not read ground truth", p)
    return p


def cutoff_for(config: Mapping[str, Any], motion_type: str) -> float:
    """Low-pass cut-off (Hz) for a motion type; the same for kinematics and ground forces."""
    cut = config["filter"]["cutoff_hz"]
    return float(cut.get(motion_type, cut.get("default", 6.0)))


def read_coordinates(path: str | Path, model_path: str | Path) -> pd.DataFrame:
    """Read a coordinates .mot written by this package (rotational in degrees when the header
    says so) as a DataFrame in radians / metres with all model coordinates."""
    from biohuman.io.storage import read_storage

    st = read_storage(path)
    info = model_info(model_path)
    table = st.table.copy()
    missing = [c for c in info.coordinates if c not in table.columns]
    if missing:
        raise InputFormatError(f"coordinates missing from the file: {', '.join(missing[:6])}", path)
    table = table[list(info.coordinates)]
    if st.in_degrees:
        rot = [c for c in info.rotational]
        table[rot] = np.radians(table[rot])
    return table


def write_coordinates(path: str | Path, coords: pd.DataFrame, model_path: str | Path, name: str) -> Path:
    """Write coordinates (radians / metres) as an OpenSim .mot in degrees, every rotational
    coordinate (the knee beta ones included) converted, so the file is self-consistent."""
    from biohuman.io.storage import write_storage

    info = model_info(model_path)
    table = coords.copy()
    rot = [c for c in table.columns if c in info.rotational]
    table[rot] = np.degrees(table[rot])
    write_storage(path, table, in_degrees=True, name=name)
    return Path(path)


# ------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------


def step_scale(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any], subject: str,
               static_trc: str | Path, sheet: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Scale the generic model to the subject from the static trial and place the markers."""
    from biohuman.osim.scale import scale_model, scale_muscle_strength

    out_dir = Path(out_dir)
    sheet_data = yaml.safe_load(_guard(sheet).read_text())
    mass = float(sheet_data["mass_kg"])
    generic = resolve_model_path(config["model"])
    res = scale_model(generic, _guard(static_trc), mass, out_dir / "model.osim",
                      measurements=MODELS_DIR / "rajagopal2015_scaling.yaml",
                      marker_placement=config["scale"]["marker_placement"],
                      max_pose_deviation_deg=config["scale"]["max_static_pose_deviation_deg"],
                      setup_out=out_dir / "scale_setup.xml")
    strength_cfg = config["scale"]["muscle_strength"]  # defaults filled by the config schema
    strength = scale_muscle_strength(res.model, generic, method=strength_cfg["method"],
                                     exponent=float(strength_cfg["exponent"]))
    summary = {
        "subject": subject, "mass_kg": mass, "height_m": float(sheet_data["height_m"]),
        "scale_factors": {k: np.asarray(v).tolist() for k, v in res.scale_factors.items()},
        "marker_rmse_m": res.marker_rmse, "marker_max_m": res.marker_max,
        "static_pose": {k: float(v) for k, v in res.static_pose.items()},
        "muscle_strength": strength,
    }
    (out_dir / "scale.json").write_text(json.dumps(summary, indent=1))
    log.info("scaled %s: marker RMSE %.1f mm, muscle strength x%.3f (%s)", subject, 1000 * res.marker_rmse,
             strength["factor"], strength["method"])
    return {"outputs": {"model": res.model, "setup": out_dir / "scale_setup.xml", "summary": out_dir / "scale.json"},
            "extra": {"marker_rmse_m": res.marker_rmse, "marker_max_m": res.marker_max}}


def _scaled_model(upstream: Mapping[str, Any]) -> Path:
    return Path(upstream["scale"]["outputs"]["model"])


def step_ik(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any], trial: Mapping[str, Any],
            trc: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Read and repair the trial's markers, run inverse kinematics, low-pass the coordinates.

    `ik.solver`: "opensim" (InverseKinematicsTool) or "nimble" (`biohuman.dynamics.nimble_ik`: the
    same weighted marker least squares, per frame, warm started). Writes {trial}_markers.trc (the
    repaired markers IK used), {trial}.mot (IK, radians), {trial}_filtered.mot (the motion type's
    cut-off; what every later step uses), {trial}_marker_errors.csv and the IK setup (OpenSim's
    XML, or nimble's settings JSON).
    """
    from biohuman.dynamics.filters import lowpass
    from biohuman.io.trc import read_trc, write_trc
    from biohuman.osim.ik import run_ik

    out_dir = Path(out_dir)
    name = trial["trial"]
    model = _scaled_model(upstream)
    info = model_info(model)
    markers = read_trc(_guard(trc), known=info.markers, max_gap_s=config["markers"]["max_gap_s"])
    if trial.get("time_range"):
        markers = markers.window(*trial["time_range"])
    usable = [n for n in markers.names if n in info.markers]
    markers = markers.subset(usable)
    clean_trc = out_dir / f"{name}_markers.trc"
    write_trc(clean_trc, markers, units="m")
    for note in markers.repairs:
        log.info("repaired: %s", note)
    solver = config["ik"].get("solver", "opensim")
    if solver == "nimble":
        from biohuman.dynamics.nimble_ik import nimble_ik

        res = nimble_ik(model, markers, out_dir / f"{name}.mot")
    elif solver == "opensim":
        res = run_ik(model, clean_trc, out_dir / f"{name}.mot", setup_out=out_dir / f"{name}_ik_setup.xml",
                     accuracy=config["ik"]["accuracy"])
    else:
        raise ConfigError(f"ik.solver '{solver}' is not available (opensim | nimble)")
    coords = res.coordinates[list(info.coordinates)]
    rate = 1.0 / float(np.median(np.diff(coords.index.to_numpy())))
    cutoff = cutoff_for(config, trial["motion_type"])
    filtered = pd.DataFrame(lowpass(coords.to_numpy(), rate, cutoff), index=coords.index, columns=coords.columns)
    write_coordinates(out_dir / f"{name}_filtered.mot", filtered, model, f"{name}_ik_filtered_{cutoff:g}Hz")
    errors = res.marker_errors.copy()
    errors.insert(0, "rmse", res.marker_rmse)
    errors.insert(1, "max", res.marker_max)
    errors.to_csv(out_dir / f"{name}_marker_errors.csv", index_label="time")
    extra = {"solver": solver, "frames": len(coords), "cutoff_hz": cutoff, "repairs": list(markers.repairs),
             "marker_rmse_mean_m": float(np.mean(res.marker_rmse)), "marker_max_m": float(np.max(res.marker_max))}
    log.info("IK %d frames, mean RMSE %.1f mm, max %.1f mm", len(coords), 1000 * extra["marker_rmse_mean_m"],
             1000 * extra["marker_max_m"])
    return {"outputs": {"mot": res.out_mot, "filtered_mot": out_dir / f"{name}_filtered.mot", "markers_trc": clean_trc,
                        "marker_errors": out_dir / f"{name}_marker_errors.csv",
                        "setup": res.setup}, "extra": extra}


def step_ground_forces(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any],
                       trial: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Ground forces: the trial's measured ones when it has them (low-passed at the same cut-off
    as the kinematics), else estimated from whole-body dynamics and foot contact."""
    from biohuman.dynamics.filters import lowpass
    from biohuman.dynamics.grf import ContactConfig, GroundForces, estimate_grf, load_measured_grf
    from biohuman.dynamics.grf import write_external_loads_xml, write_grf_mot

    out_dir = Path(out_dir)
    name = trial["trial"]
    model = _scaled_model(upstream)
    coords = read_coordinates(upstream["ik"]["outputs"]["filtered_mot"], model)
    cutoff = cutoff_for(config, trial["motion_type"])
    if trial.get("grf_mot"):
        gf = load_measured_grf(_guard(trial["grf_mot"]), _guard(trial["external_loads_xml"]))
        t = coords.index.to_numpy()
        rate = 1.0 / float(np.median(np.diff(gf.time)))
        force = lowpass(gf.force.reshape(len(gf.time), -1), rate, cutoff).reshape(gf.force.shape)
        gf = GroundForces(
            time=t,
            force=_interp(gf.time, force, t),
            cop=_interp(gf.time, gf.cop, t),
            torque=_interp(gf.time, gf.torque, t),
            contact=_interp(gf.time, gf.contact.astype(float), t) > 0.5,
            info={**gf.info, "source": "measured"},
        )
    else:
        gcfg = config["ground_forces"]
        contact = ContactConfig(height_tol=gcfg["contact_height_m"], speed_tol=gcfg["contact_speed_m_s"],
                                min_contact_s=gcfg["min_contact_s"])
        gf = estimate_grf(model, coords, cutoff_hz=cutoff, contact=contact)
        gf.info["source"] = "estimated"
    mot = write_grf_mot(out_dir / f"{name}_grf.mot", gf)
    xml = write_external_loads_xml(out_dir / f"{name}_external_loads.xml", mot)
    np.savez_compressed(out_dir / f"{name}_contact.npz", time=gf.time, contact=gf.contact)
    info = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in gf.info.items()}
    log.info("ground forces (%s): %s", info.get("source"), info)
    return {"outputs": {"grf_mot": mot, "external_loads": xml, "contact": out_dir / f"{name}_contact.npz"},
            "extra": info}


def _interp(t_src: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation along axis 0 onto new times (values outside are held)."""
    flat = values.reshape(len(t_src), -1)
    out = np.stack([np.interp(t, t_src, flat[:, k]) for k in range(flat.shape[1])], axis=1)
    return out.reshape((len(t),) + values.shape[1:])


def step_inverse_dynamics(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any],
                          trial: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Inverse dynamics of the filtered coordinates with the trial's ground forces, written as an
    OpenSim ID storage (`{trial}_id.sto`, `<coordinate>_moment` / `_force` columns).

    `inverse_dynamics.solver`: "nimble" (all frames in one batch, `biohuman.dynamics.nimble_id`,
    equal to OpenSim ID) or "opensim" (InverseDynamicsTool with its own filter off: kinematics and
    forces are already filtered alike).
    """
    from biohuman.errors import SolverError

    out_dir = Path(out_dir)
    name = trial["trial"]
    model = _scaled_model(upstream)
    solver = config.get("inverse_dynamics", {}).get("solver", "nimble")
    sto = out_dir / f"{name}_id.sto"
    outputs: dict[str, Any] = {"sto": sto}
    if solver == "nimble":
        from biohuman.dynamics.grf import load_measured_grf
        from biohuman.dynamics.nimble_id import inverse_dynamics
        from biohuman.io.storage import write_storage

        coords = read_coordinates(upstream["ik"]["outputs"]["filtered_mot"], model)
        # the ground forces exactly as the OpenSim tools read them (no contact re-thresholding)
        gf = load_measured_grf(upstream["grf"]["outputs"]["grf_mot"], upstream["grf"]["outputs"]["external_loads"],
                               contact_threshold_n=-np.inf)
        tau = inverse_dynamics(model, coords, gf, qdd_method="spline")
        labels = tau.attrs["labels"]
        moments = tau.rename(columns=labels)
        write_storage(sto, moments, in_degrees=False, name=f"{name}_nimble_inverse_dynamics")
    elif solver == "opensim":
        from biohuman.osim.id import run_id

        moments = run_id(model, upstream["ik"]["outputs"]["filtered_mot"], sto,
                         external_loads_xml=upstream["grf"]["outputs"]["external_loads"],
                         setup_out=out_dir / f"{name}_id_setup.xml", lowpass_hz=None)
        outputs["setup"] = out_dir / f"{name}_id_setup.xml"
    else:
        raise ConfigError(f"inverse_dynamics.solver '{solver}' is not available (nimble | opensim)")
    if not bool(np.isfinite(moments.to_numpy()).all()):
        raise SolverError("inverse dynamics produced non-finite generalized forces", sto)
    return {"outputs": outputs, "extra": {"frames": len(moments), "solver": solver}}


def step_muscle_surrogate(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any], subject: str,
                          ik_statuses: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Fit the muscle-geometry surrogate of one subject's scaled model once, sampled over the
    coordinate ranges of all that subject's usable trials (union + 5 deg / 2 cm), so that every
    trial's batched static optimization shares it. Trials whose IK failed are left out (named
    in the record); frames of a later trial outside the box are flagged by QC."""
    from biohuman.dynamics.muscles import coordinate_ranges, fit_muscle_surrogate
    from biohuman.errors import InputFormatError
    from biohuman.io.dataset import read_status

    out_dir = Path(out_dir)
    model = _scaled_model(upstream)
    frames, used, left_out = [], [], []
    for p in ik_statuses:
        rec = read_status(p)
        if rec.get("status") in ("ok", "flagged"):
            frames.append(read_coordinates(rec["outputs"]["filtered_mot"], model))
            used.append(rec.get("trial_id", str(p)))
        else:
            left_out.append(f"{rec.get('trial_id', p)} ({rec.get('status')})")
    if not frames:
        raise InputFormatError(f"no usable IK result among the subject's trials: {', '.join(left_out)}",
                               out_dir)
    if left_out:
        log.warning("trials left out of the surrogate box: %s", ", ".join(left_out))
    cfg = config.get("batched_so", {})
    sur = fit_muscle_surrogate(model, coordinate_ranges(frames), moment_arms=cfg.get("moment_arms", "opensim"),
                               seed=int(config["seed"]), cache_dir=out_dir,
                               poses=frames if cfg.get("visited_poses", True) else None,
                               n_samples=cfg.get("surrogate_samples"), n_visited=int(cfg.get("surrogate_visited", 800)))
    meta = sur.metadata
    log.info("surrogate for %s: %d muscles over %d coordinates, fit %.1f s (cache %s), moment-arm RMSE median "
             "%.2f mm, max %.2f mm", subject, len(sur.muscles), len(sur.coordinates),
             meta.get("timing_s", {}).get("total", 0.0), meta.get("cache", {}).get("hit"),
             meta["summary_mm"]["moment_arm_rmse_median"], meta["summary_mm"]["moment_arm_rmse_max"])
    off_chain = {m: list(c) for m, c in sur.off_chain.items()}
    if off_chain:
        log.info("moment arms about joints the path does not cross (OpenSim's, fitted too): %s",
                 "; ".join(f"{m}: {', '.join(c)}" for m, c in off_chain.items()))
    return {"outputs": {"surrogate": meta["cache"]["path"]},
            "extra": {"trials": used, "left_out": left_out, "moment_arm_definition": sur.moment_arms,
                      "fit_s": float(meta.get("timing_s", {}).get("total", 0.0)),
                      "cache_hit": bool(meta.get("cache", {}).get("hit")),
                      "n_samples": int(meta["settings"]["n_samples"]),
                      "summary_mm": meta["summary_mm"], "coordinates": list(sur.coordinates),
                      "off_chain": off_chain}}


def _torch_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def step_activations(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any],
                     trial: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Muscle activations with the configured solver (`activation_solver`):

    - `batched_so` (default): batched torch static optimization of all frames against the
      trial's inverse dynamics (the `id` step), with the subject's muscle surrogate (the
      `muscle_surrogate` step);
    - `opensim_so`: OpenSim AnalyzeTool + StaticOptimization;
    - `cmc` / `moco_inverse`: OpenSim CMC / MocoInverse over the whole trial (slow; see
      `biohuman.reference` and the `reference_solvers` config for windows of chosen trials).
    """
    solver = config["activation_solver"]
    out_dir = Path(out_dir)
    name = trial["trial"]
    model = _scaled_model(upstream)
    so = config["opensim_so"]
    if solver == "batched_so":
        from biohuman.dynamics.batched_so import batched_static_optimization
        from biohuman.dynamics.muscles import MuscleSurrogate

        cfg = config.get("batched_so", {})
        coords = read_coordinates(upstream["ik"]["outputs"]["filtered_mot"], model)
        tau = _read_table(upstream["id"]["outputs"]["sto"])
        sur = MuscleSurrogate.load(upstream["surrogate"]["outputs"]["surrogate"])
        res = batched_static_optimization(
            model, coords, tau, surrogate=sur, activation_exponent=so["activation_exponent"],
            pennation=cfg.get("pennation", "opensim"), moment_arms=cfg.get("moment_arms", "opensim"),
            device=_torch_device(cfg.get("device", "cpu")))
        paths = res.write(out_dir, name)
        res.reserve_actuation.to_csv(out_dir / f"{name}_reserves.csv", index_label="time")
        n_bad = int((~np.asarray(res.converged)).sum())
        n_out = int(np.asarray(res.extrapolated).sum()) if res.extrapolated is not None else 0
        if n_bad:
            log.warning("%d frames did not converge (flagged in %s)", n_bad, paths["violation"])
        if n_out:
            log.warning("%d frames leave the muscle surrogate's sampled box (flagged by QC)", n_out)
        return {"outputs": {**paths, "reserves": out_dir / f"{name}_reserves.csv"},
                "extra": {"solver": solver, "frames": len(res.activation), "unconverged_frames": n_bad,
                          "extrapolated_frames": n_out, "timing_s": res.timing_s,
                          "moment_arm_definition": cfg.get("moment_arms", "opensim"),
                          "pennation": cfg.get("pennation", "opensim"),
                          "settings": {k: str(v) for k, v in res.settings.items()},
                          "max_violation": float(np.nanmax(res.constraint_violation))}}
    if solver in ("cmc", "moco_inverse"):
        from biohuman.reference import solve_reference

        coords = read_coordinates(upstream["ik"]["outputs"]["filtered_mot"], model)
        window = (float(coords.index[0]), float(coords.index[-1]))
        return solve_reference(solver, model, upstream["ik"]["outputs"]["filtered_mot"],
                               upstream["grf"]["outputs"]["external_loads"], out_dir, name, window,
                               config.get("reference_solvers", {}))
    if solver != "opensim_so":
        raise ConfigError(f"activation_solver '{solver}' is not available")
    from biohuman.osim.so import run_static_optimization

    res = run_static_optimization(
        model, upstream["ik"]["outputs"]["filtered_mot"], out_dir,
        external_loads_xml=upstream["grf"]["outputs"]["external_loads"],
        setup_out=out_dir / f"{name}_so_setup.xml", activation_exponent=so["activation_exponent"],
        use_muscle_physiology=so["use_muscle_physiology"], lowpass_hz=None, name=name)
    viol = pd.DataFrame({"constraint_violation": res.constraint_violation}, index=res.activation.index)
    viol.to_csv(out_dir / f"{name}_so_violation.csv", index_label="time")
    res.reserve_actuation.to_csv(out_dir / f"{name}_reserves.csv", index_label="time")
    return {"outputs": {"activation_sto": res.activation_sto, "force_sto": res.force_sto,
                        "violation": out_dir / f"{name}_so_violation.csv",
                        "reserves": out_dir / f"{name}_reserves.csv",
                        "setup": out_dir / f"{name}_so_setup.xml"},
            "extra": {"solver": solver, "frames": len(res.activation),
                      "moment_arm_definition": "opensim",
                      "max_violation": float(np.nanmax(res.constraint_violation)) if len(res.constraint_violation) else None}}


def _read_table(path: str | Path) -> pd.DataFrame:
    from biohuman.io.storage import read_storage

    return read_storage(path).table


def _on(times: np.ndarray, table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Columns of a time-indexed table on the given times (linear, held at the ends); missing
    columns are NaN. Returns (T, len(columns))."""
    src = table.index.to_numpy(dtype=float)
    out = np.full((len(times), len(columns)), np.nan)
    for k, c in enumerate(columns):
        if c in table.columns:
            out[:, k] = np.interp(times, src, table[c].to_numpy(dtype=float))
    return out


def id_columns(table: pd.DataFrame) -> dict[str, str]:
    """Map coordinate name -> ID output column (OpenSim appends _moment / _force)."""
    out = {}
    for c in table.columns:
        for suffix in ("_moment", "_force"):
            if c.endswith(suffix):
                out[c[: -len(suffix)]] = c
    return out


def step_trial_dataset(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any],
                       trial: Mapping[str, Any], out_path: str | Path, config_hash: str,
                       render_status: str | Path | None = None) -> dict[str, Any]:
    """Smooth activations (Savitzky-Golay, kept within each muscle's control bounds), run QC and
    write the trial NetCDF in the spec.

    `render_status`: the trial's render record; when it is ok, cameras, frame times, 2D
    projections and the MP4 paths join the trial file (a failed render leaves the labels intact
    and is noted in the `video` attribute)."""
    import xarray as xr

    from biohuman.dynamics.filters import savgol_smooth
    from biohuman.dynamics.grf import GRF_COLUMNS
    from biohuman.dynamics.kinematics import center_of_mass, joint_centers
    from biohuman.io.dataset import save_trial
    from biohuman.io.spec import SPEC_VERSION, attrs_for
    from biohuman.io.trc import read_trc
    from biohuman.provenance import provenance
    from biohuman.qc import QCConfig, run_qc

    model = _scaled_model(upstream)
    info = model_info(model)
    scale = json.loads(Path(upstream["scale"]["outputs"]["summary"]).read_text())
    coords = read_coordinates(upstream["ik"]["outputs"]["filtered_mot"], model)
    t = coords.index.to_numpy(dtype=float)
    rot, trans = list(info.rotational), list(info.translational)

    ds = xr.Dataset(coords={"time": ("time", t, {"units": "s", "long_name": "time", "standard_name": "time"}),
                            "coordinate": rot, "translational_coordinate": trans,
                            "muscle": list(info.muscles), "axis": ["x", "y", "z"], "foot": ["r", "l"]})

    def put(name: str, dims: tuple[str, ...], values: np.ndarray) -> None:
        ds[name] = (dims, values, attrs_for(name))

    put("joint_angle", ("time", "coordinate"), np.degrees(coords[rot].to_numpy()))
    put("translation", ("time", "translational_coordinate"), coords[trans].to_numpy())

    # inverse dynamics
    idt = _read_table(upstream["id"]["outputs"]["sto"])
    cols = id_columns(idt)
    put("joint_moment", ("time", "coordinate"), np.nan_to_num(_on(t, idt, [cols.get(c, "") for c in rot])))
    put("residual_force", ("time", "translational_coordinate"), np.nan_to_num(_on(t, idt, [cols.get(c, "") for c in trans])))

    # markers as IK used them, and IK errors
    mk = read_trc(upstream["ik"]["outputs"]["markers_trc"], max_gap_s=None)
    ds = ds.assign_coords(marker=mk.names)
    xyz = np.stack([np.stack([np.interp(t, mk.time, mk.xyz[:, m, a]) for a in range(3)], axis=1)
                    for m in range(len(mk.names))], axis=1)
    put("marker_position", ("time", "marker", "axis"), xyz)
    err = pd.read_csv(upstream["ik"]["outputs"]["marker_errors"], index_col="time")
    put("marker_error", ("time", "marker"), _on(t, err, mk.names))

    # joint centres
    jc = joint_centers(model, coords)
    names = [j for j in jc if not j.startswith("patella")]
    ds = ds.assign_coords(joint=names)
    put("joint_position", ("time", "joint", "axis"), np.stack([jc[j] for j in names], axis=1))

    # ground forces
    grf = _read_table(upstream["grf"]["outputs"]["grf_mot"])
    g = _on(t, grf, list(GRF_COLUMNS)).reshape(len(t), 2, 9)
    put("ground_force", ("time", "foot", "axis"), g[:, :, 0:3])
    put("center_of_pressure", ("time", "foot", "axis"), g[:, :, 3:6])
    put("ground_torque", ("time", "foot", "axis"), g[:, :, 6:9])
    contact = np.load(upstream["grf"]["outputs"]["contact"])
    c = np.stack([np.interp(t, contact["time"], contact["contact"][:, k].astype(float)) for k in range(2)], axis=1)
    put("foot_contact", ("time", "foot"), (c > 0.5).astype(np.int8))

    # activations: raw solver output on the label time base, then Savitzky-Golay smoothing
    act = _read_table(upstream["activations"]["outputs"]["activation_sto"])
    raw = _on(t, act, list(info.muscles))
    if np.isnan(raw).any():
        missing = [m for m in info.muscles if m not in act.columns]
        raise InputFormatError(f"activation output lacks muscles: {', '.join(missing[:5])}",
                               upstream["activations"]["outputs"]["activation_sto"])
    rate = 1.0 / float(np.median(np.diff(t)))
    sm = config["smoothing"]
    # within each muscle's control bounds (min_control, e.g. 0.01): Savitzky-Golay rings below the
    # floor after sharp transitions, and a label under the bound is an activation no solver gave
    lo, hi = info.activation_bounds()
    smooth = savgol_smooth(raw, rate, sm["window_s"], sm["polyorder"], clip=(lo, hi))
    put("activation_raw", ("time", "muscle"), np.clip(raw, 0.0, 1.0))
    put("activation", ("time", "muscle"), smooth)
    res = pd.read_csv(upstream["activations"]["outputs"]["reserves"], index_col="time")
    put("reserve_actuation", ("time", "coordinate"), _on(t, res, rot))

    # QC
    pelvis_rot = [c for c in rot if c.startswith("pelvis_")]
    viol = pd.read_csv(upstream["activations"]["outputs"]["violation"], index_col="time")
    reserve_coords = [c for c in rot if c in res.columns and c not in pelvis_rot]
    com = center_of_mass(model, coords)
    qc_cfg = QCConfig(**config.get("qc", {}))
    so_viol = viol["constraint_violation"].to_numpy(dtype=float)
    report = run_qc(
        ik_rmse=err["rmse"].to_numpy(), ik_max=err["max"].to_numpy(),
        residual_force=ds["residual_force"].to_numpy(),
        residual_moment=ds["joint_moment"].sel(coordinate=pelvis_rot).to_numpy(),
        reserve=_on(t, res, reserve_coords) if reserve_coords else None,
        joint_moment=ds["joint_moment"].sel(coordinate=reserve_coords).to_numpy() if reserve_coords else None,
        # CMC / MocoInverse solve no static-optimization moment balance: their violation is NaN
        so_violation=so_viol if np.isfinite(so_viol).any() else None,
        body_mass_kg=float(scale["mass_kg"]), com_height_m=float(np.median(com[:, 1])) if trial["motion_type"] != "jump" else float(com[0, 1]),
        config=qc_cfg, external_force=g[:, :, 0:3].sum(axis=1),
        repairs=tuple(upstream["ik"].get("extra", {}).get("repairs", [])),
        extrapolated=viol["extrapolated"].to_numpy(dtype=bool) if "extrapolated" in viol.columns else None,
    )
    checks = list(report.checks.values())
    ds = ds.assign_coords(check=[ch.name for ch in checks])
    ds = ds.assign_coords(qc_units=("check", [ch.units for ch in checks]))
    put("qc_value", ("check",), np.array([ch.value for ch in checks]))
    put("qc_threshold", ("check",), np.array([ch.threshold for ch in checks]))
    put("qc_flag", ("check",), np.array([ch.flag for ch in checks], dtype=np.int8))

    sf = scale["scale_factors"]
    ds = ds.assign_coords(body=list(sf))
    put("scale_factor", ("body", "axis"), np.array([sf[b] for b in sf], dtype=float))

    ds.attrs = {
        "spec_version": SPEC_VERSION,
        "trial_id": f"{trial['subject']}/{trial['trial']}",
        "subject_id": trial["subject"],
        "motion_type": trial["motion_type"],
        "source": trial["source"],
        "model_name": str(config["model"]) if not str(config["model"]).endswith(".osim") else Path(config["model"]).stem,
        "model_path": str(model),
        "subject_mass_kg": float(scale["mass_kg"]),
        "subject_height_m": float(scale["height_m"]),
        **provenance(config_hash, config["activation_solver"]),
        # how the labels were made (docs/dataset_spec.md): solvers and the muscle-geometry definitions
        "ik_solver": str(upstream["ik"].get("extra", {}).get("solver", "opensim")),
        "inverse_dynamics_solver": str(upstream["id"].get("extra", {}).get("solver", "opensim")),
        "moment_arm_definition": str(upstream["activations"].get("extra", {}).get("moment_arm_definition", "")) or "n/a",
        "pennation_model": str(upstream["activations"].get("extra", {}).get("pennation", "")) or "n/a",
        # scale.json of older runs lacks the record: their muscles kept the generic strengths
        "muscle_strength_scaling": str(scale.get("muscle_strength", {}).get("method", "none")),
        "muscle_strength_factor": float(scale.get("muscle_strength", {}).get("factor", 1.0)),
        "qc_status": report.summary,
        "status": "ok",
        "qc_repairs": "; ".join(report.repairs),
        "ground_forces": str(upstream["grf"].get("extra", {}).get("source", "")),
        "filter_cutoff_hz": cutoff_for(config, trial["motion_type"]),
        "savgol_window_s": float(sm["window_s"]),
        "savgol_polyorder": int(sm["polyorder"]),
    }
    out_path = Path(out_path)
    if render_status is not None:
        from biohuman.io.dataset import read_status

        rs = read_status(render_status)
        if rs["status"] in ("ok", "flagged"):
            ds = attach_video(ds, rs, out_path)
            ds.attrs["video"] = "rendered"
        else:
            ds.attrs["video"] = f"none: render {rs['status']}: {rs.get('message', '')}"[:300]
            log.warning("no video for this trial: %s", ds.attrs["video"])
    else:
        ds.attrs["video"] = "none: rendering disabled"
    save_trial(ds, out_path)
    status = "ok" if report.summary == "pass" else "flagged"
    msg = "" if status == "ok" else "QC flagged: " + ", ".join(report.failed)
    log.info("trial %s: %s %s", ds.attrs["trial_id"], status, msg)
    return {"status": status, "message": msg, "outputs": {"netcdf": out_path},
            "extra": {"qc": report.as_dict(), "frames": len(t)}}


def build_manifest(status_paths: list[str | Path], out_csv: str | Path) -> Path:
    """Manifest of every trial from its dataset status record (failed and skipped ones too)."""
    from biohuman.io.dataset import manifest_record, open_trial, read_status, write_manifest

    records = []
    for p in status_paths:
        st = read_status(p)
        subject, trial = str(st["trial_id"]).split("/", 1) if "/" in str(st["trial_id"]) else ("", str(st["trial_id"]))
        nc = st.get("outputs", {}).get("netcdf")
        if st["status"] in ("ok", "flagged") and nc and Path(nc).is_file():
            ds = open_trial(nc, validate=False)
            rec = manifest_record(ds, nc, status=st["status"], message=st.get("message", ""))
            ds.close()
        else:
            rec = {"trial_id": st["trial_id"], "subject_id": subject, "motion_type": st.get("extra", {}).get("motion_type", ""),
                   "source": "", "status": "failed", "path": "", "n_frames": 0, "duration_s": 0.0,
                   "qc_status": "", "message": f"{st['status']}: {st.get('message', '')}"}
        records.append(rec)
    return write_manifest(records, out_csv)


def write_subject_sheet(path: str | Path, subject: str, mass_kg: float, height_m: float, source: str) -> Path:
    """Write a subject sheet (the measurements labelling may use: mass and height)."""
    from biohuman.io.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump({"subject_id": subject, "mass_kg": float(mass_kg),
                                            "height_m": float(height_m), "source": source}, sort_keys=False))
    return Path(path)


# ------------------------------------------------------------------------------------------
# Video
# ------------------------------------------------------------------------------------------


def anny_cache_dir(config: Mapping[str, Any]) -> Path:
    """Where the Anny body-model cache lives: config, else $ANNY_CACHE_DIR, else {results}/cache/anny."""
    import os

    explicit = config.get("render", {}).get("anny_cache_dir")
    if explicit:
        return Path(explicit)
    if os.environ.get("ANNY_CACHE_DIR"):
        return Path(os.environ["ANNY_CACHE_DIR"])
    return Path(config["results"]) / "cache" / "anny"


def render_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The biohuman.render settings of a workflow config (without the workflow's own keys)."""
    cfg = {k: v for k, v in config.get("render", {}).items() if k != "enabled"}
    cfg["anny_cache_dir"] = str(anny_cache_dir(config))
    return cfg


def trial_seed(config: Mapping[str, Any], subject: str, trial: str) -> int:
    """A per-trial seed derived from the master seed (same config -> same cameras and scenes)."""
    import zlib

    return int(zlib.crc32(f"{config['seed']}/{subject}/{trial}".encode()))


def step_render(*, upstream: Mapping, log: logging.Logger, config: Mapping[str, Any], trial: Mapping[str, Any],
                out_dir: str | Path) -> dict[str, Any]:
    """Render the trial's (filtered IK) motion on the subject's body from the configured cameras."""
    from biohuman.render import render_trial

    model = _scaled_model(upstream)
    scale = json.loads(Path(upstream["scale"]["outputs"]["summary"]).read_text())
    coords = read_coordinates(upstream["ik"]["outputs"]["filtered_mot"], model)
    res = render_trial(model, coords, out_dir, config=render_settings(config),
                       seed=trial_seed(config, trial["subject"], trial["trial"]), trial_id=trial["trial"],
                       height_m=float(scale["height_m"]), mass_kg=float(scale["mass_kg"]))
    log.info("rendered %d frames x %d cameras in %.1f s (%s)", res.n_frames, len(res.videos), res.seconds,
             res.gl_renderer)
    return {"outputs": {"labels": res.labels, **{f"video_{k}": v for k, v in res.videos.items()}},
            "extra": {"frames": res.n_frames, "fps": res.fps, "seconds": res.seconds,
                      "silhouette_hit_rate": res.silhouette_hit_rate, "gl_renderer": res.gl_renderer}}


# render variables that go into the trial NetCDF (the bulky part masks stay in the render file);
# the render file's joint/marker dims are renamed so they do not clash with the label dims
VIDEO_VARIABLES = ("video_time", "camera_intrinsics", "camera_extrinsics", "joint_projection", "joint_depth",
                   "joint_visibility", "marker_projection", "marker_depth", "marker_visibility")
VIDEO_DIM_RENAMES = {"joint": "projected_joint", "marker": "projected_marker"}


def attach_video(ds, render_status: Mapping[str, Any], nc_path: Path):  # noqa: ANN001, ANN201 - xarray
    """Add cameras, frame times and 2D projections of a render to a trial Dataset, with the MP4
    files and the render file (masks) referenced by paths relative to the trial file."""
    import os

    import xarray as xr

    out = render_status["outputs"]
    with xr.open_dataset(out["labels"]) as r:
        r = r.load()
    keep = [v for v in VIDEO_VARIABLES if v in r]
    sub = r[keep].rename({k: v for k, v in VIDEO_DIM_RENAMES.items() if k in r.dims})
    sub = sub.drop_vars([c for c in sub.coords if c not in sub.dims and c not in ("camera",)], errors="ignore")
    ds = xr.merge([ds, sub], combine_attrs="override")
    rel = lambda p: os.path.relpath(Path(p).resolve(), nc_path.parent.resolve())  # noqa: E731
    cams = [str(c) for c in r["camera"].values]
    ds["video_file"] = ("camera", [rel(out[f"video_{c}"]) for c in cams],
                        {"long_name": "MP4 of each camera, relative to this file", "units": "1"})
    ds.attrs["render_file"] = rel(out["labels"])
    ds.attrs["video_fps"] = float(r.attrs.get("fps", render_status.get("extra", {}).get("fps", 0.0)))
    return ds
