"""Speed of `biohuman predict`: a whole video file to the predicted NetCDF (decode, MediaPipe Pose,
person crop, EfficientNet-Lite0 features, BioHumanNet in windows, forward kinematics, spec-checked
write). The pipeline runs its stages in parallel threads (FFmpeg decoding, MediaPipe's graph,
EfficientNet in a worker thread) with one torch intra-op thread, to use the target's 2 cores.

    python benchmarks/bench_predict.py [--video V.mp4] [--checkpoint model.pt] [--threads 1] [--overlay]
    python benchmarks/bench_predict.py --frontend mediapipe_effnet   # the front-end alone, every frame

Without --video: the real pose2sim video (../shared/data/external/pose2sim, 1080 x 1920, 60 fps,
100 frames; the model runs on every 2nd frame, its 30 fps training rate) when present. Without
--checkpoint: a randomly initialised BioHumanNet of the default size saved in the checkpoint
format (speed does not depend on the weights). Reports wall time and process CPU time; on a shared
machine wall time depends on the load, so `fps_cpu_1core` (video frames per CPU-second) is also
printed: the speed on one uncontended core. The last line is `fps=<x>`: video frames per wall-clock
second, whole file to NetCDF (plot and overlay excluded unless --overlay).
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
EXTERNAL = Path(os.environ.get("BIOHUMAN_EXTERNAL", REPO / ".." / "shared" / "data" / "external")).resolve()
sys.path.insert(0, str(REPO / "tests"))
POSE2SIM = EXTERNAL / "pose2sim" / "Pose2Sim" / "Demo_SinglePerson" / "videos" / "cam01.mp4"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", type=Path, default=None)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: decoding, MediaPipe and EfficientNet run in "
                         "parallel threads instead, which uses 2 cores better)")
    ap.add_argument("--overlay", action="store_true", help="also write the plot and the overlay video")
    ap.add_argument("--frontend", default=None,
                    help="time only this front-end over every frame (extract_video_features), not predict")
    args = ap.parse_args()
    import torch
    from _nn_data import random_checkpoint

    torch.set_num_threads(args.threads)
    from biohuman.nn.predict import predict_video

    video = args.video or POSE2SIM
    if not video.is_file():
        sys.exit(f"no video: {video} (give --video)")
    if args.frontend:
        from biohuman.nn.frontend import extract_video_features

        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        f = extract_video_features(video, args.frontend, threads=args.threads)
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        n = len(f["time"])
        print(f"front-end {args.frontend} on {video.name}: {n} frames, {wall:.2f} s wall, {cpu:.2f} s CPU, "
              f"threads {args.threads}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"fps_cpu_1core={n / cpu:.2f}")
        print(f"fps={n / wall:.2f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or random_checkpoint(Path(tmp) / "model.pt")
        # warm-up on a short clip is not possible for MediaPipe graphs; model loading is timed as part of the run
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        r = predict_video(video, ckpt, Path(tmp) / "pred.nc", plot=args.overlay, overlay=args.overlay,
                          threads=args.threads)
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    n = r["n_video_frames"]
    print(f"video {video.name}: {n} frames, model on {r['n_frames']} (stride {r['stride']}), "
          f"detection rate {r['detection_rate']}")
    print(f"front-end {r['seconds_frontend']:.2f} s, model {r['seconds_model']:.2f} s, "
          f"to NetCDF {r['seconds_to_netcdf']:.2f} s, total {wall:.2f} s wall, {cpu:.2f} s CPU, "
          f"threads {args.threads}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"fps_to_netcdf={r['fps_to_netcdf']:.2f} fps_cpu_1core={n / cpu:.2f}")
    print(f"fps={n / (wall if args.overlay else r['seconds_to_netcdf']):.2f}")


if __name__ == "__main__":
    main()
