"""Benchmark: OpenSim InverseKinematicsTool vs biohuman's nimble IK on the same frames, one run.

Trials: OpenSim's Rajagopal running (`subject01_registered.osim` + `subject01_run.trc` with the
weights of `Setup_IK.xml`), OpenSim's example3DWalking (`subject_walk_scaled.osim` +
`markers_walk.trc` with the weights of `ik_tasks_walk.xml`), both from the external reference
data, and every workflow trial under --results (results/scale/{subject}/model.osim +
results/ik/{subject}/{trial}_markers.trc, default weights). Per trial both solvers fit the same
--frames frames from --start (trial start if omitted), same model, same marker weights.

Timing, one thread each (OMP/MKL/OpenBLAS threads set to 1 before numpy loads; OpenSim IK is
single-threaded): OpenSim = wall time of the whole `run_ik` call / frames (model load, setup and
output writing included); nimble = wall time of the whole `nimble_ik` call / frames with the
parsed model cached (second call), its solve loop alone, and its steady state (solve of the
frames after the first, whose restarts from the default pose cost more). The one-off nimble
model parse (`NimbleModel.load`, once per process) is reported separately.
Accuracy: coordinate RMSE nimble vs OpenSim (deg) over lower limb + pelvis rotations and over all
unlocked independent rotational coordinates, max |difference|, pelvis translation max |diff| (mm);
marker RMSE (mean over frames, mm) of each. With --tight, OpenSim is run again at accuracy 1e-8
to show how much of the difference is OpenSim stopping early at its default accuracy.

The last line printed is exactly:
speedup=<x> rmse_lower_deg=<y> rmse_all_deg=<z> marker_rmse_mm_nimble=<a> marker_rmse_mm_opensim=<b>
(pooled over trials: speedup = OpenSim ms/frame / nimble ms/frame (whole calls), RMSEs over all
frames of all trials).

Usage: python benchmarks/bench_ik.py [--results results] [--frames 100] [--start S] [--tight]
       [--external DIR] [--no-external]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN = Path("opensim-models_391677a/Pipelines/Rajagopal")
WALK = Path("opensim-core/OpenSim/Examples/Moco/example3DWalking")
LOWER = [f"{c}_{s}" for s in ("r", "l") for c in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle",
                                                  "ankle_angle")] + ["pelvis_tilt", "pelvis_list", "pelvis_rotation"]
TRANS = ["pelvis_tx", "pelvis_ty", "pelvis_tz"]


def setup_weights(xml: Path) -> dict[str, float]:
    """Marker weights of an IK setup / task-set XML (tasks with apply=false get weight 0)."""
    root = ET.parse(xml).getroot()
    out = {}
    for t in root.iter("IKMarkerTask"):
        applied = (t.findtext("apply") or "true").strip().lower() == "true"
        out[t.get("name")] = float(t.findtext("weight") or 1.0) if applied else 0.0
    return out


def trials(external: Path | None, results: Path | None, start: float | None) -> list[dict]:
    """Trial descriptions: name, model, trc, marker weights (None = defaults), start time."""
    from biohuman.osim.model import model_info

    out = []
    if external is not None:
        d = external / RUN
        if d.is_dir():
            out.append({"name": "rajagopal_run", "model": d / "outputReference" / "subject01_registered.osim",
                        "trc": d / "subject01_run.trc", "weights": setup_weights(d / "Setup_IK.xml"),
                        "start": 1.0 if start is None else start})
        else:
            print(f"rajagopal_run skipped: {d} not found")
        d = external / WALK
        if d.is_dir():
            model = d / "subject_walk_scaled.osim"
            known = set(model_info(model).markers)
            w = {k: v for k, v in setup_weights(d / "ik_tasks_walk.xml").items() if k in known}
            out.append({"name": "example3DWalking", "model": model, "trc": d / "markers_walk.trc", "weights": w,
                        "start": 0.5 if start is None else start})
        else:
            print(f"example3DWalking skipped: {d} not found")
    if results is not None:
        for trc in sorted((results / "ik").glob("*/*_markers.trc")):
            subject, trial = trc.parent.name, trc.name[: -len("_markers.trc")]
            model = results / "scale" / subject / "model.osim"
            if not model.is_file():
                print(f"{subject}/{trial} skipped: {model} missing")
                continue
            out.append({"name": f"{subject}/{trial}", "model": model, "trc": trc, "weights": None, "start": start})
    return out


def run_trial(tr: dict, frames: int, work: Path, tight: bool) -> dict:
    """OpenSim IK and nimble IK on the same frames of one trial: timings and coordinates."""
    from biohuman.dynamics.nimble_id import NimbleModel
    from biohuman.dynamics.nimble_ik import nimble_ik
    from biohuman.io.trc import read_trc
    from biohuman.osim.ik import run_ik
    from biohuman.osim.model import model_info

    markers = read_trc(tr["trc"], max_gap_s=None)
    t = markers.time
    k0 = 0 if tr["start"] is None else int(np.searchsorted(t, tr["start"] - 1e-9))
    k1 = min(len(t) - 1, k0 + frames - 1)
    window = (float(t[k0]), float(t[k1]))
    out = work / tr["name"].replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)

    tic = time.perf_counter()
    NimbleModel.load(tr["model"])
    t_parse = time.perf_counter() - tic

    tic = time.perf_counter()
    ref = run_ik(tr["model"], tr["trc"], out / "opensim.mot", time_range=window, marker_weights=tr["weights"],
                 report_errors=False)
    t_osim = time.perf_counter() - tic
    tight_q = None
    if tight:
        tight_q = run_ik(tr["model"], tr["trc"], out / "opensim_tight.mot", time_range=window,
                         marker_weights=tr["weights"], accuracy=1e-8, report_errors=False).coordinates

    nimble_ik(tr["model"], markers, out / "nimble_warmup.mot", time_range=window, marker_weights=tr["weights"])
    tic = time.perf_counter()
    res = nimble_ik(tr["model"], markers, out / "nimble.mot", time_range=window, marker_weights=tr["weights"])
    t_nimble = time.perf_counter() - tic
    rec = json.loads(res.setup.read_text())
    info = model_info(tr["model"])
    indep = [c for c in info.rotational if c not in info.locked and c not in info.coupled and c not in TRANS]
    return {"name": tr["name"], "frames": len(res.coordinates), "window": window, "t_osim": t_osim,
            "t_nimble": t_nimble, "t_solve": rec["solve_s"], "t_steady": rec.get("steady_solve_s"),
            "t_parse": t_parse, "iterations": rec["iterations"], "not_converged": rec["frames_not_converged"],
            "q_nimble": res.coordinates, "q_osim": ref.coordinates, "q_tight": tight_q,
            "rmse_nimble": res.marker_rmse, "rmse_osim": ref.marker_rmse, "weights_equal": res.weights == ref.weights,
            "lower": [c for c in LOWER if c in indep], "all": indep}


def _rmse_deg(a, b, cols):  # noqa: ANN001, ANN202
    d = np.degrees(a[cols].to_numpy() - b[cols].to_numpy())
    return d, np.sqrt(np.mean(d**2, axis=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=None, help="workflow results root (its ik/ and scale/ trials)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--start", type=float, default=None, help="start time (s); default per trial")
    ap.add_argument("--external", type=Path, default=ROOT.parent / "shared" / "data" / "external")
    ap.add_argument("--no-external", action="store_true")
    ap.add_argument("--tight", action="store_true", help="also run OpenSim at accuracy 1e-8")
    args = ap.parse_args()
    external = None if args.no_external or not args.external.is_dir() else args.external
    trs = trials(external, args.results, args.start)
    if not trs:
        sys.exit("no trial found (give --results or the external data folder)")
    print(f"one thread: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; {os.cpu_count()} CPUs visible "
          f"(timings on a shared machine vary with its load)")
    pooled = {"osim_frames_s": 0.0, "nimble_frames_s": 0.0, "frames": 0, "lower": [], "all": [], "mk_n": [],
              "mk_o": []}
    with tempfile.TemporaryDirectory(prefix="bench_ik_") as tmp:
        for tr in trs:
            r = run_trial(tr, args.frames, Path(tmp), args.tight)
            n = r["frames"]
            qn, qo = r["q_nimble"], r["q_osim"]
            dl, rl = _rmse_deg(qn, qo, r["lower"])
            da, ra = _rmse_deg(qn, qo, r["all"])
            dt = 1000 * np.abs(qn[TRANS].to_numpy() - qo[TRANS].to_numpy()).max()
            ms_o, ms_n = 1000 * r["t_osim"] / n, 1000 * r["t_nimble"] / n
            steady = f"{1000 * r['t_steady'] / max(n - 1, 1):.2f}" if r["t_steady"] is not None else "n/a"
            print(f"\n== {r['name']}: {n} frames {r['window'][0]:.3f}-{r['window'][1]:.3f} s "
                  f"(same weights: {r['weights_equal']})")
            print(f"  OpenSim IK (accuracy 1e-6): {ms_o:.1f} ms/frame (whole run_ik call)")
            print(f"  nimble IK: {ms_n:.2f} ms/frame whole call; solve {1000 * r['t_solve'] / n:.2f} ms/frame; "
                  f"steady state {steady} ms/frame; model parse once {r['t_parse']:.2f} s")
            print(f"  speedup {ms_o / ms_n:.1f}x; iterations first frame {r['iterations']['first_frame']}, "
                  f"then mean {r['iterations']['mean']:.2f} max {r['iterations']['max']}; "
                  f"frames not converged {r['not_converged']}")
            print(f"  coordinate RMSE nimble vs OpenSim: lower limb + pelvis max {rl.max():.3f} deg "
                  f"({r['lower'][int(np.argmax(rl))]}), all {ra.max():.3f} deg ({r['all'][int(np.argmax(ra))]}); "
                  f"pooled RMSE lower {np.sqrt(np.mean(dl**2)):.3f} deg, all {np.sqrt(np.mean(da**2)):.3f} deg; "
                  f"max |diff| lower {np.abs(dl).max():.3f} deg, all {np.abs(da).max():.3f} deg; "
                  f"pelvis translation max |diff| {dt:.3f} mm")
            print(f"  marker RMSE mean: nimble {1000 * np.nanmean(r['rmse_nimble']):.3f} mm, "
                  f"OpenSim {1000 * np.nanmean(r['rmse_osim']):.3f} mm; "
                  f"max: nimble {1000 * np.nanmax(r['rmse_nimble']):.3f}, "
                  f"OpenSim {1000 * np.nanmax(r['rmse_osim']):.3f}")
            if r["q_tight"] is not None:
                _, rt = _rmse_deg(qn, r["q_tight"], r["all"])
                _, rot = _rmse_deg(qo, r["q_tight"], r["all"])
                print(f"  vs OpenSim at accuracy 1e-8: nimble RMSE max {rt.max():.3f} deg "
                      f"({r['all'][int(np.argmax(rt))]}); OpenSim 1e-6 RMSE max {rot.max():.3f} deg "
                      f"({r['all'][int(np.argmax(rot))]})")
            pooled["osim_frames_s"] += r["t_osim"]
            pooled["nimble_frames_s"] += r["t_nimble"]
            pooled["frames"] += n
            pooled["lower"].append(dl.ravel())
            pooled["all"].append(da.ravel())
            pooled["mk_n"].append(r["rmse_nimble"])
            pooled["mk_o"].append(r["rmse_osim"])
    speedup = pooled["osim_frames_s"] / pooled["nimble_frames_s"]
    lower = float(np.sqrt(np.mean(np.concatenate(pooled["lower"]) ** 2)))
    allc = float(np.sqrt(np.mean(np.concatenate(pooled["all"]) ** 2)))
    mk_n = 1000 * float(np.nanmean(np.concatenate(pooled["mk_n"])))
    mk_o = 1000 * float(np.nanmean(np.concatenate(pooled["mk_o"])))
    print(f"\npooled over {len(trs)} trials, {pooled['frames']} frames: OpenSim "
          f"{1000 * pooled['osim_frames_s'] / pooled['frames']:.1f} ms/frame, nimble "
          f"{1000 * pooled['nimble_frames_s'] / pooled['frames']:.2f} ms/frame")
    print(f"speedup={speedup:.1f} rmse_lower_deg={lower:.3f} rmse_all_deg={allc:.3f} "
          f"marker_rmse_mm_nimble={mk_n:.3f} marker_rmse_mm_opensim={mk_o:.3f}")


if __name__ == "__main__":
    main()
