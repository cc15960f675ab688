"""Validation of the batched activation solver on a second model: OpenSim's Static Optimization
tutorial on gait2392 (92 Thelen2003Muscle, 23 dofs, no patella, unlocked subtalar and mtp,
pelvis residuals as Point/TorqueActuators from the setup's own force set file).

Solver-only comparison: our nimble inverse dynamics + muscle-geometry surrogate + batched SO are
given exactly OpenSim's inputs (files relative to the external data folder, CATALOG.md §2):
`opensim-models/Tutorials/Estimating_Joint_Reaction_Loads/` model
`subject01_simbody_adjusted_StaticOp.osim`, RRA coordinates `subject01_walk1_Kinematics.sto`
(1 kHz, no low-pass, as the setup), ground forces `subject01_walk1_grf.mot` through
`foot_floor_loads.xml`, actuators `gait2392_SO_weak_Residual_Actuators.xml` (FX, FY, FZ at a
pelvis point, MX, MY, MZ on the pelvis, controls +-1000, no other reserves), activation exponent 2,
use_muscle_physiology true (rigid-tendon capacity from the muscles' own Thelen relations), and
compared with OpenSim's reference `OutputReference/ResultsStaticOptimization/
subject01_StaticOptimization_activation.sto` (0.5-1.999 s, every 10th coordinate row).
Accelerations: "speed_spline" (what OpenSim's AnalyzeTool uses for SO's targets).

Outputs (into `out`): `gait2392_activation.sto` (ours), `gait2392_summary.json`,
`gait2392_activations.png` (ours vs OpenSim for a few muscles), `gait2392_muscle_r.png`
(per-muscle Pearson r).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import InputFormatError

TUTORIAL = Path("opensim-models/Tutorials/Estimating_Joint_Reaction_Loads")
FILES: dict[str, Path] = {
    "model": TUTORIAL / "subject01_simbody_adjusted_StaticOp.osim",
    "coordinates": TUTORIAL / "subject01_walk1_Kinematics.sto",
    "grf_mot": TUTORIAL / "subject01_walk1_grf.mot",
    "grf_xml": TUTORIAL / "foot_floor_loads.xml",
    "actuators": TUTORIAL / "gait2392_SO_weak_Residual_Actuators.xml",
    "setup": TUTORIAL / "setup_static_optimization.xml",
    "reference": TUTORIAL / "OutputReference/ResultsStaticOptimization/subject01_StaticOptimization_activation.sto",
}
PLOT_MUSCLES = ("glut_med2_r", "semimem_r", "rect_fem_r", "vas_int_r", "med_gas_r", "soleus_r", "tib_ant_r",
                "bifemsh_r")
VARYING_STD = 0.005
"""Muscles whose reference activation has a standard deviation above this enter the r statistics."""


def check_files(external: Path) -> dict[str, Path]:
    """Absolute paths of the tutorial's files; InputFormatError naming the first missing one."""
    paths = {k: Path(external) / v for k, v in FILES.items()}
    for p in paths.values():
        if not p.is_file():
            raise InputFormatError("gait2392 validation input missing (see the external CATALOG.md §2)", p)
    return paths


def activation_metrics(ours: pd.DataFrame, ref: pd.DataFrame, varying_std: float = VARYING_STD) -> dict:
    """Agreement of two activation tables (same rows and muscles): RMSE and max |error| over all
    muscles and frames, per-muscle Pearson r over muscles whose reference std > varying_std
    (median, worst and the worst muscle's name)."""
    a, b = ours.to_numpy(dtype=float), ref[list(ours.columns)].to_numpy(dtype=float)
    err = a - b
    varying = [i for i in range(a.shape[1]) if b[:, i].std() > varying_std]
    r = {str(ours.columns[i]): float(np.corrcoef(a[:, i], b[:, i])[0, 1]) for i in varying}
    worst = min(r, key=r.get) if r else None
    k = int(np.unravel_index(np.argmax(np.abs(err)), err.shape)[1])
    return {"rmse": float(np.sqrt(np.mean(err**2))), "max_abs_error": float(np.abs(err).max()),
            "max_error_muscle": str(ours.columns[k]), "r_median": float(np.median(list(r.values()))) if r else None,
            "r_min": r[worst] if r else None, "r_min_muscle": worst, "n_varying": len(r), "n_muscles": a.shape[1],
            "n_frames": a.shape[0], "r": r}


def _plots(ours: pd.DataFrame, ref: pd.DataFrame, metrics: dict, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from biohuman.io.atomic import atomic_path

    paths = {"activations_png": out / "gait2392_activations.png", "muscle_r_png": out / "gait2392_muscle_r.png"}
    names = [m for m in PLOT_MUSCLES if m in ours.columns]
    fig, axes = plt.subplots(2, (len(names) + 1) // 2, figsize=(3.2 * ((len(names) + 1) // 2), 5.5), sharex=True)
    for ax, m in zip(np.ravel(axes), names):
        ax.plot(ref.index, ref[m], "k-", lw=1.5, label="OpenSim SO")
        ax.plot(ours.index, ours[m], "r--", lw=1.2, label="biohuman batched SO")
        r = metrics["r"].get(m)
        ax.set_title(f"{m}" + (f" (r={r:.4f})" if r is not None else ""), fontsize=9)
        ax.set_ylim(0, max(0.05, float(max(ref[m].max(), ours[m].max())) * 1.1))
    np.ravel(axes)[0].legend(fontsize=7)
    for ax in np.ravel(axes)[len(names):]:
        ax.axis("off")
    fig.supxlabel("time (s)")
    fig.supylabel("activation")
    fig.suptitle(f"gait2392 walking, Static Optimization: RMSE {metrics['rmse']:.4f}, "
                 f"median r {metrics['r_median']:.5f}", fontsize=10)
    fig.tight_layout()
    with atomic_path(paths["activations_png"]) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    r = pd.Series(metrics["r"]).sort_values()
    gap = np.clip(1.0 - r.to_numpy(), 1e-8, None)  # 1 - r on a log axis: r ~ 1 stays readable
    fig, ax = plt.subplots(figsize=(max(8, 0.14 * len(r)), 3.8))
    ax.bar(range(len(r)), gap, color=np.where(r.to_numpy() >= 0.9, "tab:blue", "tab:red"))
    ax.set_yscale("log")
    ax.set_xticks(range(len(r)))
    ax.set_xticklabels(r.index, rotation=90, fontsize=5)
    ax.axhline(0.1, color="k", lw=0.8, ls="--", label="r = 0.9 (acceptance, on the median)")
    ax.set_ylabel("1 - Pearson r vs OpenSim")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"per-muscle agreement ({len(r)} muscles with reference std > {VARYING_STD}): "
                 f"median r {metrics['r_median']:.5f}, worst {metrics['r_min']:.4f} ({metrics['r_min_muscle']})",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(paths["muscle_r_png"]) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return paths


def validate_gait2392(external: Path, out: Path, *, time_range: Sequence[float] | None = None,
                      n_samples: int | None = None, plots: bool = True) -> dict:
    """Run our activation solver on OpenSim's gait2392 Static Optimization tutorial and compare
    with OpenSim's reference activations (see the module docstring).

    external: the external reference data folder; out: output folder (the model is copied to
    `out/model/` so that the muscle-surrogate cache lands there). time_range: (s, s) subset of
    the reference frames (default all, 0.5-1.999 s). n_samples: surrogate fit poses (default
    the fit's own). Returns a JSON-able dict: activation metrics (rmse, max_abs_error, r_median,
    r_min, per-muscle r), residual-actuator agreement, convergence, timings (s, measured on
    this machine), settings and output paths.
    """
    import torch

    from biohuman.dynamics.batched_so import batched_static_optimization
    from biohuman.dynamics.grf import load_measured_grf
    from biohuman.dynamics.muscles import coordinate_ranges, fit_muscle_surrogate
    from biohuman.dynamics.nimble_id import inverse_dynamics
    from biohuman.io.atomic import atomic_write_text
    from biohuman.io.storage import write_storage
    from biohuman.osim._tools import load_osim, read_coordinates, read_storage
    from biohuman.osim.cmc import absolute_external_loads

    files = check_files(Path(external))
    out = Path(out)
    (out / "model").mkdir(parents=True, exist_ok=True)
    model = out / "model" / files["model"].name
    if not model.is_file() or model.read_bytes() != files["model"].read_bytes():
        model.write_bytes(files["model"].read_bytes())
    xml = absolute_external_loads(files["grf_xml"], out / "model" / "foot_floor_loads.xml")
    q = read_coordinates(files["coordinates"], load_osim(model))
    grf = load_measured_grf(files["grf_mot"], xml, contact_threshold_n=-np.inf)
    ref, _ = read_storage(files["reference"])
    ref.index = ref.index.astype(float)
    if time_range is not None:
        ref = ref.loc[(ref.index >= time_range[0] - 1e-9) & (ref.index <= time_range[1] + 1e-9)]
    if ref.empty:
        raise InputFormatError(f"no reference frames in time range {time_range}", files["reference"])

    timing: dict[str, float] = {}
    tic = time.perf_counter()
    sur = fit_muscle_surrogate(model, coordinate_ranges(q), n_samples=n_samples)
    timing["surrogate_fit_or_cache"] = time.perf_counter() - tic
    torch.set_num_threads(1)
    tic = time.perf_counter()
    tau = inverse_dynamics(model, q, grf, qdd_method="speed_spline")
    timing["inverse_dynamics"] = time.perf_counter() - tic
    rows = np.abs(tau.index.to_numpy()[:, None] - ref.index.to_numpy()[None, :]).argmin(axis=0)
    if np.abs(tau.index.to_numpy()[rows] - ref.index.to_numpy()).max() > 1e-6:
        raise InputFormatError("reference times are not rows of the coordinates file", files["reference"])
    tic = time.perf_counter()
    res = batched_static_optimization(model, q, tau.iloc[rows], surrogate=sur, reserves=None,
                                      force_set_files=[files["actuators"]], activation_exponent=2.0,
                                      pennation="opensim", moment_arms="opensim")
    timing["static_optimization_with_actuator_geometry"] = time.perf_counter() - tic
    timing.update({f"so_{k}": float(v) for k, v in res.timing_s.items()})
    ours = res.activation.copy()
    ours.index = ref.index
    metrics = activation_metrics(ours, ref)
    residuals = {}
    for name in res.actuator_controls.columns:
        if name in ref.columns:
            a, b = res.actuator_controls[name].to_numpy(), ref[name].to_numpy(dtype=float)
            residuals[name] = {"rmse": float(np.sqrt(np.mean((a - b) ** 2))), "ref_peak": float(np.abs(b).max()),
                               "r": float(np.corrcoef(a, b)[0, 1])}
    paths = {"activation_sto": out / "gait2392_activation.sto", "summary_json": out / "gait2392_summary.json"}
    write_storage(paths["activation_sto"], pd.concat([ours, res.actuator_controls.set_axis(ref.index)], axis=1),
                  in_degrees=False, name="gait2392_batched_so_activation")
    if plots:
        paths |= _plots(ours, ref, metrics, out)
    summary = {
        "case": "gait2392 subject01 walk, OpenSim Static Optimization tutorial (Estimating_Joint_Reaction_Loads)",
        "time_range": [float(ref.index[0]), float(ref.index[-1])],
        "activation": metrics,
        "residual_actuators": residuals,
        "converged_frames": int(res.converged.sum()), "frames": len(res.converged),
        "constraint_violation_max": float(np.max(res.constraint_violation)),
        "frames_outside_surrogate_box": int(np.sum(res.extrapolated)) if res.extrapolated is not None else None,
        "surrogate_heldout": sur.metadata.get("summary_mm"),
        "timing_s": timing,
        "settings": {k: v for k, v in res.settings.items() if k != "surrogate"},
        "inputs": {k: str(v) for k, v in files.items()},
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    atomic_write_text(paths["summary_json"], json.dumps(summary, indent=1, default=str))
    return summary


__all__ = ["FILES", "activation_metrics", "check_files", "validate_gait2392"]
