"""Baselines evaluated next to the end-to-end model.

- `MotionMean`: the training set's mean activation trajectory of each motion type over the
  movement phase (trial time normalised to [0, 1]), read at the test trial's phase. A motion type
  absent from training (the held-out-motions split) gets the mean over all training motions.
- Two-stage: a video -> pose model (`BioHumanNet` with the activation head off, trained on pose
  losses) and, trained separately on the labelled coordinates, `PoseToActivation`: a temporal
  convolution network from coordinates (and their frame-to-frame differences) to activations.
  At test time the second stage reads the first stage's predicted coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from biohuman.nn.model import ActivationBounds, CoordinateConvNet


class MotionMean:
    """Phase-aligned mean activation trajectory per motion type (see module doc)."""

    def __init__(self, n_phase: int = 101) -> None:
        self.phase = np.linspace(0.0, 1.0, n_phase)
        self.means: dict[str, np.ndarray] = {}
        self.overall: np.ndarray | None = None

    def fit(self, seqs: Sequence[Mapping[str, Any]]) -> "MotionMean":
        """seqs: training sequences with `motion`, `phase [F]`, `y_activation [F,M]`; each trial
        counts once (sequences of the same trial from other cameras are skipped)."""
        per_motion: dict[str, list[np.ndarray]] = {}
        seen = set()
        for s in seqs:
            if s["trial_id"] in seen:
                continue
            seen.add(s["trial_id"])
            a = np.asarray(s["y_activation"], np.float64)
            traj = np.stack([np.interp(self.phase, s["phase"], a[:, m]) for m in range(a.shape[1])], axis=1)
            per_motion.setdefault(str(s["motion"]), []).append(traj)
        if not per_motion:
            raise ValueError("MotionMean.fit: no training sequences")
        self.means = {k: np.mean(v, axis=0) for k, v in per_motion.items()}
        self.overall = np.mean([t for v in per_motion.values() for t in v], axis=0)
        return self

    def predict(self, motion: str, phase: np.ndarray) -> np.ndarray:
        """[F, M] activation at the given phases (in [0, 1]) for a motion type."""
        mean = self.means.get(str(motion), self.overall)
        assert mean is not None, "MotionMean.predict before fit"
        return np.stack([np.interp(phase, self.phase, mean[:, m]) for m in range(mean.shape[1])], axis=1
                        ).astype(np.float32)


class PoseToActivation(CoordinateConvNet):
    """Coordinates [B,T,C] (rad) -> activation [B,T,M] within each muscle's control bounds, with the
    non-causal dilated temporal convolution stack of `CoordinateConvNet`.

    Input: `batch["pose_coords"]` when present (the first stage's prediction at test time), else
    `batch["y_coords"]` (labels, training). During training, Gaussian noise of `input_noise_deg`
    is added to the coordinates so the second stage tolerates the first stage's errors.
    cfg: `n_coords`, `n_muscles`, `hidden` (channels), `layers`, `kernel`, `dropout`, `input_noise_deg`.
    """

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        C, M = int(cfg["n_coords"]), int(cfg["n_muscles"])
        super().__init__(C, M, hidden=int(cfg.get("hidden", 128)), layers=int(cfg.get("layers", 4)),
                         kernel=int(cfg.get("kernel", 5)), dropout=float(cfg.get("dropout", 0.1)))
        self.cfg = dict(cfg)
        self.noise = float(np.deg2rad(float(cfg.get("input_noise_deg", 0.0))))
        self.bounds = ActivationBounds(list(cfg.get("muscles") or [f"muscle{i}" for i in range(M)]),
                                       cfg.get("model_osim"))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        q = batch["pose_coords"] if "pose_coords" in batch else batch["y_coords"]   # [B,T,C]
        if self.training and self.noise > 0:
            q = q + self.noise * torch.randn_like(q)
        logits = self.logits(q, batch["height_m"], batch["mask"])
        return {"activation": self.bounds(logits)}                                   # [B,T,M], within bounds
