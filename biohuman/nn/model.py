"""BioHumanNet: per-frame front-end tokens -> temporal transformer -> pose and activation heads.

Like the reference paper's design: a pretrained front-end (MediaPipe landmarks, EfficientNet-Lite0
crop features; see `biohuman.nn.frontend`) gives per-frame tokens, a trainable transformer encoder
fuses them over time, and two heads share its state:

- pose: rotational coordinates `coords [B, T, C]` (rad, in `cfg["coordinates"]` order), the
  pelvis orientation in ground as a continuous 6D rotation `pelvis_rot6d [B, T, 6]` (Zhou et al.
  2019: the first two columns of the matrix), and the pelvis translation relative to the first
  frame `root [B, T, 3]` (m; the integral of predicted per-frame displacements, so root[:, 0] = 0),
  plus `joints [B, T, J, 3]` (m) from the differentiable forward kinematics
  (`biohuman.nn.fk.ForwardKinematics`) of the subject: scaled by the batch's optional
  `body_scale [B, n_bodies, 3]` (a trial's scale factors in `model.fk.bodies` order, see
  `ForwardKinematics.scale_from_factors`), else uniformly by `height_m`;
- activation: `activation [B, T, M]` within each muscle's control bounds (`ActivationBounds`: lo + (hi - lo) sigmoid).

Config (`cfg`, the `train.model` section plus names): `coordinates`, `muscles`, `joints` (lists of
names), `frontend` (a `biohuman.nn.frontend.FRONTENDS` key), and optional `d_model` (128),
`n_layers` (4), `n_heads` (4), `ff_dim` (4 x d_model), `dropout` (0.1), `heads` ({"pose": true,
"activation": true}), `model_osim` (None: generic Rajagopal2015 for the FK layer), `pose_branch`
(None: off; a pose-conditioned activation branch, see `pose_branch_config`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from biohuman.errors import ConfigError, InputFormatError
from biohuman.nn.fk import ForwardKinematics

DEFAULTS: dict[str, Any] = {"d_model": 128, "n_layers": 4, "n_heads": 4, "ff_dim": None, "dropout": 0.1,
                            "heads": {"pose": True, "activation": True}, "model_osim": None, "pose_branch": None}
"""Defaults of the architecture keys of cfg."""

HIP_L, HIP_R = 23, 24
"""MediaPipe Pose landmark indices of the hips (landmarks are centred on their midpoint)."""

STREAM_DIMS: dict[str, int] = {"landmarks": 33 * 4 + 3, "world": 33 * 3, "cnn": 1280}
"""Width of each front-end stream's per-frame feature vector after `stream_features`."""

STREAMS_OF: dict[str, tuple[str, ...]] = {"mediapipe": ("landmarks", "world"), "effnet": ("cnn",)}
"""Front-end component -> the batch keys it provides."""


# ------------------------------------------------------------------------------------------------
# Rotations
# ------------------------------------------------------------------------------------------------


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt; the 6 numbers are the first two
    columns (unnormalised)."""
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = nn.functional.normalize(a1, dim=-1, eps=1e-8)
    b2 = nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1, eps=1e-8)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(r: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> their 6D representation (..., 6) (first two columns)."""
    return torch.cat([r[..., :, 0], r[..., :, 1]], dim=-1)


def pelvis_matrix(tilt: torch.Tensor, list_: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Pelvis orientation in ground (..., 3, 3) from Rajagopal2015's ground_pelvis coordinates (rad):
    body-fixed rotations about z (tilt), x (list), y (rotation)."""
    ca, sa, cb, sb = torch.cos(tilt), torch.sin(tilt), torch.cos(list_), torch.sin(list_)
    cc, sc = torch.cos(rotation), torch.sin(rotation)
    rows = [
        torch.stack([ca * cc - sa * sb * sc, -sa * cb, ca * sc + sa * sb * cc], -1),
        torch.stack([sa * cc + ca * sb * sc, ca * cb, sa * sc - ca * sb * cc], -1),
        torch.stack([-cb * sc, sb, cb * cc], -1),
    ]
    return torch.stack(rows, dim=-2)


def matrix_to_pelvis_angles(r: torch.Tensor) -> torch.Tensor:
    """Inverse of `pelvis_matrix`: (..., 3, 3) -> (..., 3) [tilt, list, rotation] rad (list in
    [-pi/2, pi/2])."""
    tilt = torch.atan2(-r[..., 0, 1], r[..., 1, 1])
    lst = torch.asin(r[..., 2, 1].clamp(-1.0, 1.0))
    rot = torch.atan2(-r[..., 2, 0], r[..., 2, 2])
    return torch.stack([tilt, lst, rot], dim=-1)


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


def stream_features(batch: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """Per-frame feature vector [B, T, STREAM_DIMS[name]] of one stream of a batch.

    landmarks: x, y in pixels of the longer image side (aspect from `image_size [B, 2]` when the
    batch has it, else square), centred on the hip midpoint and divided by their RMS distance from
    it (scale-invariant), z likewise, visibility; plus the hip midpoint (x, y) and log of the scale.
    world, cnn: flattened as they are.
    """
    x = batch[name].float()
    if name != "landmarks":
        return x.flatten(2)
    b = x.shape[0]
    if "image_size" in batch:
        size = batch["image_size"].float().reshape(b, -1)[:, :2]
        aspect = size / size.max(dim=-1, keepdim=True).values  # [B, 2]: (W, H) / longer side
    else:
        aspect = torch.ones(b, 2, dtype=x.dtype, device=x.device)
    xy = x[..., :2] * aspect[:, None, None, :]
    hip = 0.5 * (xy[..., HIP_L, :] + xy[..., HIP_R, :])  # [B, T, 2]
    rel = xy - hip[..., None, :]
    scale = rel.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-3)  # [B, T]
    rel = rel / scale[..., None, None]
    z = (x[..., 2:3] * aspect[:, None, None, :1]) / scale[..., None, None]
    vis = x[..., 3:4]
    per = torch.cat([rel, z, vis], dim=-1).flatten(2)
    return torch.cat([per, hip, scale.log()[..., None]], dim=-1)


def input_norm_stats(samples: Iterable[Mapping[str, np.ndarray]],
                     frontend: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and std (floored at 1e-6) of each stream's `stream_features` over every detected frame
    of the given front-end arrays (npz dicts): the `norm` of a checkpoint."""
    names = streams_of(frontend)
    acc: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for s in samples:
        batch = {k: torch.as_tensor(np.asarray(v))[None] for k, v in s.items() if k in names or k == "image_size"}
        keep = np.asarray(s["detected"], bool) if "detected" in s else np.ones(len(s[names[0]]), bool)
        for n in names:
            acc[n].append(stream_features(batch, n)[0].numpy()[keep])
    out = {}
    for n, parts in acc.items():
        a = np.concatenate(parts).astype(np.float64)
        out[n] = (a.mean(0).astype(np.float32), np.maximum(a.std(0), 1e-6).astype(np.float32))
    return out


def streams_of(frontend: str) -> tuple[str, ...]:
    """Batch keys a front-end provides (ConfigError for an unknown front-end)."""
    from biohuman.nn.frontend import FRONTENDS

    if frontend not in FRONTENDS:
        raise ConfigError(f"unknown front-end {frontend!r} (known: {', '.join(FRONTENDS)})")
    return tuple(k for part in FRONTENDS[frontend] for k in STREAMS_OF[part])


class ActivationBounds(nn.Module):
    """Activation output layer: logits -> lo + (hi - lo) * sigmoid, with (lo, hi) each muscle's
    control bounds (min_control .. max_control of the model, e.g. 0.01 .. 1 on Rajagopal2015;
    names the model lacks get 0 .. 1). No solver, and so no label, leaves those bounds, and a
    plain sigmoid head predicted under the 0.01 floor (31 % of predictions on held-out lunges);
    a hard clamp at inference would make floor muscles constant, i.e. without correlation, and
    cut the gradient, so the range itself is bounded."""

    def __init__(self, muscles: Sequence[str], model_osim: str | None = None) -> None:
        super().__init__()
        from biohuman.osim.model import muscle_activation_bounds

        lo, hi = muscle_activation_bounds(list(muscles), model_osim)
        self.register_buffer("lo", torch.as_tensor(lo, dtype=torch.float32), persistent=False)
        self.register_buffer("hi", torch.as_tensor(hi, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        lo, hi = self.lo.to(logits.dtype), self.hi.to(logits.dtype)
        return lo + (hi - lo) * torch.sigmoid(logits)


class CoordinateConvNet(nn.Module):
    """Coordinates [B,T,C] (rad) -> per-frame logits [B,T,M]: the coordinates, their frame-to-frame
    differences (x10) and the height (m) through a non-causal dilated temporal convolution stack
    (dilations 1, 2, 4, ...; residual); padded frames (mask False) are zeroed at every layer. Shared
    by the two-stage baseline's second stage and BioHumanNet's pose-conditioned activation branch."""

    def __init__(self, n_coords: int, n_out: int, hidden: int = 128, layers: int = 4, kernel: int = 5,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.inp = nn.Conv1d(2 * n_coords + 1, hidden, 1)
        self.blocks = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=(kernel // 2) * 2 ** i, dilation=2 ** i)
                                    for i in range(layers))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Conv1d(hidden, n_out, 1)

    def logits(self, q: torch.Tensor, height_m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits [B,T,M] of coordinates q [B,T,C], heights [B] and the frame mask [B,T]."""
        m = mask.to(q.dtype).unsqueeze(1)                                                # [B,1,T]
        dq = torch.cat([torch.zeros_like(q[:, :1]), q[:, 1:] - q[:, :-1]], dim=1)
        h_in = torch.cat([q, dq * 10.0, height_m.to(q.dtype).view(-1, 1, 1).expand(-1, q.shape[1], 1)], dim=-1)
        h = torch.relu(self.inp(h_in.transpose(1, 2))) * m                              # [B,H,T]
        for conv in self.blocks:
            h = h + torch.relu(conv(self.drop(h))) * m
        return self.out(h).transpose(1, 2)


def sinusoidal_encoding(t: int, d: int, device: torch.device | None = None) -> torch.Tensor:
    """Positional encoding (t, d) of Vaswani et al. (frame index, any length)."""
    pos = torch.arange(t, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / d))
    pe = torch.zeros(t, d, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


POSE_BRANCH_DEFAULTS: dict[str, Any] = {"input": "labels", "hidden": 128, "layers": 4, "kernel": 5, "dropout": 0.1,
                                       "input_noise_deg": 3.0, "state": True, "state_limit": None}
"""Defaults of cfg["pose_branch"] (see `pose_branch_config`)."""


def pose_branch_config(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pose-conditioned activation branch's settings, or None when off. cfg["pose_branch"]: None
    or False (off), True (defaults) or a dict of `POSE_BRANCH_DEFAULTS` keys: `input` (`labels`: in
    training it reads the labelled coordinates plus `input_noise_deg` of noise, at inference the
    predicted ones; `predicted`: always the predicted ones, detached), `state` (whether the
    activation head's logits from the transformer state are added; False: activations from the
    predicted pose alone), `state_limit` (None: the state's logits enter as they are; L > 0: as
    L tanh(logits / L), a correction of at most L logits to the branch's, so that on a motion unlike
    any in training the appearance-driven part cannot wake a muscle the predicted pose keeps
    silent) and its `CoordinateConvNet` size. It adds coordinates -> activation logits to the
    activation head's, so the activations follow the predicted motion through a mapping learned on
    poses rather than on appearance."""
    pb = cfg.get("pose_branch")
    if pb is None or pb is False:
        return None
    pb = {} if pb is True else dict(pb)
    unknown = sorted(set(pb) - set(POSE_BRANCH_DEFAULTS))
    if unknown:
        raise ConfigError(f"model pose_branch has unknown keys {unknown} (known: {sorted(POSE_BRANCH_DEFAULTS)})")
    pb = {**POSE_BRANCH_DEFAULTS, **pb}
    if pb["input"] not in ("labels", "predicted"):
        raise ConfigError(f"model pose_branch.input must be labels or predicted, not {pb['input']!r}")
    heads = {**DEFAULTS["heads"], **dict(cfg.get("heads") or {})}
    if not (heads.get("pose") and heads.get("activation")):
        raise ConfigError("model pose_branch needs both the pose and the activation head")
    for k in ("hidden", "layers", "kernel"):
        pb[k] = int(pb[k])
    pb["dropout"], pb["input_noise_deg"], pb["state"] = float(pb["dropout"]), float(pb["input_noise_deg"]), bool(pb["state"])
    if pb["state_limit"] is not None:
        pb["state_limit"] = float(pb["state_limit"])
        if not pb["state_limit"] > 0:
            raise ConfigError(f"model pose_branch.state_limit must be null or > 0, not {pb['state_limit']}")
        if not pb["state"]:
            raise ConfigError("model pose_branch.state_limit needs state: true (it bounds the state's logits)")
    return pb


class BioHumanNet(nn.Module):
    """Video front-end tokens -> pose + activations (see the module docstring for cfg and outputs)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        full = copy.deepcopy(DEFAULTS)
        full.update(copy.deepcopy(dict(cfg)))
        full["heads"] = {**DEFAULTS["heads"], **dict(cfg.get("heads") or {})}
        for key in ("coordinates", "muscles", "joints", "frontend"):
            if key not in full:
                raise ConfigError(f"model config lacks {key!r}")
        self.cfg = full
        self.streams = streams_of(full["frontend"])
        d = int(full["d_model"])
        self.coordinates = list(full["coordinates"])
        self.muscles = list(full["muscles"])
        self.heads = {k: bool(v) for k, v in full["heads"].items()}
        if not any(self.heads.values()):
            raise ConfigError("model config switches off every head")
        for name in self.streams:
            self.register_buffer(f"mean_{name}", torch.zeros(STREAM_DIMS[name]))
            self.register_buffer(f"std_{name}", torch.ones(STREAM_DIMS[name]))
        self.embed = nn.ModuleDict({n: nn.Sequential(nn.Linear(STREAM_DIMS[n], d), nn.GELU(), nn.Linear(d, d))
                                    for n in self.streams})
        self.missing = nn.Parameter(torch.zeros(d))  # added where the pose detector found nobody
        self.height = nn.Linear(1, d)
        self.in_norm = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(d, int(full["n_heads"]), int(full["ff_dim"] or 4 * d),
                                           float(full["dropout"]), activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, int(full["n_layers"]), enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(d)
        if self.heads.get("pose", False):
            self.pose_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, len(self.coordinates) + 6 + 3))
            self.fk = ForwardKinematics(full["model_osim"], full["joints"])
        self.pose_branch = pose_branch_config(full)
        if self.heads.get("activation", False):
            if self.pose_branch is None or self.pose_branch["state"]:
                self.act_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, len(self.muscles)))
            self.act_bounds = ActivationBounds(self.muscles, full["model_osim"])
        if self.pose_branch is not None:
            pb = self.pose_branch
            self.act_pose = CoordinateConvNet(len(self.coordinates), len(self.muscles), hidden=pb["hidden"],
                                              layers=pb["layers"], kernel=pb["kernel"], dropout=pb["dropout"])

    # -- normalisation --------------------------------------------------------------------------

    def set_norm(self, norm: Mapping[str, Any]) -> None:
        """Set input normalisation (name -> (mean, std), shapes (STREAM_DIMS[name],)); names that
        are not streams of this model are ignored."""
        for name in self.streams:
            if name in norm:
                mean, std = (torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in norm[name])
                if mean.shape != (STREAM_DIMS[name],) or std.shape != (STREAM_DIMS[name],):
                    raise ConfigError(f"norm[{name!r}] has shapes {tuple(mean.shape)}, {tuple(std.shape)}; "
                                      f"expected ({STREAM_DIMS[name]},)")
                getattr(self, f"mean_{name}").copy_(mean)
                getattr(self, f"std_{name}").copy_(std.clamp_min(1e-6))

    # -- forward --------------------------------------------------------------------------------

    def encode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Shared temporal state [B, T, d] of a batch (keys: the streams, `mask`, `height_m`,
        optional `detected`, `image_size`)."""
        missing = [n for n in (*self.streams, "mask", "height_m") if n not in batch]
        if missing:
            raise InputFormatError(f"batch lacks {missing} (front-end {self.cfg['frontend']})")
        mask = batch["mask"].bool()
        b, t = mask.shape
        det = batch["detected"].bool()[..., None] if "detected" in batch else None
        tok = 0
        for name in self.streams:
            f = stream_features(batch, name)
            f = (f - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}")
            e = self.embed[name](f)
            if det is not None and name in STREAMS_OF["mediapipe"]:  # no pose found: a learned token
                e = torch.where(det, e, self.missing.expand_as(e))
            tok = tok + e
        h = batch["height_m"].float().reshape(b, 1, 1) - 1.7
        tok = tok + self.height(h) + sinusoidal_encoding(t, tok.shape[-1], tok.device)
        tok = self.in_norm(tok)
        pad = ~mask
        pad[~mask.any(-1), 0] = False  # a wholly padded row keeps one key: no NaN
        return self.out_norm(self.encoder(tok, src_key_padding_mask=pad))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs of the heads that are on (see the module docstring)."""
        state = self.encode(batch)
        mask = batch["mask"].bool()
        out: dict[str, torch.Tensor] = {}
        if self.heads.get("pose", False):
            p = self.pose_head(state)
            c = len(self.coordinates)
            out["coords"] = p[..., :c]
            out["pelvis_rot6d"] = p[..., c:c + 6] + torch.tensor([1.0, 0, 0, 0, 1.0, 0], device=p.device)
            step = p[..., c + 6:c + 9] * 0.1 * mask[..., None]  # per-frame displacement, m
            step = torch.cat([torch.zeros_like(step[:, :1]), step[:, 1:]], dim=1)
            out["root"] = step.cumsum(dim=1)
            coords = {name: out["coords"][..., i] for i, name in enumerate(self.coordinates)}
            if "body_scale" in batch:  # the trial's per-body scale factors [B, n_bodies, 3] (fk.bodies order)
                scale = batch["body_scale"].float()[:, None].to(p.device)
            else:  # uniform scale from the height
                scale = self.fk.scale_from_height(batch["height_m"].float())[:, None].to(p.device)
            out["joints"] = self.fk(coords, scale=scale, pelvis_rotation=rot6d_to_matrix(out["pelvis_rot6d"]),
                                    pelvis_translation=out["root"])
        if self.heads.get("activation", False):
            logits = self.act_head(state) if self.pose_branch is None or self.pose_branch["state"] else 0.0
            limit = None if self.pose_branch is None else self.pose_branch["state_limit"]
            if limit is not None:
                logits = limit * torch.tanh(logits / limit)
            if self.pose_branch is not None:
                logits = logits + self.act_pose.logits(self._branch_coords(batch, out["coords"]),
                                                       batch["height_m"].float(), mask)
            out["activation"] = self.act_bounds(logits)
        return out

    def _branch_coords(self, batch: Mapping[str, torch.Tensor], predicted: torch.Tensor) -> torch.Tensor:
        """Coordinates the pose-conditioned activation branch reads: in training with `input: labels`
        the labelled ones plus Gaussian noise (like the two-stage baseline's second stage), else the
        pose head's prediction, detached so activation losses do not bend the pose."""
        pb = self.pose_branch
        assert pb is not None
        if self.training and pb["input"] == "labels" and "y_coords" in batch:
            q = batch["y_coords"].to(predicted.dtype)
            return q + float(np.deg2rad(pb["input_noise_deg"])) * torch.randn_like(q)
        return predicted.detach()

    # -- checkpoints ----------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> BioHumanNet:
        """Restore a model (config, weights, normalisation) from a checkpoint in the contract format
        ({"model_state", "model_cfg", "norm", ...}); eval mode. The file is trusted (it holds
        numpy arrays, so it is loaded with weights_only=False). `model.checkpoint_info` keeps its
        train_cfg, epoch and metrics."""
        path = Path(path)
        if not path.is_file():
            raise InputFormatError("checkpoint does not exist", path)
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # torch raises many kinds for a corrupt file
            raise InputFormatError(f"cannot read checkpoint: {exc}", path) from exc
        for key in ("model_state", "model_cfg"):
            if key not in ckpt:
                raise InputFormatError(f"checkpoint lacks {key!r}", path)
        model = cls(ckpt["model_cfg"])
        try:
            model.load_state_dict(ckpt["model_state"])
        except RuntimeError as exc:
            raise InputFormatError(f"checkpoint weights do not fit its config: {exc}", path) from exc
        if ckpt.get("norm"):
            model.set_norm(ckpt["norm"])
        model.checkpoint_info = {k: ckpt.get(k) for k in ("train_cfg", "epoch", "metrics")}
        return model.eval()
