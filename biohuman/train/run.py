"""Orchestration of the training workflow from the validated config: splits, the sequences of a
split part, and the three trained models of each split.

Trained methods (`METHODS`), each at `{results}/train/{split}/{method}/model.pt`:
- `end_to_end`: BioHumanNet with both heads, all loss terms.
- `pose_stage`: BioHumanNet with the activation head off (first stage of the two-stage baseline).
- `pose_to_activation`: PoseToActivation on labelled coordinates (second stage).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from biohuman.errors import ConfigError, InputFormatError
from biohuman.io.atomic import atomic_write_text
from biohuman.train.augment import augment_sequences
from biohuman.train.data import (camera_frame_labels, compute_norm, features_path, load_features, load_labels,
                                 trial_table)
from biohuman.train.splits import Split, make_splits

METHODS: tuple[str, ...] = ("end_to_end", "pose_stage", "pose_to_activation")
log = logging.getLogger("biohuman.train")


def train_seed(config: Mapping[str, Any]) -> int:
    """train.seed, or the master seed when null."""
    s = config["train"].get("seed")
    return int(config["seed"] if s is None else s)


def dataset_trials(config: Mapping[str, Any]) -> pd.DataFrame:
    """Usable trials (manifest status ok / flagged) of `{results}/dataset/manifest.csv`."""
    return trial_table(Path(config["results"]) / "dataset" / "manifest.csv")


def write_splits(config: Mapping[str, Any], out: str | Path) -> dict[str, Split]:
    """Both splits (leak-checked) as JSON at `out`."""
    splits = make_splits(dataset_trials(config), config["train"]["splits"], train_seed(config))
    atomic_write_text(out, json.dumps({k: v.to_dict() for k, v in splits.items()}, indent=1))
    return splits


def read_splits(path: str | Path) -> dict[str, Split]:
    return {k: Split.from_dict(v) for k, v in json.loads(Path(path).read_text()).items()}


def sequences(config: Mapping[str, Any], trial_ids: list[str], trials: pd.DataFrame | None = None,
              coordinates: list[str] | None = None) -> list[dict[str, Any]]:
    """(trial, camera) sequences of the given trials; a camera whose feature cache is missing or
    unusable is skipped with a warning (its status record says why)."""
    trials = dataset_trials(config) if trials is None else trials
    rows = trials.set_index("trial_id").loc[list(trial_ids)]
    cams = config["train"].get("cameras") or None
    out = []
    for tid, row in rows.sort_index().iterrows():
        lab = load_labels(row.path, coordinates)
        for cam in cams or lab["cameras"]:
            try:
                feats = load_features(features_path(config["results"], str(tid), cam), len(lab["time"]))
            except InputFormatError as exc:
                log.warning("skipping %s %s: %s", tid, cam, exc)
                continue
            seq = {**lab, **feats, "camera": cam}
            if config["train"].get("pose_frame", "camera") == "camera":
                seq.update(camera_frame_labels(lab, cam))
            out.append(seq)
    if not out:
        raise InputFormatError(f"no usable (trial, camera) sequence among {len(trial_ids)} trials")
    return out


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """The network a checkpoint's model_cfg describes (`arch`: biohumannet | pose_to_activation)."""
    arch = cfg.get("arch", "biohumannet")
    if arch == "pose_to_activation":
        from biohuman.train.baselines import PoseToActivation

        return PoseToActivation(cfg)
    if arch == "biohumannet":
        from biohuman.nn.model import BioHumanNet

        return BioHumanNet(cfg)
    raise ConfigError(f"unknown model arch {arch!r}")


def model_cfg(config: Mapping[str, Any], method: str, seq: Mapping[str, Any]) -> dict[str, Any]:
    """model_cfg of a method from the config and one sequence (names of coordinates, muscles, joints);
    `test_time_mirror` and `pose_frame` when trained on mirror images with test-time mirroring on."""
    tc = config["train"]
    aug = tc.get("augment") or {}
    tta = {"test_time_mirror": True, "pose_frame": tc.get("pose_frame", "camera")} if (
        aug.get("mirror") and aug.get("test_time_mirror", True)) else {}
    if method == "pose_to_activation":
        return {"arch": "pose_to_activation", **dict(tc["pose_to_activation"]), "n_coords": len(seq["coordinates"]),
                "n_muscles": len(seq["muscles"]), "coordinates": seq["coordinates"], "muscles": seq["muscles"], **tta}
    heads = {"pose": True, "activation": method == "end_to_end"}
    arch = dict(tc["model"])
    if method != "end_to_end":
        arch.pop("pose_branch", None)  # the pose stage has no activation head to condition
    return {"arch": "biohumannet", **arch, "coordinates": seq["coordinates"], "muscles": seq["muscles"],
            "joints": seq["joints"], "frontend": tc["frontend"], "heads": heads, **tta}


def trainer_cfg(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """Trainer settings of a method (train.* plus per-method epoch override)."""
    tc = config["train"]
    keys = ("batch_size", "lr", "weight_decay", "warmup_steps", "grad_clip", "window", "stride", "device",
            "num_threads", "progress", "deterministic")
    out = {k: tc[k] for k in keys}
    out["epochs"] = int(tc["epochs"] if method != "pose_to_activation" else tc["pose_to_activation_epochs"])
    out["seed"] = train_seed(config)
    return out


def loss_weights(config: Mapping[str, Any], method: str) -> dict[str, float]:
    """Loss weights: train.loss; the pose stage drops activation terms, the second stage keeps only them."""
    w = dict(config["train"]["loss"])
    if method == "pose_stage":
        return {k: v for k, v in w.items() if not k.startswith("activation")}
    if method == "pose_to_activation":
        return {k: v for k, v in w.items() if k.startswith("activation")}
    return w


def input_norm(mcfg: Mapping[str, Any], train_seqs: list[dict[str, Any]]) -> dict[str, Any]:
    """Normalisation statistics from the training sequences: BioHumanNet's own stream statistics
    (biohuman.nn.model.input_norm_stats), none for the second stage (its inputs are angles), else
    per-channel statistics of the raw inputs."""
    if mcfg.get("arch") == "pose_to_activation":
        return {}
    if mcfg.get("arch") == "biohumannet":
        from biohuman.nn.model import input_norm_stats

        return input_norm_stats(train_seqs, mcfg["frontend"])
    return compute_norm(train_seqs)


def train_method(config: Mapping[str, Any], splits_json: str | Path, split: str, method: str,
                 out_dir: str | Path) -> dict[str, Any]:
    """Train one method on one split (norm statistics from that split's training part only, after
    any augmentation: `train.augment`)."""
    from biohuman.train.trainer import train_model

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known: {METHODS}")
    sp = read_splits(splits_json)[split]
    trials = dataset_trials(config)
    tr = augment_sequences(sequences(config, list(sp.train), trials), config["train"].get("augment"),
                           config["train"].get("pose_frame", "camera"))
    va = sequences(config, list(sp.val), trials)
    mcfg = model_cfg(config, method, tr[0])
    norm = input_norm(mcfg, tr)
    return train_model(build_model, mcfg, tr, va, norm, trainer_cfg(config, method),
                       loss_weights(config, method), out_dir, kind=f"{split}/{method}",
                       resume=bool(config["train"]["resume"]))


def train_cameras(config: Mapping[str, Any]) -> list[str]:
    """Camera names whose features the workflow extracts: train.cameras, else every rendered camera."""
    if config["train"].get("cameras"):
        return list(config["train"]["cameras"])
    from biohuman.render.camera import camera_config

    return [f"cam{i}" for i in range(int(camera_config(config["render"].get("cameras"))["count"]))]


def step_features(*, upstream: Mapping[str, Any], log: logging.Logger, trial_nc: str | Path, camera: str,
                  out_npz: str | Path, frontend: str) -> dict[str, Any]:
    """Workflow step (run_step signature): cache one camera's front-end features of a trial."""
    from biohuman.nn.frontend import cache_features

    log.info("features %s %s (%s)", trial_nc, camera, frontend)
    cache_features(trial_nc, camera, out_npz, frontend)
    with np.load(out_npz) as z:
        n = int(len(z["time"]))
        det = float(np.mean(z["detected"])) if "detected" in z.files else float("nan")
    return {"outputs": {"features": out_npz}, "extra": {"n_frames": n, "detected_fraction": det},
            "message": f"{n} frames, body detected in {det:.0%}" if det == det else f"{n} frames"}


def main(argv: list[str] | None = None) -> int:
    """`python -m biohuman.train.run CONFIG SPLIT METHOD` trains one method on one split into
    `{results}/train/{split}/{method}` (splits written first when missing). Under
    `torchrun --nproc_per_node N -m biohuman.train.run ...` it trains with DDP."""
    import argparse

    from biohuman.config import load_config

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("config", type=Path)
    ap.add_argument("split")
    ap.add_argument("method", choices=METHODS)
    ap.add_argument("--results", help="override the config's results folder")
    a = ap.parse_args(argv)
    config = load_config(a.config)
    if a.results:
        config["results"] = a.results
    splits = Path(config["results"]) / "train" / "splits.json"
    if not splits.is_file():
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            write_splits(config, splits)
        else:
            import time

            while not splits.is_file():
                time.sleep(0.5)
    logging.basicConfig(level=logging.INFO)
    res = train_method(config, splits, a.split, a.method, Path(config["results"]) / "train" / a.split / a.method)
    print(f"best validation loss {res['best_val']:.6f} after {len(res['history'])} epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
