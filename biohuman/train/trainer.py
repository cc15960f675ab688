"""Config-driven trainer: seeded and deterministic on CPU, tqdm progress, checkpoints with exact
resume, per-epoch metrics (JSON lines), model selection on the validation set, and torch DDP
(gloo on CPU, nccl on GPU) when started under `torchrun` (WORLD_SIZE > 1), with no code change.

Determinism and exact resume: the data order of epoch e comes from a DistributedSampler seeded
with the config seed and `set_epoch(e)`; the torch RNG (dropout, noise) is re-seeded at the start
of every epoch from (seed, epoch, rank); the learning rate is a pure function of the step. So an
interrupted run resumed from `last.pt` continues exactly as if it had never stopped.

Checkpoint (`torch.save` dict): model_state, model_cfg, norm {name: (mean, std)}, train_cfg,
epoch, optimizer_state, metrics, kind, best_val. `last.pt` is written every epoch, `best.pt` when
the validation loss improves, and `model.pt` (the best weights) when training ends. A model with a
`set_norm` method (BioHumanNet) receives `norm` and raw inputs; any other gets z-scored inputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from biohuman.errors import ConfigError
from biohuman.io.atomic import atomic_path, atomic_write_text
from biohuman.train.data import WindowedSequences, normalise, window_item, windows
from biohuman.train.losses import CompositeLoss

log = logging.getLogger("biohuman.train")

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20, "batch_size": 8, "lr": 1e-3, "weight_decay": 1e-4, "warmup_steps": 20, "grad_clip": 1.0,
    "window": 64, "stride": 32, "seed": 0, "device": "auto", "num_threads": 0, "progress": True,
    "deterministic": True,
}


# ------------------------------------------------------------------------------------------------
# Distributed helpers
# ------------------------------------------------------------------------------------------------


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> cuda:<local_rank> when a GPU is present, else cpu; otherwise the named device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no GPU is available")
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def init_distributed(device_name: str) -> tuple[int, int, int]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): nccl on GPU, gloo on CPU.
    Returns (rank, world_size, local_rank); (0, 1, 0) when not distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        use_gpu = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if use_gpu else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def set_determinism(seed: int, deterministic: bool, num_threads: int) -> None:
    """Seed python, numpy and torch; deterministic algorithms; a fixed thread count (0 = leave)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def learning_rate(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5 % of `base` (a pure function of the step)."""
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(total - warmup, 1)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0))))


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Atomic torch.save."""
    with atomic_path(path) as tmp:
        torch.save(dict(payload), tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load of a trainer checkpoint (CPU)."""
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader: DataLoader, loss: CompositeLoss, device: torch.device) -> dict[str, float]:
    """Frame-weighted mean of the total loss and of each term over a loader."""
    model.eval()
    sums: dict[str, float] = {}
    n = 0.0
    for batch in loader:
        batch = _to(batch, device)
        out = model(batch)
        total, parts = loss(out, batch)
        w = float(batch["mask"].sum())
        for k, v in {"loss": float(total), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v * w
        n += w
    return {k: v / max(n, 1.0) for k, v in sums.items()}


@torch.no_grad()
def predict_sequence(model: nn.Module, seq: Mapping[str, Any], norm: Mapping[str, Any], window: int,
                     stride: int, device: torch.device | str = "cpu",
                     extra: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Model outputs over a whole sequence: windows of `window` frames every `stride`, outputs of
    overlapping windows averaged per frame. Inputs are z-scored with `norm` unless the model
    normalises its own (has `set_norm`). extra: additional per-frame inputs [F, ...] (e.g.
    `pose_coords` for the second stage). A model trained on mirror images
    (`cfg["test_time_mirror"]`) returns the mean of its outputs on the sequence and, mirrored
    back, on the sequence's mirror image (`biohuman.nn.mirror.mirrored_average`).
    Returns {output: [F, ...]} numpy."""
    cfg = getattr(model, "cfg", None) or {}
    if cfg.get("test_time_mirror"):
        from biohuman.nn.mirror import mirrored_average

        feats = {k: v for k, v in seq.items() if not k.startswith("y_")}
        ext = dict(extra or {})
        if "y_coords" in seq and "pose_coords" not in ext and not hasattr(model, "set_norm"):
            ext["pose_coords"] = seq["y_coords"]  # the second stage's label-coordinate input, mirrored like any
        return mirrored_average(lambda f, e: _predict_once(model, f, norm, window, stride, device, e),
                                feats, cfg, ext)
    return _predict_once(model, seq, norm, window, stride, device, extra)


def _predict_once(model: nn.Module, seq: Mapping[str, Any], norm: Mapping[str, Any], window: int, stride: int,
                  device: torch.device | str, extra: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """`predict_sequence` without test-time mirroring."""
    model.eval()
    inputs = normalise(seq, {} if hasattr(model, "set_norm") else norm)
    if extra:
        inputs.update({k: np.asarray(v, np.float32) for k, v in extra.items()})
    F = len(seq["time"])
    acc: dict[str, np.ndarray] = {}
    cnt = np.zeros(F)
    for st in windows(F, window, stride):
        item = window_item(seq, inputs, st, window, label_keys=("y_coords",))
        batch = {k: v.unsqueeze(0).to(device) for k, v in item.items()}
        out = model(batch)
        real = int(item["mask"].sum())
        for k, v in out.items():
            v = v[0, :real].float().cpu().numpy()
            if k not in acc:
                acc[k] = np.zeros((F,) + v.shape[1:])
            acc[k][st:st + real] += v
        cnt[st:st + real] += 1
    return {k: (v / cnt.reshape((F,) + (1,) * (v.ndim - 1))).astype(np.float32) for k, v in acc.items()}


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


RESUME_IGNORED: frozenset[str] = frozenset({"progress", "num_threads", "device"})
"""Trainer settings that do not change the result: a run may resume under other values."""


def data_fingerprint(*parts: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 over every sequence's numeric arrays (inputs and labels, in key order) of each part:
    identifies the data a run was trained and selected on."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        h.update(b"|part|")
        for seq in part:
            for k in sorted(seq):
                v = seq[k]
                if isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
                    h.update(k.encode())
                    h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def _resume_mismatch(ck: Mapping[str, Any], model_cfg: Mapping[str, Any], cfg: Mapping[str, Any],
                     loss_weights: Mapping[str, float], norm: Mapping[str, Any], data: str) -> str | None:
    """What differs between a `last.pt` and the run about to start (None: it can resume): model
    config, trainer settings (except RESUME_IGNORED), loss weights, normalisation statistics or
    the training / validation data (`data_fingerprint`, e.g. after relabelling). Resuming a run
    of other settings or data would silently return its result as this one's."""
    def trainer(c: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in dict(c).items() if k not in RESUME_IGNORED}

    if dict(ck.get("model_cfg") or {}) != dict(model_cfg):
        return "model config"
    if trainer(ck.get("train_cfg") or {}) != trainer(cfg):
        return "trainer config"
    if dict(ck.get("loss_weights") or {}) != dict(loss_weights):
        return "set of loss weights"
    old = ck.get("norm") or {}
    if set(old) != set(norm) or any(
            not (np.array_equal(np.asarray(old[k][0]), np.asarray(norm[k][0]))
                 and np.array_equal(np.asarray(old[k][1]), np.asarray(norm[k][1]))) for k in norm):
        return "training data (normalisation statistics)"
    if ck.get("data_fingerprint") != data:
        return "training or validation data"
    return None


def train_model(
    build: Callable[[Mapping[str, Any]], nn.Module],
    model_cfg: Mapping[str, Any],
    train_seqs: Sequence[Mapping[str, Any]],
    val_seqs: Sequence[Mapping[str, Any]],
    norm: Mapping[str, tuple[np.ndarray, np.ndarray]],
    cfg: Mapping[str, Any],
    loss_weights: Mapping[str, float],
    out_dir: str | Path,
    *,
    kind: str = "model",
    resume: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train `build(model_cfg)` and write checkpoints under out_dir (see module doc).

    cfg: trainer settings (TRAIN_DEFAULTS keys). stop_after: stop after this many epochs in total
    (simulates an interruption; `model.pt` is then not written). Returns the history (list of
    per-epoch records) and the best validation loss. Under DDP every rank calls this with the
    same arguments; rank 0 writes files.
    """
    cfg = {**TRAIN_DEFAULTS, **dict(cfg)}
    out_dir = Path(out_dir)
    rank, world, local_rank = init_distributed(str(cfg["device"]))
    device = resolve_device(str(cfg["device"]), local_rank)
    seed = int(cfg["seed"])
    set_determinism(seed, bool(cfg["deterministic"]), int(cfg["num_threads"]))
    torch.manual_seed(seed)
    model = build(model_cfg).to(device)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    self_norm = hasattr(_unwrap(model), "set_norm")  # the model z-scores its own inputs (BioHumanNet)
    if self_norm:
        _unwrap(model).set_norm(norm)
    data_norm = {} if self_norm else norm
    loss = CompositeLoss(loss_weights)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))

    train_ds = WindowedSequences(train_seqs, data_norm, int(cfg["window"]), int(cfg["stride"]))
    val_ds = WindowedSequences(val_seqs, data_norm, int(cfg["window"]), int(cfg["window"]))
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
    loader = DataLoader(train_ds, batch_size=int(cfg["batch_size"]), sampler=sampler, num_workers=0)
    val_loader = DataLoader(val_ds, batch_size=int(cfg["batch_size"]), shuffle=False, num_workers=0)
    epochs = int(cfg["epochs"])
    steps_per_epoch = len(loader)
    total_steps = epochs * steps_per_epoch

    start_epoch, best_val, history = 0, float("inf"), []
    last = out_dir / "last.pt"
    ck = load_checkpoint(last) if resume and last.is_file() else None
    fingerprint = data_fingerprint(train_seqs, val_seqs)
    why = _resume_mismatch(ck, model_cfg, cfg, loss_weights, norm, fingerprint) if ck is not None else None
    if why:
        log.warning("%s: not resuming from %s, it was written with a different %s; training afresh", kind, last, why)
        ck = None
    if ck is not None:
        _unwrap(model).load_state_dict(ck["model_state"])
        opt.load_state_dict(ck["optimizer_state"])
        start_epoch, best_val, history = int(ck["epoch"]) + 1, float(ck["best_val"]), list(ck["metrics"])

    def payload(epoch: int, state: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"model_state": state if state is not None else _unwrap(model).state_dict(),
                "model_cfg": dict(model_cfg), "norm": {k: (np.asarray(m), np.asarray(s)) for k, (m, s) in norm.items()},
                "train_cfg": cfg, "epoch": epoch, "optimizer_state": opt.state_dict(), "metrics": history,
                "kind": kind, "best_val": best_val, "loss_weights": dict(loss_weights),
                "data_fingerprint": fingerprint}

    from tqdm.auto import tqdm

    end = epochs if stop_after is None else min(epochs, stop_after)
    for epoch in range(start_epoch, end):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        torch.manual_seed(seed * 100003 + epoch * 101 + rank)
        model.train()
        sums: dict[str, float] = {}
        n = 0.0
        bar = tqdm(loader, desc=f"{kind} epoch {epoch + 1}/{epochs}", disable=not (cfg["progress"] and _is_main()),
                   leave=False)
        for i, batch in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = learning_rate(step, total_steps, float(cfg["lr"]), int(cfg["warmup_steps"]))
            batch = _to(batch, device)
            total, parts = loss(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            total.backward()
            if float(cfg["grad_clip"]) > 0:
                nn.utils.clip_grad_norm_(model.parameters(), float(cfg["grad_clip"]))
            opt.step()
            w = float(batch["mask"].sum())
            for k, v in {"loss": float(total.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * w
            n += w
            bar.set_postfix(loss=f"{float(total.detach()):.4f}")
        train_metrics = {k: v / max(n, 1.0) for k, v in sums.items()}
        if world > 1:  # average the per-rank means so every rank logs the same numbers
            keys = sorted(train_metrics)
            t = torch.tensor([train_metrics[k] for k in keys], dtype=torch.float64)
            dist.all_reduce(t)
            train_metrics = {k: float(v) / world for k, v in zip(keys, t)}
        val_metrics = evaluate_loss(_unwrap(model), val_loader, loss, device)
        rec = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "time_s": round(time.perf_counter() - t0, 3),
               "train": train_metrics, "val": val_metrics}
        history.append(rec)
        improved = val_metrics["loss"] < best_val
        if improved:
            best_val = val_metrics["loss"]
        if _is_main():
            out_dir.mkdir(parents=True, exist_ok=True)
            if improved:
                save_checkpoint(out_dir / "best.pt", payload(epoch))
            save_checkpoint(last, payload(epoch))
            atomic_write_text(out_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
            if cfg["progress"]:
                print(f"[{kind}] epoch {epoch + 1}/{epochs} train {train_metrics['loss']:.5f} "
                      f"val {val_metrics['loss']:.5f}{' *' if improved else ''} ({rec['time_s']:.1f} s)", flush=True)
        _barrier()
    if end == epochs and _is_main():
        best = load_checkpoint(out_dir / "best.pt") if (out_dir / "best.pt").is_file() else payload(epochs - 1)
        best["metrics"] = history
        save_checkpoint(out_dir / "model.pt", best)
    _barrier()
    return {"history": history, "best_val": best_val}


def load_model(path: str | Path, build: Callable[[Mapping[str, Any]], nn.Module]) -> tuple[nn.Module, dict[str, Any]]:
    """A model and its checkpoint dict (norm, configs) from a trainer checkpoint."""
    ck = load_checkpoint(path)
    model = build(ck["model_cfg"])
    model.load_state_dict(ck["model_state"])
    if hasattr(model, "set_norm") and ck.get("norm"):
        model.set_norm(ck["norm"])
    model.eval()
    return model, ck
