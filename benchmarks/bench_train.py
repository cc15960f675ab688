"""Benchmark: training throughput of the configured BioHumanNet on CPU, and the projected training
time of a configuration.

Times optimizer steps (forward + backward + AdamW, all loss terms) on random inputs shaped like the
front-end cache (landmarks, world, cnn, detected) at the config's window and batch size, with
`--threads` torch threads, after `--warmup` steps. Projection: steps per epoch from the number of
(trial, camera) sequences of a split's training part (`--sequences`, e.g. 5 training subjects x 8
motions x 2 cameras = 80) and `--frames` per sequence, times epochs, for the video models of both
splits (end_to_end + pose_stage = 4 trainings; the second stage is small and not counted).

Usage: python benchmarks/bench_train.py [--config configs/full.yaml] [--sequences 80] [--frames 60]
The last line printed is exactly: s_per_step=<x> projected_training_h=<y>
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from biohuman.config import validate_config
from biohuman.train.data import predicted_coordinates, windows
from biohuman.train.losses import CompositeLoss


RAJAGOPAL_COORDINATES = (
    "pelvis_tilt pelvis_list pelvis_rotation hip_flexion_r hip_adduction_r hip_rotation_r knee_angle_r "
    "knee_angle_r_beta ankle_angle_r subtalar_angle_r mtp_angle_r hip_flexion_l hip_adduction_l hip_rotation_l "
    "knee_angle_l knee_angle_l_beta ankle_angle_l subtalar_angle_l mtp_angle_l lumbar_extension lumbar_bending "
    "lumbar_rotation arm_flex_r arm_add_r arm_rot_r elbow_flex_r pro_sup_r wrist_flex_r wrist_dev_r arm_flex_l "
    "arm_add_l arm_rot_l elbow_flex_l pro_sup_l wrist_flex_l wrist_dev_l").split()
"""The dataset's `coordinate` names (Rajagopal2015)."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=Path("configs/full.yaml"))
    ap.add_argument("--sequences", type=int, default=80)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    base = yaml.safe_load(Path("config.yaml").read_text())
    over = yaml.safe_load(a.config.read_text()) if a.config != Path("config.yaml") else {}
    for k, v in over.items():  # Snakemake-style merge of --configfile over config.yaml
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **{kk: ({**base[k].get(kk, {}), **vv} if isinstance(vv, dict) else vv)
                                     for kk, vv in v.items()}}
        else:
            base[k] = v
    tc = validate_config(base)["train"]
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    from biohuman.nn.fk import ForwardKinematics
    from biohuman.nn.model import BioHumanNet

    fk = ForwardKinematics()
    coords = predicted_coordinates(RAJAGOPAL_COORDINATES)
    muscles = [f"m{i}" for i in range(80)]
    cfg = {**tc["model"], "coordinates": coords, "muscles": muscles, "joints": fk.joints, "frontend": tc["frontend"]}
    model = BioHumanNet(cfg)
    loss = CompositeLoss(tc["loss"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    B, T, J = int(tc["batch_size"]), int(tc["window"]), len(fk.joints)
    batch = {"landmarks": torch.rand(B, T, 33, 4), "world": torch.randn(B, T, 33, 3), "cnn": torch.randn(B, T, 1280),
             "detected": torch.ones(B, T), "mask": torch.ones(B, T, dtype=torch.bool), "height_m": torch.full((B,), 1.7),
             "y_coords": torch.zeros(B, T, len(coords)), "y_pelvis_rot6d": torch.zeros(B, T, 6),
             "y_root": torch.zeros(B, T, 3), "y_joints": torch.zeros(B, T, J, 3), "y_activation": torch.rand(B, T, 80)}
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        total, _ = loss(model(batch), batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    s_step = sum(times) / len(times)
    n_windows = a.sequences * len(windows(a.frames, T, int(tc["stride"])))
    steps_epoch = -(-n_windows // B)
    hours = 4 * int(tc["epochs"]) * steps_epoch * s_step / 3600
    print(f"config {a.config}: batch {B} x window {T}, {steps_epoch} steps/epoch ({n_windows} windows), "
          f"{tc['epochs']} epochs, {a.threads} threads")
    print(f"s_per_step={s_step:.3f} projected_training_h={hours:.2f}")


if __name__ == "__main__":
    main()
