"""A tiny synthetic training dataset (trial NetCDFs + manifest + front-end feature caches) and a
tiny model of the BioHumanNet contract shape, for the training tests.

Labels are smooth functions of a motion-specific phase; activations are a fixed function of the
coordinates (so a model can learn them); the features are a noisy, camera-dependent linear image of
the joint positions and coordinates (so video features carry the pose).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from biohuman.io.dataset import write_manifest

COORDS = ["pelvis_tilt", "pelvis_list", "pelvis_rotation", "hip_flexion_r", "knee_angle_r", "knee_angle_r_beta",
          "ankle_angle_r", "hip_flexion_l", "knee_angle_l", "ankle_angle_l"]
JOINTS = ["pelvis", "hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l"]
MUSCLES = [f"m{i}" for i in range(6)]
MOTIONS = {"walk": (1.0, 0.0), "run": (2.0, 0.5), "squat": (0.5, 1.0), "cmj": (0.8, 1.5)}


def _trial(subject: int, motion: str, rng: np.random.Generator) -> xr.Dataset:
    freq, off = MOTIONS[motion]
    T = 120
    t = np.arange(T) / 100.0
    ph = 2 * np.pi * freq * t + off + 0.1 * subject
    C = len(COORDS)
    ang = np.stack([30 * np.sin(ph + 0.4 * k) * (1 + 0.05 * subject) for k in range(C)], axis=1)
    ang[:, :3] *= 0.2
    tr = np.stack([0.5 * t, 0.9 + 0.02 * np.sin(ph), 0.0 * t], axis=1)
    jp = np.stack([np.stack([np.cos(ph + j) * 0.2 + j * 0.1, 0.9 - 0.1 * j + 0.0 * ph, np.sin(ph + j) * 0.1], axis=1)
                   for j in range(len(JOINTS))], axis=1) + tr[:, None]
    W = np.random.default_rng(7).normal(size=(C, len(MUSCLES))) / 40.0
    act = 1 / (1 + np.exp(-(np.deg2rad(ang) @ W * 6)))
    vt = np.arange(0, t[-1], 1 / 30.0)
    ext = np.zeros((2, len(vt), 4, 4))  # ground -> camera: cam0 looks along -x, cam1 along +z
    for c, a in enumerate((np.pi / 2, np.pi)):
        ext[c, :, :3, :3] = [[np.cos(a), 0, -np.sin(a)], [0, -1, 0], [np.sin(a), 0, np.cos(a)]]
        ext[c, :, :3, 3] = [0.0, 1.0, 4.0]
        ext[c, :, 3, 3] = 1.0
    ds = xr.Dataset(
        {"joint_angle": (("time", "coordinate"), ang.astype(np.float32)),
         "translation": (("time", "translational_coordinate"), tr.astype(np.float32)),
         "joint_position": (("time", "joint", "axis"), jp.astype(np.float32)),
         "activation": (("time", "muscle"), act.astype(np.float32)),
         "video_time": (("frame",), vt.astype(np.float32)),
         "video_file": (("camera",), np.array(["a.mp4", "b.mp4"])),
         "camera_extrinsics": (("camera", "frame", "row4", "col4"), ext)},
        coords={"time": t, "coordinate": COORDS, "translational_coordinate": ["pelvis_tx", "pelvis_ty", "pelvis_tz"],
                "joint": JOINTS, "axis": ["x", "y", "z"], "muscle": MUSCLES, "camera": ["cam0", "cam1"]},
        attrs={"trial_id": f"S{subject}/{motion}", "subject_id": f"S{subject}", "motion_type": motion,
               "subject_height_m": 1.6 + 0.05 * subject, "subject_mass_kg": 70.0},
    )
    return ds


def make_dataset(root: Path, n_subjects: int = 4, motions: tuple[str, ...] = ("walk", "run", "squat"),
                 seed: int = 0) -> Path:
    """Write `{root}/dataset/{S}/{motion}.nc`, the manifest and `{root}/features/...npz`; returns root."""
    rng = np.random.default_rng(seed)
    records = []
    for s in range(n_subjects):
        for m in motions:
            ds = _trial(s, m, rng)
            path = root / "dataset" / f"S{s}" / f"{m}.nc"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.to_netcdf(path, engine="netcdf4")
            records.append({"trial_id": ds.attrs["trial_id"], "subject_id": ds.attrs["subject_id"],
                            "motion_type": m, "source": "synthetic", "status": "ok", "path": str(path),
                            "n_frames": ds.sizes["time"], "duration_s": 1.19, "qc_status": "ok", "message": ""})
            vt = ds.video_time.values
            t = ds.time.values
            jp = np.stack([np.interp(vt, t, ds.joint_position.values.reshape(len(t), -1)[:, k])
                           for k in range(len(JOINTS) * 3)], 1)
            ang = np.stack([np.interp(vt, t, ds.joint_angle.values[:, k]) for k in range(len(COORDS))], 1)
            for c, cam in enumerate(("cam0", "cam1")):
                crng = np.random.default_rng(100 + c)
                x = np.concatenate([jp, np.deg2rad(ang)], 1)
                cnn = x @ crng.normal(size=(x.shape[1], 1280)) + 0.01 * rng.normal(size=(len(vt), 1280))
                pts = (jp.reshape(len(vt), -1, 3) @ crng.normal(size=(3, 3)))[:, :, :3]
                mix = crng.uniform(size=(33, pts.shape[1]))
                mix /= mix.sum(1, keepdims=True)
                p33 = np.einsum("kj,tja->tka", mix, pts) + 0.3 * crng.normal(size=(1, 33, 3))
                lm = np.concatenate([0.5 + 0.2 * p33[..., :2], p33[..., 2:], np.ones((len(vt), 33, 1))], -1)
                out = root / "features" / f"S{s}" / m / f"{cam}.npz"
                out.parent.mkdir(parents=True, exist_ok=True)
                np.savez(out, time=vt, cnn=cnn.astype(np.float32), landmarks=lm.astype(np.float32),
                         world=p33.astype(np.float32), detected=np.ones(len(vt), bool), frontend="test",
                         image_size=np.array([64, 64]))
    write_manifest(records, root / "dataset" / "manifest.csv")
    return root


class TinyNet(nn.Module):
    """Contract-shaped stand-in for BioHumanNet: a GRU over the concatenated inputs with the
    contract's outputs (coords, pelvis_rot6d, root, joints, activation) and `heads` switches."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        H = int(cfg.get("hidden", 32))
        n_in = int(cfg.get("n_inputs", 1280 + 33 * 4 + 1))
        self.gru = nn.GRU(n_in, H, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.1)
        heads = cfg.get("heads", {"pose": True, "activation": True})
        self.pose = heads.get("pose", True)
        self.act = heads.get("activation", True)
        C, J, M = len(cfg["coordinates"]), len(cfg["joints"]), len(cfg["muscles"])
        self.J = J
        if self.pose:
            self.head_pose = nn.Linear(2 * H, C + 6 + 3 + 3 * J)
        if self.act:
            self.head_act = nn.Linear(2 * H, M)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = torch.cat([batch["cnn"], batch["landmarks"].flatten(2), batch["detected"].unsqueeze(-1)], -1)
        x = x * batch["mask"].unsqueeze(-1)
        h = self.drop(self.gru(x)[0])
        B, T = h.shape[:2]
        out: dict[str, torch.Tensor] = {}
        if self.pose:
            p = self.head_pose(h)
            C = len(self.cfg["coordinates"])
            out["coords"] = p[..., :C]
            out["pelvis_rot6d"] = p[..., C:C + 6]
            out["root"] = p[..., C + 6:C + 9]
            out["joints"] = p[..., C + 9:].reshape(B, T, self.J, 3)
        if self.act:
            out["activation"] = torch.sigmoid(self.head_act(h))
        return out


def tiny_build(cfg: Mapping[str, Any]) -> nn.Module:
    """build_model replacement for tests: TinyNet for biohumannet, the real second stage otherwise."""
    if cfg.get("arch") == "pose_to_activation":
        from biohuman.train.baselines import PoseToActivation

        return PoseToActivation(cfg)
    return TinyNet(cfg)
