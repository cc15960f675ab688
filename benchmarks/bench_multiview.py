"""Figures of `biohuman multiview` (docs/model.md, "Real video: four calibrated views"): the video model
on the four synchronised pose2sim views (../shared/data/external/pose2sim/Pose2Sim/Demo_SinglePerson,
60 fps, 100 frames; the model sees every 2nd frame), cross-view agreement of its predictions, a
shuffled-frame control, and its joints against MediaPipe landmarks triangulated from the four views.

    python benchmarks/bench_multiview.py --checkpoint results/train/RUN/model.pt [--out DIR] [--height 1.70]
    python benchmarks/bench_multiview.py              # the small model tests/test_multiview.py trains
    python benchmarks/bench_multiview.py --random     # random weights (timing only: see below)

Without --checkpoint: the small BioHumanNet that tests/test_multiview.py trains in a few seconds on
projected synthetic skeletons (`tiny_trained_checkpoint`). --random: a randomly initialised
BioHumanNet of the default size with the `mediapipe` front-end; its outputs vary over time through
the position encoding, the same in every view, so its agreement figures say nothing about video
understanding (the shuffled control shows it). Writes `multiview.json` in --out (default: a
temporary folder) and prints the summary; the last line is
`activation_pcc=<real> shuffled_pcc=<control> angle_rmse_deg=<x> mpjpe_mm=<x> pa_mpjpe_mm=<x> reprojection_px=<x>`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--random", action="store_true", help="random weights of the default size (timing only)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: temporary)")
    ap.add_argument("--pose2sim", type=Path, default=None, help="Demo_SinglePerson folder")
    ap.add_argument("--height", type=float, default=1.70, help="subject height, m")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from biohuman.validation.multiview import default_pose2sim_dir, run_multiview, summary_lines

    pose2sim = args.pose2sim or default_pose2sim_dir()
    if not (pose2sim / "calibration" / "Calib.qca.txt").is_file():
        sys.exit(f"no pose2sim demo at {pose2sim} (give --pose2sim)")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "multiview"
        t0 = time.perf_counter()
        if args.checkpoint:
            ckpt, label = args.checkpoint, str(args.checkpoint)
        elif args.random:
            from _nn_data import random_checkpoint

            ckpt, label = random_checkpoint(Path(tmp) / "random.pt", frontend="mediapipe"), "random weights"
        else:
            from test_multiview import tiny_trained_checkpoint

            ckpt, label = tiny_trained_checkpoint(Path(tmp) / "tiny.pt"), "tests/test_multiview.tiny_trained_checkpoint"
        t_ckpt = time.perf_counter() - t0
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t1 = time.perf_counter()
        r = run_multiview(ckpt, out, pose2sim, height_m=args.height)
        wall = time.perf_counter() - t1
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    print(f"checkpoint: {label} (prepared in {t_ckpt:.1f} s)")
    print("\n".join(summary_lines(r)))
    t = r.get("triangulation", {})
    print(f"triangulation: {t.get('n_frames_triangulated')} frames, sides exchanged per view "
          f"{t.get('frames_with_sides_exchanged')}; calibration round trip {r['calibration_round_trip_max_m']:.1e} m")
    print(f"run: {wall:.1f} s wall, {cpu:.1f} s CPU, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    c = r["shuffled_control_mean"]
    m = r.get("mpjpe_mean", {})
    nan = float("nan")
    print(f"activation_pcc={c['real']['activation_pcc_median']:.3f} "
          f"shuffled_pcc={c['shuffled']['activation_pcc_median']:.3f} "
          f"angle_rmse_deg={r['agreement_mean']['joint_angle_rmse_deg']:.2f} mpjpe_mm={m.get('mpjpe_mm', nan):.0f} "
          f"pa_mpjpe_mm={m.get('pa_mpjpe_mm', nan):.0f} "
          f"reprojection_px={t.get('reprojection_px', {}).get('median', nan):.1f}")


if __name__ == "__main__":
    main()
