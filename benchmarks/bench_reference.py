"""Benchmark: the reference solvers (OpenSim CMC, MocoInverse) on a window of a synthetic walk,
their cost per second of motion and their agreement with the run's main activations (SO).

Default: the workflow labels one synthetic subject's walk in --work (snakemake target `label`,
render off, the project's config otherwise; reused when already there), then the workflow step
of rule reference_activations (`biohuman.reference.step_reference_activations`) runs each solver
on the window (default 0.3 s from the first foot strike that leaves room: stance) and writes the
window's trial NetCDF and agreement JSON under --work/results/reference/{solver}/.
With --results, an existing workflow results root is used instead (read only; outputs go to
--work). With --model/--coordinates/--external-loads/--main-activations, those files are used
directly (`solve_reference` + `agreement`, window from --start/--window).

Timing: wall time of the solver itself (CMC: CMCTool.run, which also simulates 0.03 s before and
one CMC window after the range; MocoInverse: solve) / seconds of motion in the window, one
thread. Agreement: raw activations against the main solver's on the same frames: RMSE and max
|error| over muscles and frames, per-muscle Pearson r (median, min) over muscles whose main
activation varies (std > 0.005).

The last line printed is exactly:
`<solver>: s_per_s=<x> rmse=<y> max=<m> r_median=<z> r_min=<w>` per solver, joined by " | ".

Usage: python benchmarks/bench_reference.py [--work /tmp/bench_reference] [--results DIR]
       [--trial syn01/walk] [--window 0.3] [--start S] [--solvers cmc moco_inverse]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def label_walk(work: Path) -> tuple[dict, Path]:
    """Run the workflow's labelling for one synthetic subject's walk in `work`; (config, results)."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    results = work / "results"
    cfg["results"] = str(results)
    cfg["synthetic"]["subjects"]["count"] = 1
    cfg["synthetic"]["motions"] = ["walk"]
    cfg["render"]["enabled"] = False
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "label", "--configfile", str(path),
                        "--rerun-triggers", "mtime"], cwd=ROOT, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit("workflow failed:\n" + (r.stdout + r.stderr)[-3000:])
    return cfg, results


def run_workflow_step(cfg: dict, results: Path, out_root: Path, trial_id: str, solver: str) -> dict:
    """The reference_activations step on one trial (the rule's adapter, without snakemake)."""
    from biohuman.config import config_hash, validate_config
    from biohuman.reference import step_reference_activations
    from biohuman.workflow import plan, run_step

    cfg = validate_config(cfg)
    subject, trial = trial_id.split("/", 1)
    ups = {"scale": results / "scale" / subject / "scale.status.json"}
    ups.update({k: results / d / subject / f"{trial}.status.json"
                for k, d in (("ik", "ik"), ("grf", "grf"), ("id", "id"), ("activations", "activations"))})
    out = out_root / solver / subject
    rec = run_step("reference_activations", out / f"{trial}.status.json", out / f"{trial}.log",
                   step_reference_activations, trial_id=trial_id, upstream=ups, config=cfg,
                   trial=plan(cfg).trial(subject, trial).to_dict(), solver=solver, out_dir=out,
                   config_hash=config_hash(cfg))
    if rec["status"] not in ("ok", "flagged"):
        raise SystemExit(f"{solver} failed: {rec['message']} (log {out / f'{trial}.log'})")
    agree = json.loads(Path(rec["outputs"]["agreement"]).read_text())
    agree = {k: (float("nan") if v is None and k in ("r_median", "r_min") else v) for k, v in agree.items()}
    agree["status"] = rec["status"]
    agree["qc_message"] = rec.get("message", "")
    return agree


def run_paths(args: argparse.Namespace, solver: str, out_root: Path) -> dict:
    """solve_reference + agreement on given files."""
    from biohuman.io.storage import read_storage
    from biohuman.reference import agreement, solve_reference

    if args.start is None:
        raise SystemExit("--start is needed with given paths")
    rec = solve_reference(solver, args.model, args.coordinates, args.external_loads, out_root / solver, "trial",
                          (args.start, args.start + args.window), {})
    agree = agreement(read_storage(rec["outputs"]["activation_sto"]).table,
                      read_storage(args.main_activations).table)
    agree.update({"solver": solver, "wall_s": rec["extra"]["wall_s"], "s_per_s": rec["extra"]["s_per_s"],
                  "window_s": rec["extra"]["time_range"], "main_solver": str(args.main_activations), "status": "ok"})
    return agree


def _f(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_reference"))
    ap.add_argument("--results", type=Path, default=None, help="existing workflow results root (read only)")
    ap.add_argument("--trial", default="syn01/walk")
    ap.add_argument("--window", type=float, default=0.3, help="window length (s)")
    ap.add_argument("--start", type=float, default=None, help="window start (s); default: first foot strike")
    ap.add_argument("--solvers", nargs="+", default=["cmc", "moco_inverse"], choices=["cmc", "moco_inverse"])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--coordinates", type=Path)
    ap.add_argument("--external-loads", type=Path)
    ap.add_argument("--main-activations", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    out_root = args.work / "reference"
    rows = []
    if args.model is not None:
        for s in args.solvers:
            rows.append(run_paths(args, s, out_root))
    else:
        if args.results is not None:
            results = args.results
            cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
            cfg["results"] = str(results)
        else:
            cfg, results = label_walk(args.work)
            out_root = results / "reference"
        cfg["reference_solvers"] = {**(cfg.get("reference_solvers") or {}), "window_s": args.window,
                                    "start_s": args.start}
        for s in args.solvers:
            rows.append(run_workflow_step(cfg, results, out_root, args.trial, s))
    for a in rows:
        print(f"{a['solver']:>12} vs {a['main_solver']}: window {a['window_s'][0]:.3f}-{a['window_s'][1]:.3f} s, "
              f"{a['wall_s']:.1f} s wall = {a['s_per_s']:.0f} s per s of motion; RMSE {a['rmse']:.4f}, "
              f"max {a['max_abs_error']:.3f} ({a['max_abs_error_muscle']}), r median {a['r_median']:.3f}, "
              f"min {a['r_min']:.3f} ({a['r_min_muscle']}) over {a['muscles_varying']} varying muscles; "
              f"mean activation {a['mean_reference']:.3f} vs {a['mean_main']:.3f}; status {a['status']} "
              f"{a.get('qc_message', '')}")
        if isinstance(a.get("smoothed"), dict):
            sm = a["smoothed"]
            print(f"{'':>12}  after the dataset's smoothing: RMSE {sm['rmse']:.4f}, max {sm['max_abs_error']:.3f}, "
                  f"r median {_f(sm['r_median']):.3f}, min {_f(sm['r_min']):.3f}")
    print(" | ".join(f"{a['solver']}: s_per_s={a['s_per_s']:.0f} rmse={a['rmse']:.4f} max={a['max_abs_error']:.3f} "
                     f"r_median={a['r_median']:.3f} r_min={a['r_min']:.3f}" for a in rows))


if __name__ == "__main__":
    main()
