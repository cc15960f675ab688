"""Command line: `biohuman info PATH` (a dataset or one trial), `biohuman plot TRIAL`,
`biohuman render-preview TRIAL` and `biohuman predict VIDEO --checkpoint MODEL`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from biohuman.errors import BiohumanError


def info(path: Path) -> str:
    """Human-readable summary of a manifest / dataset folder or of one trial NetCDF."""
    import biohuman.io as bio

    if path.suffix == ".nc":
        ds = bio.open_trial(path)
        lines = [f"trial {ds.attrs['trial_id']} ({ds.attrs['motion_type']}, {ds.attrs['source']}): "
                 f"{ds.sizes['time']} frames, {float(ds.time[-1] - ds.time[0]):.2f} s, "
                 f"{ds.sizes['muscle']} muscles, QC {ds.attrs['qc_status']}, solver {ds.attrs['activation_solver']}"]
        for check, value, thr, flag, units in zip(ds.check.values, ds.qc_value.values, ds.qc_threshold.values,
                                                  ds.qc_flag.values, ds.qc_units.values):
            lines.append(f"  {'FAIL' if flag else 'pass'}  {check:32s} {value:10.4g} (limit {thr:g} {units})")
        return "\n".join(lines)
    manifest = path if path.suffix == ".csv" else path / "manifest.csv"
    df = bio.read_manifest(manifest)
    lines = [f"{len(df)} trials in {manifest}: " + ", ".join(f"{k} {v}" for k, v in df.status.value_counts().items())]
    for row in df.itertuples():
        lines.append(f"  {row.status:8s} {row.trial_id:28s} {row.motion_type:12s} {row.n_frames!s:>6} frames  {row.message}")
    return "\n".join(lines)


def plot_trial(path: Path, out: Path | None = None) -> Path:
    """Figure of one trial: sagittal joint angles, joint moments, ground forces, activation heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import biohuman.io as bio

    ds = bio.open_trial(path)
    t = ds.time.to_numpy()
    fig, ax = plt.subplots(4, 1, figsize=(9, 12), sharex=True, gridspec_kw={"height_ratios": [1, 1, 1, 2]})
    for c in ("hip_flexion_r", "knee_angle_r", "ankle_angle_r"):
        ax[0].plot(t, ds.joint_angle.sel(coordinate=c), label=c)
        ax[1].plot(t, ds.joint_moment.sel(coordinate=c), label=c)
    ax[0].set_ylabel("angle (deg)")
    ax[1].set_ylabel("moment (N m)")
    for f in ("r", "l"):
        ax[2].plot(t, ds.ground_force.sel(foot=f, axis="y"), label=f"vertical GRF {f}")
    ax[2].set_ylabel("force (N)")
    im = ax[3].imshow(ds.activation.to_numpy().T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="magma",
                      extent=[t[0], t[-1], 0, ds.sizes["muscle"]])
    ax[3].set_yticks(np.arange(0, ds.sizes["muscle"], 8) + 0.5, ds.muscle.values[::8], fontsize=7)
    ax[3].set_ylabel("muscle")
    ax[3].set_xlabel("time (s)")
    fig.colorbar(im, ax=ax[3], label="activation", orientation="horizontal", pad=0.12)
    for a in ax[:3]:
        a.legend(fontsize=8)
    fig.suptitle(f"{ds.attrs['trial_id']} ({ds.attrs['motion_type']}), QC {ds.attrs['qc_status']}")
    out = out or path.with_suffix(".png")
    fig.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out


def render_preview_cmd(path: Path, out: Path | None = None, frames: int = 6, anny_cache: Path | None = None) -> Path:
    """Contact sheet (.png) or side-by-side video (.mp4) of a labelled trial: the rendered body
    next to the skeleton with muscles coloured by activation."""
    import numpy as np
    import pandas as pd

    import biohuman.io as bio
    from biohuman.render import render_preview

    ds = bio.open_trial(path)
    t = ds.time.to_numpy()
    coords = pd.DataFrame(np.radians(ds.joint_angle.to_numpy()), index=t, columns=ds.coordinate.values)
    coords[list(ds.translational_coordinate.values)] = ds.translation.to_numpy()
    act = pd.DataFrame(ds.activation.to_numpy(), index=t, columns=ds.muscle.values)
    out = out or path.with_name(f"{path.stem}_preview.png")
    import os

    # the cache: given, else $ANNY_CACHE_DIR, else the workflow's {results}/cache/anny
    default = path.resolve().parents[2] / "cache" / "anny"
    cache = anny_cache or (Path(os.environ["ANNY_CACHE_DIR"]) if os.environ.get("ANNY_CACHE_DIR") else default)
    return render_preview(ds.attrs["model_path"], coords, out, activations=act, frames=frames,
                          config={"anny_cache_dir": str(cache)},
                          height_m=float(ds.attrs["subject_height_m"]), mass_kg=float(ds.attrs["subject_mass_kg"]))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `biohuman` console script."""
    parser = argparse.ArgumentParser(prog="biohuman", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="summarise a dataset (folder or manifest.csv) or one trial (.nc)")
    p.add_argument("path", type=Path)
    p = sub.add_parser("plot", help="plot one trial (.nc) to a PNG")
    p.add_argument("trial", type=Path)
    p.add_argument("-o", "--out", type=Path)
    p = sub.add_parser("render-preview", help="body next to the activation-coloured skeleton (.png sheet or .mp4)")
    p.add_argument("trial", type=Path)
    p.add_argument("-o", "--out", type=Path, help="output .png (contact sheet, default) or .mp4")
    p.add_argument("--frames", type=int, default=6, help="frames in the contact sheet")
    p.add_argument("--anny-cache", type=Path, help="Anny cache folder (default $ANNY_CACHE_DIR or results/cache/anny)")
    p = sub.add_parser("predict", help="video (.mp4) -> predicted pose + activations (.nc, .png, overlay .mp4)")
    p.add_argument("video", type=Path)
    p.add_argument("--checkpoint", type=Path,
                   help="trained model (default: the newest results/train/*/model.pt here)")
    p.add_argument("-o", "--out", type=Path, help="output .nc (default: VIDEO with suffix .nc)")
    p.add_argument("--height", type=float, default=1.70, help="subject height, m (scales the skeleton)")
    p.add_argument("--mass", type=float, default=70.0, help="subject mass, kg (recorded)")
    p.add_argument("--no-overlay", action="store_true", help="skip the plot and the overlay video")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the pipeline's stages run in parallel instead)")
    p = sub.add_parser("multiview", help="predict on the four calibrated pose2sim views: cross-view agreement, "
                                         "shuffled-frame control, MPJPE vs triangulated MediaPipe (multiview.json)")
    p.add_argument("--checkpoint", type=Path, required=True, help="trained model (.pt)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--pose2sim", type=Path, help="pose2sim Demo_SinglePerson folder (default: under $BIOHUMAN_EXTERNAL "
                                                 "or ../shared/data/external)")
    p.add_argument("--height", type=float, default=1.70, help="subject height, m (scales the skeleton)")
    p = sub.add_parser("validate", help="compare against OpenSim reference results (writes validation.json + plots)")
    p.add_argument("--external", type=Path, required=True, help="reference data folder (../shared/data/external)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--parts", nargs="+", help="subset of: rajagopal gait2392 c3d (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "info":
            print(info(args.path))
        elif args.cmd == "plot":
            print(plot_trial(args.trial, args.out))
        elif args.cmd == "render-preview":
            print(render_preview_cmd(args.trial, args.out, args.frames, args.anny_cache))
        elif args.cmd == "predict":
            from biohuman.nn.predict import predict_video

            ckpt = args.checkpoint
            if ckpt is None:
                found = sorted(Path("results/train").glob("*/model.pt"), key=lambda q: q.stat().st_mtime)
                if not found:
                    from biohuman.errors import ConfigError

                    raise ConfigError("no results/train/*/model.pt here; give --checkpoint")
                ckpt = found[-1]
            r = predict_video(args.video, ckpt, args.out or args.video.with_suffix(".nc"),
                              height_m=args.height, mass_kg=args.mass, plot=not args.no_overlay,
                              overlay=not args.no_overlay, threads=args.threads)
            for key in ("netcdf", "plot", "overlay"):
                if key in r:
                    print(r[key])
            print(f"{r['n_video_frames']} frames ({r['n_frames']} through the model), "
                  f"{r['fps_to_netcdf']:.1f} frames/s to NetCDF", file=sys.stderr)
        elif args.cmd == "multiview":
            from biohuman.validation.multiview import run_multiview, summary_lines

            print("\n".join(summary_lines(run_multiview(args.checkpoint, args.out, args.pose2sim, height_m=args.height))))
            print(args.out / "multiview.json")
        elif args.cmd == "validate":
            from biohuman.validation.report import run_validation, summary_lines

            merged = run_validation(args.external, args.out, parts=args.parts)
            print("\n".join(summary_lines(merged)))
            print(args.out / "validation.json")
    except BiohumanError as exc:
        print(f"biohuman: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
