"""`biohuman validate`: run every validation part, merge their figures into `validation.json`
and draw the Rajagopal-walking plots.

Parts (each a function `(external: Path, out: Path) -> dict`): `rajagopal` (this package's
`rajagopal.validate_rajagopal`), `gait2392` (`biohuman.validation.gait2392.validate_gait2392`) and
`c3d` (`biohuman.validation.c3d.validate_c3d`). A part whose module is not installed is recorded
as skipped with the reason; a part that raises a BiohumanError is recorded as failed with the
message; the others still run.
"""

from __future__ import annotations

import importlib
import json
import math
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from biohuman.errors import BiohumanError
from biohuman.io.atomic import atomic_write_text

PARTS: dict[str, tuple[str, str]] = {
    "rajagopal": ("biohuman.validation.rajagopal", "validate_rajagopal"),
    "gait2392": ("biohuman.validation.gait2392", "validate_gait2392"),
    "c3d": ("biohuman.validation.c3d", "validate_c3d"),
}
"""Part name -> (module, function) of each validation part."""


def to_json(obj: object) -> object:
    """JSON-ready copy: numpy scalars/arrays to Python, NaN/inf to None, keys starting with "_"
    (series kept for plots) dropped."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _part_function(module: str, name: str) -> tuple[Callable | None, str | None]:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None, f"module {module} is not available"
        raise
    fn = getattr(mod, name, None)
    return (fn, None) if fn is not None else (None, f"{module} has no function {name}")


def run_validation(external: str | Path, out: str | Path, *, parts: Sequence[str] | None = None,
                   plots: bool = True) -> dict:
    """Run the validation parts, write `out/validation.json` (atomic) and the plots; return the
    merged dict: {part: figures | {"status": "skipped"|"failed", "reason"}}.

    external: the reference data folder (../shared/data/external). parts: subset of PARTS
    (default all). Raises BiohumanError when the folder does not exist.
    """
    external, out = Path(external), Path(out)
    if not external.is_dir():
        raise BiohumanError("external reference data folder does not exist", external)
    out.mkdir(parents=True, exist_ok=True)
    merged: dict = {"external": str(external.resolve())}
    for part in parts or list(PARTS):
        if part not in PARTS:
            raise BiohumanError(f"unknown validation part {part!r}; parts are {sorted(PARTS)}")
        fn, why = _part_function(*PARTS[part])
        if fn is None:
            merged[part] = {"status": "skipped", "reason": why}
            continue
        try:
            res = fn(external, out / part)
        except BiohumanError as exc:
            merged[part] = {"status": "failed", "reason": str(exc), "traceback": traceback.format_exc(limit=3)}
            continue
        if part == "rajagopal" and plots:
            res["plots"] = [str(p) for p in plot_rajagopal(res, out / part / "plots")]
        merged[part] = res
    atomic_write_text(out / "validation.json", json.dumps(to_json(merged), indent=1))
    return merged


# --------------------------------------------------------------------------------------------
# plots


def plot_rajagopal(result: dict, out_dir: str | Path) -> list[Path]:
    """PNG figures of `validate_rajagopal`'s series: IK and ID traces vs reference, ground forces,
    activations vs MocoInverse, EMG on/off bars. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["_series"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    coords = ("hip_flexion_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "knee_angle_l", "ankle_angle_l")

    for kind, ref, so, wc, unit, scale in (("ik", s["q_ref"], s["q_so"], s["q_wc"], "deg", 180 / math.pi),
                                           ("id", s["id_ref"], s["id_so"], s["id_wc"], "N m", 1.0)):
        fig, axes = plt.subplots(2, 3, figsize=(13, 6), sharex=True)
        for ax, c in zip(axes.ravel(), coords):
            ax.plot(ref.index, scale * ref[c], "k", lw=2, label="reference")
            ax.plot(so.index, scale * so[c], "C0", label="solver-only")
            ax.plot(wc.index, scale * wc[c], "C1", label="whole-chain")
            ax.set_title(c, fontsize=9)
            ax.set_xlim(0.45, 1.8)
        axes[0, 0].set_ylabel(unit)
        axes[1, 0].set_ylabel(unit)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle("Rajagopal walking: " + ("inverse kinematics" if kind == "ik" else "inverse dynamics"))
        paths.append(_save(fig, out_dir / f"{kind}.png"))

    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for i, side in enumerate(("r", "l")):
        ax = axes[i]
        g = s["grf_meas"]
        ax.plot(g.time, g.force[:, i, 1], "k", lw=2, label="force plates")
        ax.plot(s["grf_so"].time, s["grf_so"].force[:, i, 1], "C0", label="estimated, reference kinematics")
        ax.plot(s["grf_wc"].time, s["grf_wc"].force[:, i, 1], "C1", label="estimated, our IK")
        ax.set_ylabel(f"vertical GRF {side} (N)")
        ax.set_xlim(0.45, 1.8)
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("time (s)")
    paths.append(_save(fig, out_dir / "grf.png"))

    ref = s["act_ref"]
    muscles = list(ref.columns)
    n = len(muscles)
    fig, axes = plt.subplots(int(math.ceil(n / 6)), 6, figsize=(16, 2.2 * math.ceil(n / 6)), sharex=True)
    for ax, m in zip(axes.ravel(), muscles):
        ax.plot(ref.index, ref[m], "k", lw=2)
        ax.plot(s["act_so"].index, s["act_so"][m], "C0")
        if m in s["act_wc"].columns:
            ax.plot(s["act_wc"].index, s["act_wc"][m], "C1")
        ax.set_title(m, fontsize=8)
        ax.set_ylim(0, 1)
    fig.suptitle("activations: MocoInverse reference (black), solver-only (blue), whole-chain (orange)")
    paths.append(_save(fig, out_dir / "activation.png"))

    emg = result["emg"]
    variants = [("reference_moco_inverse", "MocoInverse"), ("solver_only_18musc", "ours, solver-only"),
                ("whole_chain_same_muscles", "ours, whole-chain")]
    chans = list(emg["reference_moco_inverse"]["channels"])
    fig, axes = plt.subplots(len(chans), 1, figsize=(10, 0.9 * len(chans) + 1), sharex=True)
    for ax, ch in zip(np.atleast_1d(axes), chans):
        rows = [("EMG", emg["reference_moco_inverse"]["_states"][ch]["emg_on"])]
        rows += [(label, emg[key]["_states"][ch]["activation_on"]) for key, label in variants]
        t = np.asarray(emg["reference_moco_inverse"]["_states"][ch]["time"])
        dt = float(np.median(np.diff(t)))
        for k, (label, on) in enumerate(rows):
            on = np.asarray(on, dtype=bool)
            ax.broken_barh([(float(tt), dt) for tt in t[on]], (k - 0.4, 0.8), color="k" if k == 0 else f"C{k - 1}")
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=6)
        ax.set_ylabel(ch, fontsize=7, rotation=0, ha="right")
    np.atleast_1d(axes)[-1].set_xlabel("time (s)")
    fig.suptitle(f"on/off (threshold {emg['method']['threshold']}, EMG delayed {emg['method']['delay_s']} s)")
    paths.append(_save(fig, out_dir / "emg_onoff.png"))
    return paths


def _save(fig, path: Path) -> Path:  # noqa: ANN001
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path





def summary_lines(merged: dict) -> list[str]:
    """Short human-readable summary of `run_validation`'s result (acceptance lines per part)."""
    lines = []
    for part, res in merged.items():
        if not isinstance(res, dict):
            continue
        if res.get("status") in ("skipped", "failed"):
            lines.append(f"{part}: {res['status']} ({res['reason'].splitlines()[0]})")
            continue
        acc = res.get("acceptance")
        if not isinstance(acc, dict):
            lines.append(f"{part}: done")
            continue
        for variant, figures in acc.items():
            if isinstance(figures, dict):
                shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
                lines.append(f"{part} {variant}: {shown}")
            else:
                lines.append(f"{part} {variant}: {figures}")
    return lines
__all__ = ["PARTS", "plot_rajagopal", "run_validation", "summary_lines", "to_json"]
