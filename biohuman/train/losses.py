"""Training losses as named modules; `CompositeLoss` weights them by name from the config.

Every term compares a model output (`coords`, `joints`, `activation`, ...) with the batch label
`y_<name>` over real frames only (`mask [B,T]`); terms whose output the model does not produce
(a head switched off) are skipped. Terms:

- `coords`: mean squared error of the coordinates (rad^2).
- `pelvis_rot6d`: mean squared error of the 6D pelvis rotation.
- `root`: mean squared error of the pelvis translation relative to the first frame (m^2).
- `joints`: mean squared error of joint positions relative to the root joint (index 0) (m^2).
- `activation`: mean squared error of activations.
- `<name>_vel`: the same on frame-to-frame differences (pairs of consecutive real frames).
- `activation_pcc`: 1 - Pearson correlation over time, per (sequence, muscle) whose label varies.
- `activation_log`: mean squared error of log(activation + 0.01): relative accuracy where muscles
  are near their floor, which plain MSE ignores (0.012 vs 0.010 costs 4e-6) but per-muscle
  normalised errors (nRMSE) of nearly silent muscles are made of.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of err [B,T,...] over real frames (mask [B,T]) and every trailing element."""
    m = mask.to(err.dtype).reshape(mask.shape + (1,) * (err.dim() - 2))
    per = err[0, 0].numel() if err.dim() > 2 else 1
    return (err * m).sum() / (m.sum() * per).clamp_min(1.0)


def _prep(name: str, x: torch.Tensor) -> torch.Tensor:
    """Joints are compared relative to the root joint."""
    return x - x[:, :, :1] if name == "joints" else x


class MaskedMSE(nn.Module):
    """Mean squared error of output `name` against `y_<name>` over real frames."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        p, y = _prep(self.name, out[self.name]), _prep(self.name, batch[f"y_{self.name}"])
        return _masked_mean((p - y) ** 2, batch["mask"])


class VelocityMSE(nn.Module):
    """Mean squared error of frame-to-frame differences of output `name` (both frames real)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        p, y = _prep(self.name, out[self.name]), _prep(self.name, batch[f"y_{self.name}"])
        m = batch["mask"][:, 1:] & batch["mask"][:, :-1]
        return _masked_mean(((p[:, 1:] - p[:, :-1]) - (y[:, 1:] - y[:, :-1])) ** 2, m)


class PearsonLoss(nn.Module):
    """1 - Pearson correlation over real frames, per (sequence, channel) of output `name` [B,T,M],
    averaged over the pairs whose label varies (SD > eps)."""

    def __init__(self, name: str = "activation", eps: float = 1e-4) -> None:
        super().__init__()
        self.name = name
        self.eps = eps

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        p, y = out[self.name], batch[f"y_{self.name}"]
        m = batch["mask"].to(p.dtype).unsqueeze(-1)                      # [B,T,1]
        n = m.sum(1).clamp_min(1.0)                                       # [B,1]
        pc = (p - (p * m).sum(1, keepdim=True) / n.unsqueeze(1)) * m
        yc = (y - (y * m).sum(1, keepdim=True) / n.unsqueeze(1)) * m
        cov = (pc * yc).sum(1)                                            # [B,M]
        sp = (pc.pow(2).sum(1) + 1e-12).sqrt()
        sy = (yc.pow(2).sum(1) + 1e-12).sqrt()
        r = cov / (sp * sy)
        valid = (sy / n.sqrt()) > self.eps
        if not valid.any():
            return p.sum() * 0.0
        return (1.0 - r[valid]).mean()


class LogMSE(nn.Module):
    """Mean squared error of log(x + offset) of output `name` against `y_<name>` over real frames."""

    def __init__(self, name: str = "activation", offset: float = 0.01) -> None:
        super().__init__()
        self.name = name
        self.offset = offset

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        p, y = out[self.name], batch[f"y_{self.name}"]
        err = torch.log(p.clamp_min(0.0) + self.offset) - torch.log(y.clamp_min(0.0) + self.offset)
        return _masked_mean(err ** 2, batch["mask"])


def make_term(name: str) -> nn.Module:
    """The loss module for a term name (see module doc)."""
    if name == "activation_pcc":
        return PearsonLoss("activation")
    if name == "activation_log":
        return LogMSE("activation")
    if name.endswith("_vel"):
        return VelocityMSE(name[:-4])
    return MaskedMSE(name)


TERM_NAMES: tuple[str, ...] = ("coords", "coords_vel", "pelvis_rot6d", "root", "joints", "joints_vel",
                               "activation", "activation_vel", "activation_pcc", "activation_log")


class CompositeLoss(nn.Module):
    """Weighted sum of named terms. weights: {term name: weight}; zero-weight terms are not built.
    forward returns (total, {term: value}) over the terms whose output is present."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(TERM_NAMES))
        if unknown:
            from biohuman.errors import ConfigError

            raise ConfigError(f"unknown loss terms {unknown}; known: {list(TERM_NAMES)}")
        self.weights = {k: float(v) for k, v in weights.items() if float(v) != 0.0}
        self.terms = nn.ModuleDict({k: make_term(k) for k in self.weights})

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        total = None
        parts: dict[str, float] = {}
        for k, term in self.terms.items():
            key = term.name
            if key not in out or f"y_{key}" not in batch:
                continue
            v = term(out, batch)
            parts[k] = float(v.detach())
            total = self.weights[k] * v if total is None else total + self.weights[k] * v
        if total is None:
            raise ValueError("no loss term applies: the model produced none of " + ", ".join(self.terms))
        return total, parts
