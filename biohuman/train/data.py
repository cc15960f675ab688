"""Training data: (trial, camera) sequences of cached front-end features with labels resampled to
the video frames, normalisation statistics from the training split only, and fixed-length padded
windows with a mask.

A *sequence* is a dict of numpy arrays over the F video frames of one camera of one trial:
inputs (the front-end npz keys: `landmarks [F,33,4]`, `world [F,33,3]`, `cnn [F,1280]`,
`bbox [F,4]`, `detected [F]`, whichever the front-end wrote) and labels `y_coords [F,C]` rad,
`y_pelvis_rot6d [F,6]`, `y_root [F,3]` m (pelvis translation relative to the first frame),
`y_joints [F,J,3]` m, `y_activation [F,M]`, plus `height_m` and ids (`trial_id`, `subject`,
`motion`, `camera`, `phase [F]` in [0, 1] over the trial's label time span). Pose labels are in
ground (OpenSim, y up) or, with `pose_frame: camera` (the default of the workflow), in each
frame's camera coordinates (`camera_frame_labels`); joint angles and activations do not depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from biohuman.errors import InputFormatError, SpecError
from biohuman.nn.predict import window_starts

INPUT_KEYS: tuple[str, ...] = ("landmarks", "world", "cnn", "bbox", "detected")
"""Front-end npz keys fed to the model (those present in the npz)."""
NORMALISED_KEYS: tuple[str, ...] = ("landmarks", "world", "cnn", "bbox")
"""Inputs z-scored with training-split statistics (`detected` stays 0/1)."""
LABEL_KEYS: tuple[str, ...] = ("y_coords", "y_pelvis_rot6d", "y_root", "y_joints", "y_activation")
PELVIS_ROTATIONS: tuple[str, ...] = ("pelvis_tilt", "pelvis_list", "pelvis_rotation")
MIN_STD = 1e-6


def predicted_coordinates(coordinates: Sequence[str]) -> list[str]:
    """The rotational coordinates a model predicts: every dataset coordinate except the pelvis
    rotations (predicted as a 6D rotation) and the coupled `*_beta` knee coordinates."""
    return [c for c in coordinates if c not in PELVIS_ROTATIONS and not c.endswith("_beta")]


def trial_table(manifest: str | Path, status: Sequence[str] = ("ok", "flagged")) -> pd.DataFrame:
    """Trials of a dataset manifest with the given statuses: trial_id, subject_id, motion_type,
    path (absolute). Raises InputFormatError when none is usable."""
    from biohuman.io.dataset import read_manifest

    manifest = Path(manifest)
    df = read_manifest(manifest)
    df = df[df.status.isin(list(status))].copy()
    if df.empty:
        raise InputFormatError(f"no trial with status in {list(status)}", manifest)
    df["path"] = [str((manifest.parent / p).resolve()) for p in df.path]
    return df[["trial_id", "subject_id", "motion_type", "path"]].sort_values("trial_id").reset_index(drop=True)


def _rot(axis: str, a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    rows = {"x": [[o, z, z], [z, c, -s], [z, s, c]], "y": [[c, z, s], [z, o, z], [-s, z, c]],
            "z": [[c, -s, z], [s, c, z], [z, z, o]]}[axis]
    return np.moveaxis(np.array(rows), (0, 1), (-2, -1))


def pelvis_rotation_matrix(tilt: np.ndarray, lst: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """[F,3,3] pelvis orientation in ground from the Rajagopal pelvis coordinates (rad): body-fixed
    Z (tilt), X (list), Y (rotation), as the model's CustomJoint orders them."""
    return _rot("z", tilt) @ _rot("x", lst) @ _rot("y", rot)


def rot6d(R: np.ndarray) -> np.ndarray:
    """[..., 6]: the first two columns of rotation matrices [..., 3, 3] (Zhou et al. 6D)."""
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def _interp(t_new: np.ndarray, t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear interpolation of y [N, ...] sampled at t onto t_new (per column)."""
    flat = y.reshape(len(t), -1).astype(np.float64)
    out = np.stack([np.interp(t_new, t, flat[:, k]) for k in range(flat.shape[1])], axis=1)
    return out.reshape((len(t_new),) + y.shape[1:]).astype(np.float32)


def load_labels(trial_nc: str | Path, coordinates: Sequence[str] | None = None) -> dict[str, Any]:
    """Labels of one trial resampled (linearly) to its video frames (see module doc for keys).
    coordinates: the predicted coordinates (default `predicted_coordinates` of the trial)."""
    from biohuman.io.dataset import open_trial

    trial_nc = Path(trial_nc)
    ds = open_trial(trial_nc, validate=False)
    if "video_time" not in ds:
        raise SpecError("trial has no video_time (not rendered)", trial_nc)
    t = ds["time"].to_numpy().astype(np.float64)
    tv = ds["video_time"].to_numpy().astype(np.float64)
    coords_all = [str(c) for c in ds["coordinate"].values]
    coordinates = list(coordinates) if coordinates is not None else predicted_coordinates(coords_all)
    missing = [c for c in list(coordinates) + list(PELVIS_ROTATIONS) if c not in coords_all]
    if missing:
        raise SpecError(f"trial lacks coordinates {missing}", trial_nc)
    ang = ds["joint_angle"].sel(coordinate=list(coordinates) + list(PELVIS_ROTATIONS)).to_numpy()
    ang = np.deg2rad(_interp(tv, t, np.nan_to_num(ang)).astype(np.float64))
    C = len(coordinates)
    R = pelvis_rotation_matrix(ang[:, C], ang[:, C + 1], ang[:, C + 2])
    tr = _interp(tv, t, ds["translation"].to_numpy())
    out = {
        "y_coords": ang[:, :C].astype(np.float32),
        "y_pelvis_rot6d": rot6d(R).astype(np.float32),
        "y_root": (tr - tr[:1]).astype(np.float32),
        "y_joints": _interp(tv, t, ds["joint_position"].to_numpy()),
        "y_activation": np.clip(_interp(tv, t, np.nan_to_num(ds["activation"].to_numpy())), 0.0, 1.0),
        "phase": ((tv - t[0]) / max(t[-1] - t[0], 1e-9)).astype(np.float32),
        "height_m": float(ds.attrs["subject_height_m"]),
        "trial_id": str(ds.attrs["trial_id"]),
        "subject": str(ds.attrs["subject_id"]),
        "motion": str(ds.attrs["motion_type"]),
        "cameras": [str(c) for c in ds["camera"].values] if "camera" in ds.coords else [],
        "coordinates": list(coordinates),
        "muscles": [str(m) for m in ds["muscle"].values],
        "joints": [str(j) for j in ds["joint"].values],
        "time": tv.astype(np.float32),
        "pelvis_position": _interp(tv, t, ds["joint_position"].sel(joint=str(ds["joint"].values[0])).to_numpy()),
        "pelvis_rotation": R.astype(np.float32),
    }
    if "camera_extrinsics" in ds:
        out["extrinsics"] = {str(c): ds["camera_extrinsics"].sel(camera=c).to_numpy().astype(np.float64)
                             for c in ds["camera"].values}
    return out


def camera_frame_labels(lab: Mapping[str, Any], camera: str) -> dict[str, np.ndarray]:
    """Pose labels of one camera's sequence in that camera's frame (x right, y down, z forward) at
    every frame, from the trial's ground -> camera `camera_extrinsics [F,4,4]`: a monocular video
    shows the body relative to the camera, not its heading in ground. Returns `y_joints` (camera
    coordinates, m), `y_pelvis_rot6d` (pelvis orientation in the camera frame) and `y_root` (the
    pelvis position in camera coordinates relative to the first frame, m)."""
    if "extrinsics" not in lab or camera not in lab["extrinsics"]:
        raise SpecError(f"trial {lab.get('trial_id')} has no camera_extrinsics for {camera!r}")
    E = np.asarray(lab["extrinsics"][camera], np.float64)                 # [F,4,4] ground -> camera
    Rc, tc = E[:, :3, :3], E[:, :3, 3]
    joints = np.einsum("fab,fjb->fja", Rc, np.asarray(lab["y_joints"], np.float64)) + tc[:, None]
    pelvis = np.einsum("fab,fb->fa", Rc, np.asarray(lab["pelvis_position"], np.float64)) + tc
    rot = Rc @ np.asarray(lab["pelvis_rotation"], np.float64)
    return {"y_joints": joints.astype(np.float32), "y_pelvis_rot6d": rot6d(rot).astype(np.float32),
            "y_root": (pelvis - pelvis[:1]).astype(np.float32)}


def features_path(results: str | Path, trial_id: str, camera: str) -> Path:
    """`{results}/features/{subject}/{trial}/{camera}.npz` for trial_id `subject/trial`."""
    return Path(results) / "features" / trial_id / f"{camera}.npz"


def load_features(npz: str | Path, n_frames: int | None = None) -> dict[str, np.ndarray]:
    """The model-input arrays of a front-end cache file (float32; `detected` as 0/1) plus
    `image_size (2,)` (px, W and H) when the cache has it."""
    npz = Path(npz)
    if not npz.is_file():
        raise InputFormatError("front-end feature cache is missing", npz)
    with np.load(npz, allow_pickle=False) as z:
        out = {k: np.nan_to_num(np.asarray(z[k], np.float32)) for k in INPUT_KEYS if k in z.files}
        size = np.asarray(z["image_size"], np.float32).reshape(-1)[:2] if "image_size" in z.files else None
    if not out:
        raise InputFormatError(f"no model input among {INPUT_KEYS}", npz)
    lens = {k: len(v) for k, v in out.items()}
    if len(set(lens.values())) != 1 or (n_frames is not None and set(lens.values()) != {n_frames}):
        raise InputFormatError(f"feature lengths {lens} do not match the trial's {n_frames} video frames", npz)
    if size is not None:
        out["image_size"] = size
    return out


def compute_norm(seqs: Sequence[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (mean, std) of each normalised input over every frame of `seqs` (pass the
    training split only). std is floored at MIN_STD."""
    norm = {}
    for k in NORMALISED_KEYS:
        if k in seqs[0]:
            x = np.concatenate([np.asarray(s[k], np.float64) for s in seqs])
            norm[k] = (x.mean(0).astype(np.float32), np.maximum(x.std(0), MIN_STD).astype(np.float32))
    return norm


def normalise(seq: Mapping[str, Any], norm: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Model inputs of one sequence, z-scored with `norm`."""
    out = {}
    for k in INPUT_KEYS:
        if k in seq:
            x = np.asarray(seq[k], np.float32)
            out[k] = (x - norm[k][0]) / norm[k][1] if k in norm else x
    return out


windows = window_starts
"""Start frames of training windows: every `stride`, plus a last one ending at the sequence end
(short sequences give one padded window); the same windows `biohuman predict` runs."""


def window_item(seq: Mapping[str, Any], inputs: Mapping[str, np.ndarray], start: int, window: int,
                label_keys: Sequence[str] = LABEL_KEYS) -> dict[str, torch.Tensor]:
    """One padded window as tensors: inputs, labels, `mask [W]` bool (True = real frame),
    `height_m` scalar. Padded frames are zeros."""
    n = len(seq["time"])
    stop = min(start + window, n)
    real = stop - start
    item: dict[str, torch.Tensor] = {}
    for k, v in list(inputs.items()) + [(k, seq[k]) for k in label_keys if k in seq]:
        x = np.zeros((window,) + np.shape(v)[1:], np.float32)
        x[:real] = v[start:stop]
        item[k] = torch.from_numpy(x)
    mask = np.zeros(window, bool)
    mask[:real] = True
    item["mask"] = torch.from_numpy(mask)
    item["height_m"] = torch.tensor(float(seq["height_m"]), dtype=torch.float32)
    if "image_size" in seq:
        item["image_size"] = torch.as_tensor(np.asarray(seq["image_size"], np.float32))
    return item


class WindowedSequences(Dataset):
    """Fixed-length padded windows over in-memory sequences with inputs z-scored by `norm` (pass
    {} for a model that normalises its own inputs). Item: see `window_item`, plus `seq_index` and
    `start` (int64)."""

    def __init__(self, seqs: Sequence[Mapping[str, Any]], norm: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 window: int, stride: int) -> None:
        if window <= 0 or stride <= 0:
            raise ValueError(f"window and stride must be positive (window={window}, stride={stride})")
        self.seqs = list(seqs)
        self.window = int(window)
        self.inputs = [normalise(s, norm) for s in self.seqs]
        self.index = [(i, st) for i, s in enumerate(self.seqs) for st in windows(len(s["time"]), window, stride)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        si, st = self.index[i]
        item = window_item(self.seqs[si], self.inputs[si], st, self.window)
        item["seq_index"] = torch.tensor(si, dtype=torch.int64)
        item["start"] = torch.tensor(st, dtype=torch.int64)
        return item
