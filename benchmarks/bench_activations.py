"""Benchmark: OpenSim Static Optimization vs biohuman's batched SO on the same frames, one run.

Trials: OpenSim's example3DWalking (Rajagopal walking, `subject_walk_scaled.osim` +
`coordinates.sto` + `grf_walk.xml` from the external reference data) and every workflow trial
under --results (results/scale/{subject}/model.osim, results/ik/{subject}/{trial}_filtered.mot,
results/grf/{subject}/{trial}_grf.mot + _external_loads.xml, and the subject's muscle surrogate
results/surrogate/{subject}/ when the workflow fitted one). Per trial, OpenSim SO solves
--frames rows starting at --start (trial start if omitted; lowpass off, auto reserves); the
batched solver solves the same rows from the same prepared coordinates file OpenSim read, with
nimble inverse dynamics (OpenSim SO's target accelerations: qdd_method="speed_spline").

Timing, both on one thread (torch.set_num_threads(1); OpenSim is single-threaded): OpenSim =
wall time of the whole AnalyzeTool run (its set-up included) / frames; batched = muscle
surrogate evaluation + force capacity + solve / frames, second (warm) call (nimble ID over all
coordinate rows and the one-off surrogate fit are reported separately).
Accuracy: activation RMSE and max |error| over all muscles and frames,
per-muscle Pearson r over muscles whose OpenSim activation varies (std > 0.005).

End to end (--e2e, needs --results): the per-trial labelling pipeline of the workflow, in one
process on one thread, on every trial of --results: per subject the one-off scaling and muscle
surrogate fit; per trial IK (--ik-solver opensim | nimble), filtering, ground-force estimation,
inverse dynamics and activations (the workflow's own step functions, files written as in the
workflow), each timed; printed as labelled frames/s per core (steady state = per-trial steps only)
and the share of each step.

Reference reproducibility (--reference-noise): OpenSim SO is solved a second time on a copy of
each model whose muscle path points are all moved 0.1 mm in random directions (fixed seed). On
frames where muscles saturate and reserves carry the rest, SO's Lagrange multipliers are huge and
an activation moves by ~0.5 * lambda * F_max per metre of moment-arm change, so OpenSim's own
answer jumps under such a change; the report gives, per trial, OpenSim-vs-perturbed-OpenSim next to
batched-vs-OpenSim, and the agreement on the frames where OpenSim's answer is reproducible.

The last line printed is exactly: speedup=<x> rmse=<y> r_median=<z> r_min=<w>
(pooled over trials: speedup = OpenSim frames/s / batched frames/s on all solved frames).

Usage: python benchmarks/bench_activations.py [--results results] [--frames 60] [--external DIR]
       [--reference-noise] [--e2e [--ik-solver nimble]]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# one thread for the BLAS under numpy and torch, set before they load: both solvers are timed on
# one thread, and an oversubscribed OpenBLAS on a busy machine made one least-squares solve of
# the surrogate fit 50x slower
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXAMPLE = Path("opensim-core/OpenSim/Examples/Moco/example3DWalking")


def absolute_external_loads(xml: Path, out_xml: Path) -> Path:
    """Copy an ExternalLoads XML with its datafile made absolute (resolved against the XML)."""
    from biohuman.osim.cmc import absolute_external_loads as _abs

    return _abs(xml, out_xml)


def perturb_muscle_paths(model_osim: Path, out_osim: Path, distance_m: float = 1e-4, seed: int = 0) -> Path:
    """Copy of a model with every muscle path point moved `distance_m` in a random direction
    (fixed seed): a geometry change far below what any muscle-path model or surrogate resolves,
    used to measure how reproducible OpenSim SO's own answer is on each frame."""
    from biohuman.osim._tools import load_osim
    from biohuman.osim.model import opensim

    osim = opensim()
    model = load_osim(model_osim)
    rng = np.random.default_rng(seed)
    muscles = model.getMuscles()
    for i in range(muscles.getSize()):
        points = muscles.get(i).getGeometryPath().getPathPointSet()
        for k in range(points.getSize()):
            pp = osim.PathPoint.safeDownCast(points.get(k))
            if pp is None:  # conditional / moving points keep their definitions
                continue
            v = rng.normal(size=3)
            v *= distance_m / np.linalg.norm(v)
            loc = pp.get_location()
            pp.set_location(osim.Vec3(loc.get(0) + v[0], loc.get(1) + v[1], loc.get(2) + v[2]))
    out_osim.parent.mkdir(parents=True, exist_ok=True)
    model.printToXML(str(out_osim))
    return out_osim


def trials(external: Path | None, results: Path | None, work: Path, include_example: bool,
           example_start: float) -> list[dict]:
    """Trial descriptions: name, model, coordinates file, external loads XML, start time."""
    out = []
    if include_example and external is not None and (external / EXAMPLE).is_dir():
        d = external / EXAMPLE
        model = work / "example3DWalking" / "subject_walk_scaled.osim"  # copy: the surrogate cache lands beside it
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(d / "subject_walk_scaled.osim", model)
        xml = absolute_external_loads(d / "grf_walk.xml", model.parent / "grf_walk.xml")
        out.append({"name": "example3DWalking", "model": model, "coordinates": d / "coordinates.sto",
                    "external_loads": xml, "start": example_start})
    elif include_example:
        print(f"example3DWalking skipped: {external / EXAMPLE if external else 'no external data folder'} not found")
    if results is not None:
        for mot in sorted((results / "ik").glob("*/*_filtered.mot")):
            subject, trial = mot.parent.name, mot.name[: -len("_filtered.mot")]
            model = results / "scale" / subject / "model.osim"
            xml = results / "grf" / subject / f"{trial}_external_loads.xml"
            if not model.is_file() or not xml.is_file():
                print(f"{subject}/{trial} skipped: model or external loads missing")
                continue
            sur = results / "surrogate" / subject / "surrogate.status.json"
            out.append({"name": f"{subject}/{trial}", "model": model, "coordinates": mot,
                        "external_loads": absolute_external_loads(xml, work / subject / f"{trial}_external_loads.xml"),
                        "start": None, "surrogate": sur if sur.is_file() else None})
    return out


def run_trial(tr: dict, frames: int, work: Path, reference_noise: bool = False) -> dict:
    """OpenSim SO and batched SO on the same frames of one trial; returns arrays and timings.
    reference_noise: also run OpenSim SO on the model with its muscle path points moved 0.1 mm
    (`perturb_muscle_paths`) and return that solution as "b_perturbed"."""
    import torch

    from biohuman.dynamics.batched_so import batched_so_trial
    from biohuman.dynamics.grf import load_measured_grf
    from biohuman.dynamics.muscles import coordinate_ranges, fit_muscle_surrogate
    from biohuman.osim._tools import load_osim, read_coordinates
    from biohuman.osim.model import opensim
    from biohuman.osim.so import run_static_optimization

    osim = opensim()
    model = load_osim(tr["model"])
    q_full = read_coordinates(tr["coordinates"], model)
    times = q_full.index.to_numpy()
    start = float(times[0]) if tr["start"] is None else float(tr["start"])
    k0 = int(np.searchsorted(times, start - 1e-9))
    k1 = min(len(times) - 1, k0 + frames - 1)
    t0, t1 = float(times[k0]), float(times[k1])
    out_dir = work / tr["name"].replace("/", "_")
    out_dir.mkdir(parents=True, exist_ok=True)

    tic = time.perf_counter()
    ref = run_static_optimization(tr["model"], tr["coordinates"], out_dir, external_loads_xml=tr["external_loads"],
                                  lowpass_hz=None, time_range=(t0, t1), name="so")
    t_osim = time.perf_counter() - tic

    # the batched solver reads the very coordinates OpenSim SO read (betas recomputed, trimmed)
    q = read_coordinates(ref.coordinates_mot, model)
    ext = osim.ExternalLoads(str(tr["external_loads"]), True)
    grf = load_measured_grf(Path(ext.getDataFileName()), tr["external_loads"], contact_threshold_n=-np.inf)
    free = [c for c in q.columns if not c.endswith("_beta")]
    tic = time.perf_counter()
    if tr.get("surrogate"):  # the workflow's per-subject surrogate (fitted over all its trials)
        from biohuman.dynamics.muscles import MuscleSurrogate
        from biohuman.io.dataset import read_status

        sur = MuscleSurrogate.load(read_status(tr["surrogate"])["outputs"]["surrogate"])
        sur.metadata["cache"] = {"hit": True}
    else:
        q_free = q_full[[c for c in q_full.columns if c in free]]
        sur = fit_muscle_surrogate(tr["model"], coordinate_ranges(q_free), poses=q_free)
    t_fit = time.perf_counter() - tic
    torch.set_num_threads(1)
    kw = {"time_range": (t0, t1), "qdd_method": "speed_spline", "surrogate": sur}
    batched_so_trial(tr["model"], q, grf, **kw)  # warm-up (first torch calls, model caches)
    res = batched_so_trial(tr["model"], q, grf, **kw)
    a = res.activation.to_numpy()
    b = ref.activation[list(res.activation.columns)].reindex(res.activation.index, method="nearest",
                                                              tolerance=1e-6).to_numpy()
    ra = res.reserve_actuation
    others = [c for c in ra.columns if not c.startswith("pelvis")]
    # frames where the muscles can produce the motion: no non-pelvis reserve above 1 N m in the
    # batched solution and no muscle saturated (>= 0.95) in OpenSim's
    suffice = (ra[others].abs().max(axis=1).to_numpy() <= 1.0 if others else np.ones(len(a), bool)) & (b.max(axis=1) < 0.95)
    osim_ok = ~np.asarray(ref.failed, dtype=bool)[: len(a)] if len(np.atleast_1d(ref.failed)) == len(a) else np.ones(len(a), bool)
    extra = {}
    if reference_noise:
        pert = perturb_muscle_paths(Path(tr["model"]), out_dir / "perturbed" / "model_paths_0.1mm.osim")
        ref_p = run_static_optimization(pert, tr["coordinates"], out_dir / "perturbed", external_loads_xml=tr["external_loads"],
                                        lowpass_hz=None, time_range=(t0, t1), name="so")
        extra["b_perturbed"] = ref_p.activation[list(res.activation.columns)].reindex(
            res.activation.index, method="nearest", tolerance=1e-6).to_numpy()
    return {**extra, "osim_ok": osim_ok, "suffice": suffice, "name": tr["name"], "frames": len(a), "t_osim": t_osim, "t_batched": res.timing_s["total"],
            "t_id": res.timing_s["inverse_dynamics"], "id_rows": len(q), "t_fit": t_fit,
            "fit_cached": sur.metadata["cache"]["hit"],
            "fit_total": sur.metadata["timing_s"]["total"], "a": a, "b": b, "muscles": list(res.activation.columns),
            "max_violation": float(np.max(res.constraint_violation)), "iterations": res.iterations,
            "osim_failed": int(np.sum(ref.failed)), "surrogate_mm": sur.metadata["summary_mm"]}


def correlations(a: np.ndarray, b: np.ndarray, min_std: float = 0.005) -> np.ndarray:
    """Pearson r per muscle (columns) where the reference b varies (std > min_std)."""
    keep = np.flatnonzero(b.std(axis=0) > min_std)
    return np.array([np.corrcoef(a[:, i], b[:, i])[0, 1] for i in keep], dtype=float)


def _r_text(rs: np.ndarray) -> str:
    """Median and minimum of per-muscle r, or a note when no muscle varies in the window."""
    if rs.size == 0:
        return "no muscle varies (std > 0.005) in this window"
    return f"Pearson r median {np.median(rs):.4f} min {rs.min():.4f} over {len(rs)} varying muscles"


def end_to_end(results: Path, work: Path, ik_solver: str) -> dict:
    """Time the workflow's per-trial steps in-process on every synthetic trial of `results`.

    Inputs are the workflow's own inputs (results/synthetic/{subject}/static.trc, subject.yaml and
    {trial}.trc); outputs go to `work`. Returns per-step seconds, frames and per-subject one-offs.
    """
    import logging

    import torch
    import yaml

    from biohuman.config import validate_config
    from biohuman.io.dataset import write_status
    from biohuman.motion.library import MOTION_TYPE
    from biohuman import pipeline as P

    torch.set_num_threads(1)
    config = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    config["ik"]["solver"] = ik_solver
    config["activation_solver"] = "batched_so"
    log = logging.getLogger("bench_e2e")
    log.addHandler(logging.NullHandler())
    log.propagate = False

    def rec(out: dict) -> dict:
        return {"status": "ok", "outputs": {k: str(v) for k, v in out["outputs"].items()}, "extra": out.get("extra", {})}

    steps = ("ik", "ground_forces", "inverse_dynamics", "activations")
    per_step = {k: 0.0 for k in steps}
    one_off = {"scale": 0.0, "muscle_surrogate": 0.0}
    frames = 0
    subjects = sorted(p.parent.name for p in (results / "synthetic").glob("*/static.trc"))
    for subject in subjects:
        src = results / "synthetic" / subject
        out = work / "e2e" / subject
        out.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        scale = rec(P.step_scale(upstream={}, log=log, config=config, subject=subject, static_trc=src / "static.trc",
                                 sheet=src / "subject.yaml", out_dir=out))
        one_off["scale"] += time.perf_counter() - tic
        iks, names = {}, sorted(p.stem for p in src.glob("*.trc") if p.stem != "static")
        for name in names:
            motion = name
            trial = {"subject": subject, "trial": name, "motion_type": MOTION_TYPE.get(motion, "walk"),
                     "source": "synthetic"}
            tic = time.perf_counter()
            iks[name] = rec(P.step_ik(upstream={"scale": scale}, log=log, config=config, trial=trial,
                                      trc=src / f"{name}.trc", out_dir=out))
            per_step["ik"] += time.perf_counter() - tic
            frames += int(iks[name]["extra"]["frames"])
        # the one-off surrogate fit needs every trial's range (as in the workflow)
        for name in names:
            write_status(out / f"{name}.ik.status.json", trial_id=f"{subject}/{name}", step="ik", status="ok",
                         outputs=iks[name]["outputs"], extra=iks[name]["extra"])
        tic = time.perf_counter()
        sur = rec(P.step_muscle_surrogate(upstream={"scale": scale}, log=log, config=config, subject=subject,
                                          ik_statuses=[out / f"{n}.ik.status.json" for n in names], out_dir=out))
        one_off["muscle_surrogate"] += time.perf_counter() - tic
        for name in names:
            trial = {"subject": subject, "trial": name, "motion_type": MOTION_TYPE.get(name, "walk"),
                     "source": "synthetic"}
            up = {"scale": scale, "ik": iks[name]}
            tic = time.perf_counter()
            up["grf"] = rec(P.step_ground_forces(upstream=up, log=log, config=config, trial=trial, out_dir=out))
            per_step["ground_forces"] += time.perf_counter() - tic
            tic = time.perf_counter()
            up["id"] = rec(P.step_inverse_dynamics(upstream=up, log=log, config=config, trial=trial, out_dir=out))
            per_step["inverse_dynamics"] += time.perf_counter() - tic
            up["surrogate"] = sur
            tic = time.perf_counter()
            P.step_activations(upstream=up, log=log, config=config, trial=trial, out_dir=out)
            per_step["activations"] += time.perf_counter() - tic
    return {"per_step": per_step, "one_off": one_off, "frames": frames, "subjects": len(subjects),
            "ik_solver": ik_solver}


def print_end_to_end(r: dict) -> None:
    """Frames/s per core and where the time goes."""
    steady = sum(r["per_step"].values())
    print(f"end to end ({r['subjects']} subjects, {r['frames']} frames, IK: {r['ik_solver']}, one thread): "
          f"{r['frames'] / steady:.1f} labelled frames/s per core in steady state "
          f"({1000 * steady / r['frames']:.1f} ms/frame); with the per-subject one-offs "
          f"{r['frames'] / (steady + sum(r['one_off'].values())):.1f} frames/s")
    for k, v in r["per_step"].items():
        print(f"  {k:17s} {1000 * v / r['frames']:8.2f} ms/frame  {100 * v / steady:5.1f} %")
    for k, v in r["one_off"].items():
        print(f"  one-off {k:9s} {v / max(r['subjects'], 1):8.1f} s per subject")


def print_subset(rows: list[dict], key: str, where: str, per_trial: str) -> None:
    """Agreement pooled over the frames each trial marks True in `key` (a (frames,) bool mask),
    and the worst error per trial."""
    m = [r[key] for r in rows]
    a_s = np.concatenate([r["a"][k] for r, k in zip(rows, m)])
    b_s = np.concatenate([r["b"][k] for r, k in zip(rows, m)])
    rs_s = np.concatenate([correlations(r["a"][k], r["b"][k]) for r, k in zip(rows, m) if k.sum() > 2])
    print(f"on the {len(a_s)} of {sum(r['frames'] for r in rows)} frames {where}: "
          f"activation RMSE {np.sqrt(np.mean((a_s - b_s) ** 2)):.5f}, max |err| {np.abs(a_s - b_s).max():.4f}, "
          f"{_r_text(rs_s)}; {per_trial}: " + ", ".join(
              f"{r['name']} {np.abs(r['a'][k] - r['b'][k]).max():.4f}" for r, k in zip(rows, m) if k.any()))


def print_reference_noise(rows: list[dict], tol: float = 0.01) -> None:
    """OpenSim SO against itself with muscle paths moved 0.1 mm, next to batched vs OpenSim; and
    the agreement on the frames where OpenSim's answer is reproducible (moves < `tol`)."""
    print(f"reference reproducibility (OpenSim SO vs OpenSim SO on the model with every muscle path point moved "
          f"0.1 mm; a frame is reproducible when no activation moves by {tol} or more):")
    keep_a, keep_b, rs_k, n_frames = [], [], [], 0
    for r in rows:
        e_ref = np.abs(r["b_perturbed"] - r["b"])
        e_bat = np.abs(r["a"] - r["b"])
        ok = np.isfinite(e_ref).all(axis=1) & (e_ref.max(axis=1) < tol)
        n_frames += len(ok)
        print(f"  {r['name']}: OpenSim vs perturbed OpenSim max |diff| {np.nanmax(e_ref):.4f} (frames > 0.03: "
              f"{int(np.sum(np.nanmax(e_ref, axis=1) > 0.03))}) | batched vs OpenSim max |err| {e_bat.max():.4f} "
              f"(frames > 0.03: {int(np.sum(e_bat.max(axis=1) > 0.03))}) | reproducible frames {int(ok.sum())}/{len(ok)}: "
              f"batched max |err| {e_bat[ok].max() if ok.any() else float('nan'):.4f}")
        keep_a.append(r["a"][ok])
        keep_b.append(r["b"][ok])
        if ok.sum() > 2:
            rs_k.append(correlations(r["a"][ok], r["b"][ok]))
    a_k, b_k = np.concatenate(keep_a), np.concatenate(keep_b)
    print(f"on the {len(a_k)} of {n_frames} reproducible frames: activation RMSE {np.sqrt(np.mean((a_k - b_k) ** 2)):.5f}, "
          f"max |err| {np.abs(a_k - b_k).max():.4f}, {_r_text(np.concatenate(rs_k) if rs_k else np.array([]))}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_ext = Path(os.environ.get("BIOHUMAN_EXTERNAL", ROOT / ".." / "shared" / "data" / "external"))
    ap.add_argument("--external", type=Path, default=default_ext, help="external reference data folder")
    ap.add_argument("--results", type=Path, default=None, help="workflow results folder to add trials from")
    ap.add_argument("--frames", type=int, default=60, help="frames per trial solved by both (OpenSim SO is slow)")
    ap.add_argument("--start", type=float, default=0.6, help="start time (s) of the example3DWalking window")
    ap.add_argument("--no-example", action="store_true", help="skip OpenSim's example3DWalking trial")
    ap.add_argument("--workdir", type=Path, default=None, help="keep outputs here (default: temporary)")
    ap.add_argument("--reference-noise", action="store_true",
                    help="also solve OpenSim SO on each model with its muscle path points moved 0.1 mm and "
                         "report OpenSim's own reproducibility per frame (doubles the OpenSim time)")
    ap.add_argument("--e2e", action="store_true", help="also time the whole per-trial pipeline on --results")
    ap.add_argument("--ik-solver", default="opensim", choices=("opensim", "nimble"), help="IK solver of --e2e")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_activations_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    """Run every trial and print the report (see the module docstring)."""
    todo = trials(args.external.resolve() if args.external else None, args.results, work, not args.no_example,
                  args.start)
    if not todo:
        print("no trials found")
        return 1
    if args.e2e:
        if args.results is None:
            print("--e2e needs --results")
            return 1
        print_end_to_end(end_to_end(args.results, work, args.ik_solver))
    rows = []
    for tr in todo:
        r = run_trial(tr, args.frames, work, reference_noise=args.reference_noise)
        rows.append(r)
        d = r["a"] - r["b"]
        rs = correlations(r["a"], r["b"])
        fps_o, fps_b = r["frames"] / r["t_osim"], r["frames"] / r["t_batched"]
        print(f"{r['name']}: {r['frames']} frames | OpenSim SO {fps_o:.2f} frames/s ({1000 / fps_o:.1f} ms/frame) | "
              f"batched {fps_b:.0f} frames/s ({1000 / fps_b:.3f} ms/frame) | ratio {fps_b / fps_o:.0f}x | "
              f"nimble ID {1000 * r['t_id'] / r['id_rows']:.3f} ms/row ({r['id_rows']} rows) | surrogate fit "
              f"{r['fit_total']:.1f} s{' (cached)' if r['fit_cached'] else ''}")
        print(f"  activation RMSE {np.sqrt(np.mean(d ** 2)):.5f}, max |err| {np.abs(d).max():.4f}, "
              f"{_r_text(rs)}; "
              f"batched max violation {r['max_violation']:.2e} N m, {r['iterations']} Newton iterations; "
              f"OpenSim failed frames {r['osim_failed']}; surrogate held-out moment-arm RMSE median "
              f"{r['surrogate_mm']['moment_arm_rmse_median']:.3f} mm, "
              f"max {r['surrogate_mm']['moment_arm_rmse_max']:.3f} mm")
        worst = np.argsort(-np.abs(d).max(axis=0))[:3]
        print("  largest differences: " + ", ".join(f"{r['muscles'][i]} {np.abs(d[:, i]).max():.4f}" for i in worst))
    print_subset(rows, "osim_ok", "where OpenSim's optimizer converged", "per trial max")
    print_subset(rows, "suffice", "where the muscles suffice (no non-pelvis reserve > 1 N m, no OpenSim "
                 "activation >= 0.95)", "per trial")
    if args.reference_noise:
        print_reference_noise(rows)
    a = np.concatenate([r["a"] for r in rows])
    b = np.concatenate([r["b"] for r in rows])
    rs = np.concatenate([correlations(r["a"], r["b"]) for r in rows])
    frames = sum(r["frames"] for r in rows)
    speedup = (frames / sum(r["t_batched"] for r in rows)) / (frames / sum(r["t_osim"] for r in rows))
    rmse = float(np.sqrt(np.mean((a - b) ** 2)))
    print(f"speedup={speedup:.0f} rmse={rmse:.5f} r_median={np.median(rs):.4f} r_min={rs.min():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
