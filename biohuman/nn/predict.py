"""`biohuman predict`: any MP4 of one person -> front-end -> BioHumanNet in overlapping windows ->
a predicted trial NetCDF (dataset spec, `source: predicted`), a plot (.png) and an overlay video
(.mp4: the predicted joints drawn on the frames, activation bars beside them).

The model runs at its training frame rate (`cfg["fps"]`, default 30 fps, the rendering default):
a faster video is subsampled to the nearest integer stride (a 60 fps video uses every 2nd frame),
and the outputs are at the processed frames' times. The subject is the generic Rajagopal2015
scaled uniformly to the given height; the pelvis starts at x = z = 0 and at the generic standing
pelvis height scaled by height.
"""

from __future__ import annotations

import hashlib
import json
import time as _time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from biohuman.errors import InputFormatError
from biohuman.nn.frontend import FeatureExtractor, iter_video
from biohuman.nn.model import BioHumanNet, matrix_to_pelvis_angles, rot6d_to_matrix

MODEL_FPS = 30.0
"""Frame rate a checkpoint is assumed to be trained at when its config has no `fps`."""
PELVIS_HEIGHT_GENERIC_M = 0.94
"""Standing pelvis height of the generic Rajagopal2015 (its default pelvis_ty), scaled by height."""
PELVIS_ANGLES = ("pelvis_tilt", "pelvis_list", "pelvis_rotation")

MEDIAPIPE_OF_JOINT: dict[str, int] = {
    "shoulder_l": 11, "shoulder_r": 12, "elbow_l": 13, "elbow_r": 14, "wrist_l": 15, "wrist_r": 16,
    "hip_l": 23, "hip_r": 24, "knee_l": 25, "knee_r": 26, "ankle_l": 27, "ankle_r": 28,
}
"""MediaPipe Pose landmark of each joint centre (MediaPipe's left = the subject's left); used to
place the predicted 3D joints on the image in the overlay."""

BONES: tuple[tuple[str, str], ...] = (
    ("pelvis", "hip_r"), ("hip_r", "knee_r"), ("knee_r", "ankle_r"), ("ankle_r", "mtp_r"),
    ("pelvis", "hip_l"), ("hip_l", "knee_l"), ("knee_l", "ankle_l"), ("ankle_l", "mtp_l"),
    ("pelvis", "lumbar"), ("lumbar", "shoulder_r"), ("shoulder_r", "elbow_r"), ("elbow_r", "wrist_r"),
    ("lumbar", "shoulder_l"), ("shoulder_l", "elbow_l"), ("elbow_l", "wrist_l"),
)
"""Segments drawn in the overlay (pairs of joint names)."""


# ------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start frames of windows of `window` frames every `stride` frames covering 0..n-1 (the last
    window ends at n)."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def run_windows(model: BioHumanNet, feats: dict[str, np.ndarray], height_m: float, *, window: int = 64,
                stride: int = 32, image_size: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Model outputs over a whole sequence of front-end arrays (T frames), computed in overlapping
    windows and blended with triangular weights. The root is stitched from per-frame displacements
    (so it is continuous across windows) and starts at 0. A model trained on mirror images
    (`cfg["test_time_mirror"]`) averages its outputs on the video and, mirrored back, on its
    mirror image (`biohuman.nn.mirror.mirrored_average`). Returns numpy arrays without the batch dim.
    """
    if getattr(model, "cfg", {}).get("test_time_mirror"):
        from biohuman.nn.mirror import mirrored_average

        size = {} if image_size is None else {"image_size": np.asarray(image_size)}
        return mirrored_average(lambda f, e: _run_windows_once(model, f, height_m, window, stride, image_size),
                                {**feats, **size}, model.cfg)
    return _run_windows_once(model, feats, height_m, window, stride, image_size)


def _run_windows_once(model: BioHumanNet, feats: Mapping[str, np.ndarray], height_m: float, window: int,
                      stride: int, image_size: np.ndarray | None) -> dict[str, np.ndarray]:
    """`run_windows` without test-time mirroring."""
    n = len(feats["time"])
    keys = [k for k in (*model.streams, "detected") if k in feats]
    starts = window_starts(n, window, stride)
    acc: dict[str, np.ndarray] = {}
    wsum = np.zeros(n)
    length = min(window, n)
    w = np.minimum(np.arange(1, length + 1), np.arange(length, 0, -1)).astype(np.float64)
    batch_size = 8
    with torch.inference_mode():
        for b0 in range(0, len(starts), batch_size):
            group = starts[b0:b0 + batch_size]
            batch = {k: torch.as_tensor(np.stack([feats[k][s:s + length] for s in group])) for k in keys}
            batch["mask"] = torch.ones(len(group), length, dtype=torch.bool)
            batch["height_m"] = torch.full((len(group),), float(height_m))
            if image_size is not None:
                batch["image_size"] = torch.as_tensor(np.asarray(image_size))[None].expand(len(group), -1)
            out = model(batch)
            for i, s in enumerate(group):
                for k, v in out.items():
                    if k == "joints":
                        continue
                    v = v[i].numpy().astype(np.float64)
                    if k == "root":  # per-frame displacement; frame 0 of a window has none
                        v = np.diff(v, axis=0, prepend=v[:1])
                    acc.setdefault(k, np.zeros((n, *v.shape[1:])))
                    ww = w.copy()
                    if k == "root" and s > 0:
                        ww[0] = 0.0
                    acc[k][s:s + length] += v * ww.reshape(-1, *[1] * (v.ndim - 1))
                    if k == "root":
                        acc.setdefault("_wroot", np.zeros(n))[s:s + length] += ww
                wsum[s:s + length] += w
    out_np: dict[str, np.ndarray] = {}
    for k, v in acc.items():
        if k == "_wroot":
            continue
        den = acc["_wroot"] if k == "root" else wsum
        out_np[k] = v / np.maximum(den, 1e-12).reshape(-1, *[1] * (v.ndim - 1))
    if "root" in out_np:
        out_np["root"][0] = 0.0
        out_np["root"] = np.cumsum(out_np["root"], axis=0)
    return out_np


# ------------------------------------------------------------------------------------------------
# NetCDF
# ------------------------------------------------------------------------------------------------


def predicted_dataset(model: BioHumanNet, out: dict[str, np.ndarray], time: np.ndarray, *, height_m: float,
                      mass_kg: float, detected: np.ndarray | None, trial_id: str, source_video: str,
                      checkpoint: str) -> xr.Dataset:
    """A spec-valid predicted trial from stitched model outputs (`run_windows`)."""
    from biohuman.io import spec
    from biohuman.provenance import provenance

    data: dict[str, Any] = {}
    coords: dict[str, Any] = {"time": ("time", np.asarray(time, np.float64), {"units": "s", "long_name": "time"})}
    n = len(time)
    if "coords" in out:
        rot = rot6d_to_matrix(torch.as_tensor(out["pelvis_rot6d"]))
        pelvis = matrix_to_pelvis_angles(rot).numpy()
        keep = [i for i, c in enumerate(model.coordinates) if c not in PELVIS_ANGLES]
        names = list(PELVIS_ANGLES) + [model.coordinates[i] for i in keep]
        angles = np.concatenate([pelvis, out["coords"][:, keep]], axis=1)
        data["joint_angle"] = (("time", "coordinate"), np.degrees(angles).astype(np.float32),
                               spec.attrs_for("joint_angle"))
        coords["coordinate"] = ("coordinate", np.array(names, dtype=object))
        trans = out["root"].copy()
        trans[:, 1] += PELVIS_HEIGHT_GENERIC_M * height_m / _generic_height()
        data["translation"] = (("time", "translational_coordinate"), trans.astype(np.float32),
                               spec.attrs_for("translation"))
        coords["translational_coordinate"] = ("translational_coordinate",
                                              np.array(["pelvis_tx", "pelvis_ty", "pelvis_tz"], dtype=object))
        fk = model.fk
        with torch.inference_mode():
            q = {c: torch.as_tensor(out["coords"][:, i]) for i, c in enumerate(model.coordinates)}
            joints = fk(q, scale=fk.scale_from_height(torch.full((n,), float(height_m), dtype=torch.float64)),
                        pelvis_rotation=rot.to(torch.float64), pelvis_translation=torch.as_tensor(trans))
        data["joint_position"] = (("time", "joint", "axis"), joints.numpy().astype(np.float32),
                                  spec.attrs_for("joint_position"))
        coords["joint"] = ("joint", np.array(fk.joints, dtype=object))
        coords["axis"] = ("axis", np.array(spec.AXES, dtype=object))
    if "activation" in out:
        act = np.clip(out["activation"], 0.0, 1.0).astype(np.float32)
        data["activation"] = (("time", "muscle"), act, spec.attrs_for("activation"))
        coords["muscle"] = ("muscle", np.array(model.muscles, dtype=object))
    if detected is not None:
        data["detected"] = (("time",), np.asarray(detected).astype(np.int8),
                            {"units": "1", "long_name": "the pose front-end found a person in the frame",
                             "flag_values": np.array([0, 1], np.int8), "flag_meanings": "missed detected"})
    cfg_hash = hashlib.sha256(json.dumps(model.cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
    attrs = {
        "spec_version": spec.SPEC_VERSION, "trial_id": trial_id, "subject_id": "unknown", "motion_type": "unknown",
        "source": "predicted", "model_name": "Rajagopal2015",
        "model_path": f"Rajagopal2015 (generic, scaled uniformly to {height_m:.3f} m)",
        "subject_mass_kg": float(mass_kg), "subject_height_m": float(height_m),
        **provenance(cfg_hash, f"biohuman_net ({Path(checkpoint).name}, front-end {model.cfg['frontend']})"),
        "qc_status": "pass", "status": "ok", "video": source_video,
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _generic_height() -> float:
    from biohuman.motion.library import GENERIC_HEIGHT_M

    return GENERIC_HEIGHT_M


# ------------------------------------------------------------------------------------------------
# Plot and overlay
# ------------------------------------------------------------------------------------------------


def plot_prediction(ds: xr.Dataset, out_png: str | Path) -> Path:
    """Figure of a predicted trial: sagittal joint angles and the activation heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from biohuman.io.atomic import atomic_path

    t = ds.time.to_numpy()
    fig, ax = plt.subplots(2, 1, figsize=(9, 8), sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    if "joint_angle" in ds:
        for c in ("hip_flexion_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "knee_angle_l"):
            if c in ds.coordinate.values:
                ax[0].plot(t, ds.joint_angle.sel(coordinate=c), label=c)
        ax[0].legend(fontsize=8)
    ax[0].set_ylabel("angle (deg)")
    if "activation" in ds:
        im = ax[1].imshow(ds.activation.to_numpy().T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="magma",
                          extent=[t[0], t[-1], 0, ds.sizes["muscle"]])
        ax[1].set_yticks(np.arange(0, ds.sizes["muscle"], 8) + 0.5, ds.muscle.values[::8], fontsize=7)
        fig.colorbar(im, ax=ax[1], label="activation", orientation="horizontal", pad=0.12)
    ax[1].set_xlabel("time (s)")
    fig.suptitle(f"predicted from {Path(str(ds.attrs.get('video', ''))).name}")
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
    plt.close(fig)
    return out_png


def fit_affine_camera(joints3d: np.ndarray, uv: np.ndarray, weight: np.ndarray) -> np.ndarray | None:
    """Least-squares affine camera (2, 4) mapping 3D points (P, 3) to image points (P, 2) with
    weights (P,); None when fewer than 4 points have weight."""
    keep = weight > 0.3
    if keep.sum() < 4:
        return None
    x = np.concatenate([joints3d[keep], np.ones((keep.sum(), 1))], axis=1)
    sw = np.sqrt(weight[keep])[:, None]
    a, *_ = np.linalg.lstsq(x * sw, uv[keep] * sw, rcond=None)
    return a.T


def write_overlay(video: str | Path, frame_index: np.ndarray, ds: xr.Dataset, landmarks: np.ndarray | None,
                  out_mp4: str | Path, fps: float, max_side: int = 640, muscles: int = 12) -> Path:
    """Overlay video: for each processed frame, the predicted skeleton placed on the person by an
    affine camera fitted to the MediaPipe landmarks (when detected), and a side panel of the most
    active muscles' activation bars. One output frame per NetCDF time."""
    import cv2

    from biohuman.render.video import VideoWriter

    joints = ds["joint_position"].to_numpy() if "joint_position" in ds else None
    jnames = [str(j) for j in ds.joint.values] if joints is not None else []
    act = ds["activation"].to_numpy() if "activation" in ds else None
    mnames = [str(m) for m in ds.muscle.values] if act is not None else []
    top = np.argsort(-act.mean(0))[:muscles] if act is not None else []
    pairs = [(jnames.index(a), jnames.index(b)) for a, b in BONES if a in jnames and b in jnames]
    corr = [(jnames.index(j), k) for j, k in MEDIAPIPE_OF_JOINT.items() if j in jnames]
    wanted = {int(f): i for i, f in enumerate(frame_index)}
    writer = None
    panel_w = 220
    step = int(np.diff(frame_index).min()) if len(frame_index) > 1 else 1
    for f, (img, _, _) in enumerate(iter_video(video, max_side, step=max(step, 1))):
        if img is None or f not in wanted:
            continue
        i = wanted[f]
        h, w = img.shape[:2]
        if writer is None:
            ow, oh = (w + panel_w) // 2 * 2, h // 2 * 2
            writer = VideoWriter(out_mp4, fps=fps, width=ow, height=oh, crf=23).__enter__()
        canvas = np.zeros((oh, ow, 3), np.uint8)
        frame = img[:oh, :min(w, ow - panel_w)].copy()
        if joints is not None and landmarks is not None and corr and landmarks[i, :, 3].max() > 0:
            j3 = joints[i, [c[0] for c in corr]]
            uv = landmarks[i, [c[1] for c in corr], :2] * np.array([w, h])
            cam = fit_affine_camera(j3, uv, landmarks[i, [c[1] for c in corr], 3])
            if cam is not None:
                p = np.concatenate([joints[i], np.ones((len(jnames), 1))], 1) @ cam.T
                for a, b in pairs:
                    cv2.line(frame, tuple(int(v) for v in p[a]), tuple(int(v) for v in p[b]), (0, 255, 255), 2)
                for q in p:
                    cv2.circle(frame, (int(q[0]), int(q[1])), 3, (255, 60, 60), -1)
        canvas[:frame.shape[0], :frame.shape[1]] = frame
        if act is not None:
            x0 = canvas.shape[1] - panel_w + 8
            row = max(12, min(22, (oh - 20) // max(len(top), 1)))
            cv2.putText(canvas, "activation", (x0, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            for r, m in enumerate(top):
                y = 22 + r * row
                cv2.rectangle(canvas, (x0 + 90, y), (x0 + 90 + int(110 * act[i, m]), y + row - 4), (80, 200, 80), -1)
                cv2.putText(canvas, mnames[m][:13], (x0, y + row - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                            (230, 230, 230), 1)
        writer.write(canvas)
    if writer is None:
        raise InputFormatError("video has no frames", video)
    writer.__exit__(None, None, None)
    return Path(out_mp4)


# ------------------------------------------------------------------------------------------------
# Whole video
# ------------------------------------------------------------------------------------------------


def predict_video(video: str | Path, checkpoint: str | Path, out_nc: str | Path, *, height_m: float = 1.70,
                  mass_kg: float = 70.0, plot: bool = True, overlay: bool = True, window: int | None = None,
                  threads: int | None = 1) -> dict[str, Any]:
    """Predict pose and muscle activations from a video of one person.

    video: any MP4 (PyAV reads it); checkpoint: a trained model (contract format);
    out_nc: the predicted trial (spec-validated, `source: predicted`); with plot / overlay also
    `<out>.png` and `<out>_overlay.mp4`. height_m, mass_kg: the subject (height scales the
    skeleton). window: frames per model window (default: the checkpoint's training window, else 64;
    half-overlapping).
    threads: torch intra-op threads meanwhile (default 1: the stages run in parallel instead, see
    `biohuman.nn.frontend.torch_threads`; None: leave torch's setting).
    Returns paths, frame counts and timings (seconds per stage, fps over the video's frames).
    """
    from biohuman.nn.frontend import torch_threads

    with torch_threads(threads):
        return _predict(Path(video), checkpoint, Path(out_nc), height_m=height_m, mass_kg=mass_kg, plot=plot,
                        overlay=overlay, window=window)


def video_features(video: str | Path, frontend: str, step: int) -> tuple[dict[str, np.ndarray], int]:
    """Front-end arrays of every `step`-th frame of a video, as the model is fed them, plus `time`
    (s), `frame_index` (into the video) and `image_size` [W, H]; and the number of video frames
    decoded. Shared by `biohuman predict` and the multi-view check, so both see the same detections."""
    ext = FeatureExtractor(frontend)
    times, index, size, scale, n_video = [], [], None, 1.0, 0
    try:
        for f, (img, t, size) in enumerate(iter_video(video, step=step)):
            n_video += 1
            if img is None:
                continue
            ext.add(img)
            times.append(t)
            index.append(f)
            scale = size[0] / img.shape[1]
    finally:
        ext.close()
    if not times:
        raise InputFormatError("video has no frames", video)
    feats = ext.result(scale)
    feats.update(time=np.asarray(times, np.float64), frame_index=np.asarray(index), image_size=np.asarray(size))
    return feats, n_video


def _predict(video: Path, checkpoint: str | Path, out_nc: Path, *, height_m: float, mass_kg: float, plot: bool,
             overlay: bool, window: int | None) -> dict[str, Any]:
    from biohuman.io.dataset import save_trial

    t0 = _time.perf_counter()
    if not video.is_file():
        raise InputFormatError("video file does not exist", video)
    model = BioHumanNet.from_checkpoint(checkpoint)
    model_fps = float(model.cfg.get("fps") or MODEL_FPS)
    train_cfg = (getattr(model, "checkpoint_info", {}) or {}).get("train_cfg") or {}
    window = int(window or model.cfg.get("window") or train_cfg.get("window") or 64)
    import av

    try:
        with av.open(str(video)) as c:
            rate = c.streams.video[0].average_rate
            video_fps = float(rate) if rate else model_fps
    except (av.error.FFmpegError, IndexError) as exc:  # type: ignore[attr-defined]
        raise InputFormatError(f"cannot read video: {exc}", video) from exc
    step = max(1, int(round(video_fps / model_fps)))
    feats, n_video = video_features(video, model.cfg["frontend"], step)
    index = feats["frame_index"]
    t_front = _time.perf_counter()
    out = run_windows(model, feats, height_m, window=window, stride=max(1, window // 2),
                      image_size=feats["image_size"])
    t_model = _time.perf_counter()
    ds = predicted_dataset(model, out, feats["time"], height_m=height_m, mass_kg=mass_kg,
                           detected=feats.get("detected"), trial_id=video.stem, source_video=str(video),
                           checkpoint=str(checkpoint))
    save_trial(ds, out_nc)
    t_nc = _time.perf_counter()
    result: dict[str, Any] = {"netcdf": out_nc, "n_video_frames": n_video, "n_frames": len(index), "stride": step,
                              "seconds_frontend": t_front - t0, "seconds_model": t_model - t_front,
                              "seconds_to_netcdf": t_nc - t0, "fps_to_netcdf": n_video / (t_nc - t0),
                              "detection_rate": float(np.mean(feats["detected"])) if "detected" in feats else None}
    if plot:
        result["plot"] = plot_prediction(ds, out_nc.with_suffix(".png"))
    if overlay:
        result["overlay"] = write_overlay(video, np.asarray(index), ds, feats.get("landmarks"),
                                          out_nc.with_name(f"{out_nc.stem}_overlay.mp4"), fps=video_fps / step)
    result["seconds_total"] = _time.perf_counter() - t0
    return result
