"""Evaluation metrics for muscle activations and pose, and per-subject bootstrap confidence intervals.

Every metric takes a list of *samples* (one sample = one (trial, camera) prediction with its labels,
all arrays over the same real frames, padding already removed) and returns one number:

- muscles (arrays [T, M], activation in [0, 1]):
  - `pcc`: per sample and muscle, the Pearson correlation over time between prediction and label,
    over the muscles whose label varies (SD > `VARY_EPS`); averaged over those muscles, then over
    samples.
  - `rmse`: sqrt of the mean squared error pooled over every sample, frame and muscle.
  - `nrmse`: per muscle, RMSE pooled over samples and frames divided by the label's SD pooled the
    same way (muscles whose label varies); averaged over muscles.
  - `active_mae`: mean absolute error pooled over the (frame, muscle) entries whose label exceeds
    `ACTIVE_THRESHOLD` (0.10).
- pose:
  - `joint_angle_rmse_deg`: sqrt of the mean squared angle error (degrees), pooled over samples,
    frames and predicted coordinates.
  - `mpjpe_mm`: mean Euclidean joint-position error (mm) after subtracting the root joint (index 0,
    the pelvis) from prediction and label, per frame.
  - `pa_mpjpe_mm`: the same after a per-frame similarity Procrustes alignment (scale, rotation,
    translation) of the predicted joints onto the label joints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

VARY_EPS = 1e-6
"""A label (per muscle) "varies" when its standard deviation exceeds this (activation units)."""
ACTIVE_THRESHOLD = 0.10
"""Active-MAE counts frames where the label activation exceeds this."""

Sample = Mapping[str, Any]
"""One evaluated sequence: keys `subject` plus pairs `pred_<name>` / `label_<name>` (numpy arrays)."""


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D series (nan when either is constant)."""
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def pcc_sample(pred: np.ndarray, label: np.ndarray, eps: float = VARY_EPS) -> float:
    """Mean over varying muscles of the Pearson correlation over time. pred, label: [T, M].
    nan when no muscle's label varies. A constant prediction of a varying label counts as 0."""
    vals = []
    for m in range(label.shape[1]):
        if label[:, m].std() <= eps:
            continue
        r = _pearson(pred[:, m].astype(np.float64), label[:, m].astype(np.float64))
        vals.append(0.0 if np.isnan(r) else r)
    return float(np.mean(vals)) if vals else float("nan")


def pcc(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], eps: float = VARY_EPS) -> float:
    """Mean over samples of `pcc_sample` (samples with no varying muscle are skipped)."""
    vals = [pcc_sample(p, y, eps) for p, y in zip(preds, labels)]
    vals = [v for v in vals if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def pcc_per_muscle(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], eps: float = VARY_EPS) -> np.ndarray:
    """[M]: per muscle, the mean over samples (where that muscle's label varies) of the Pearson
    correlation over time (nan where it never varies). For the per-muscle bar chart."""
    M = labels[0].shape[1]
    out = np.full(M, np.nan)
    for m in range(M):
        vals = []
        for p, y in zip(preds, labels):
            if y[:, m].std() > eps:
                r = _pearson(p[:, m].astype(np.float64), y[:, m].astype(np.float64))
                vals.append(0.0 if np.isnan(r) else r)
        if vals:
            out[m] = np.mean(vals)
    return out


def rmse(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Root mean squared error pooled over samples, frames and muscles (activation units)."""
    err = np.concatenate([(np.asarray(p, np.float64) - y).ravel() for p, y in zip(preds, labels)])
    return float(np.sqrt(np.mean(err ** 2)))


def nrmse(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], eps: float = VARY_EPS) -> float:
    """Mean over muscles (label SD > eps, pooled) of RMSE_m / SD_m, both pooled over samples and frames."""
    P = np.concatenate([np.asarray(p, np.float64) for p in preds])
    Y = np.concatenate([np.asarray(y, np.float64) for y in labels])
    sd = Y.std(axis=0)
    keep = sd > eps
    if not keep.any():
        return float("nan")
    r = np.sqrt(np.mean((P - Y) ** 2, axis=0))
    return float(np.mean(r[keep] / sd[keep]))


def active_mae(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], threshold: float = ACTIVE_THRESHOLD) -> float:
    """Mean absolute error over the (frame, muscle) entries whose label exceeds `threshold`
    (nan when there are none)."""
    P = np.concatenate([np.asarray(p, np.float64).ravel() for p in preds])
    Y = np.concatenate([np.asarray(y, np.float64).ravel() for y in labels])
    act = Y > threshold
    return float(np.mean(np.abs(P[act] - Y[act]))) if act.any() else float("nan")


def joint_angle_rmse_deg(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """RMSE in degrees pooled over samples, frames and coordinates. Inputs [T, C] in degrees."""
    return rmse(preds, labels)


def mpjpe_mm(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], root: int = 0) -> float:
    """Mean per-joint position error (mm) after root-centring each frame. Inputs [T, J, 3] in m."""
    errs = []
    for p, y in zip(preds, labels):
        p = np.asarray(p, np.float64)
        y = np.asarray(y, np.float64)
        p = p - p[:, root:root + 1]
        y = y - y[:, root:root + 1]
        errs.append(np.linalg.norm(p - y, axis=-1).ravel())
    return float(np.mean(np.concatenate(errs)) * 1000.0)


def procrustes_align(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Similarity transform (scale s, rotation R, translation t) of points p [..., J, 3] minimising
    ||s R p + t - y||^2 per leading index (Umeyama, reflections excluded); returns aligned p."""
    p = np.asarray(p, np.float64)
    y = np.asarray(y, np.float64)
    mp, my = p.mean(-2, keepdims=True), y.mean(-2, keepdims=True)
    p0, y0 = p - mp, y - my
    var_p = (p0 ** 2).sum(axis=(-2, -1))                          # [...]
    u, s, vt = np.linalg.svd(np.swapaxes(y0, -1, -2) @ p0)        # [..., 3, 3]
    d = np.sign(np.linalg.det(u @ vt))                            # [...]
    dd = np.ones(s.shape)
    dd[..., 2] = d
    R = (u * dd[..., None, :]) @ vt                               # u diag(dd) vt
    scale = np.where(var_p > 0, (s * dd).sum(-1) / np.where(var_p > 0, var_p, 1.0), 0.0)
    return scale[..., None, None] * p0 @ np.swapaxes(R, -1, -2) + my


def pa_mpjpe_mm(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """MPJPE (mm) after per-frame Procrustes alignment (scale, rotation, translation). Inputs [T, J, 3] m."""
    errs = [np.linalg.norm(procrustes_align(p, y) - np.asarray(y, np.float64), axis=-1).ravel()
            for p, y in zip(preds, labels)]
    return float(np.mean(np.concatenate(errs)) * 1000.0)


METRICS: dict[str, tuple[str, Callable[..., float]]] = {
    "pcc": ("activation", pcc),
    "rmse": ("activation", rmse),
    "nrmse": ("activation", nrmse),
    "active_mae": ("activation", active_mae),
    "joint_angle_rmse_deg": ("coords_deg", joint_angle_rmse_deg),
    "mpjpe_mm": ("joints", mpjpe_mm),
    "pa_mpjpe_mm": ("joints", pa_mpjpe_mm),
}
"""Metric name -> (the sample quantity it needs, function(preds, labels))."""


def _sample_stats(name: str, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Additive sufficient statistics of metric `name` for one sample (so that pooled metrics and
    their bootstrap replicates are sums over samples, not recomputations)."""
    P = np.asarray(pred, np.float64)
    Y = np.asarray(label, np.float64)
    if name == "pcc":
        v = pcc_sample(P, Y)
        return np.array([0.0, 0.0]) if np.isnan(v) else np.array([v, 1.0])
    if name in ("rmse", "joint_angle_rmse_deg"):
        return np.array([((P - Y) ** 2).sum(), P.size])
    if name == "nrmse":  # per muscle: sum sq err, sum y, sum y^2, n
        return np.concatenate([((P - Y) ** 2).sum(0), Y.sum(0), (Y ** 2).sum(0), [len(Y)]])
    if name == "active_mae":
        act = Y > ACTIVE_THRESHOLD
        return np.array([np.abs(P - Y)[act].sum(), act.sum()])
    if name == "mpjpe_mm":
        e = np.linalg.norm((P - P[:, :1]) - (Y - Y[:, :1]), axis=-1)
        return np.array([e.sum(), e.size])
    if name == "pa_mpjpe_mm":
        e = np.linalg.norm(procrustes_align(P, Y) - Y, axis=-1)
        return np.array([e.sum(), e.size])
    raise KeyError(name)


def _finalize(name: str, st: np.ndarray) -> float:
    """Metric value from summed statistics (see _sample_stats)."""
    if name == "nrmse":
        M = (len(st) - 1) // 3
        n = st[-1]
        if n <= 0:
            return float("nan")
        sse, sy, syy = st[:M], st[M:2 * M], st[2 * M:3 * M]
        var = np.maximum(syy / n - (sy / n) ** 2, 0.0)
        sd = np.sqrt(var)
        keep = sd > VARY_EPS
        return float(np.mean(np.sqrt(sse[keep] / n) / sd[keep])) if keep.any() else float("nan")
    if st[1] <= 0:
        return float("nan")
    v = st[0] / st[1]
    if name in ("rmse", "joint_angle_rmse_deg"):
        return float(np.sqrt(v))
    if name in ("mpjpe_mm", "pa_mpjpe_mm"):
        return float(v * 1000.0)
    return float(v)


def compute_metrics(samples: Sequence[Sample], names: Sequence[str] | None = None) -> dict[str, float]:
    """Every metric in `names` (default: all) whose quantity the samples carry as `pred_<q>` and
    `label_<q>` (same values as the functions above). Metrics of quantities a method does not
    predict are left out."""
    out: dict[str, float] = {}
    for name in names or METRICS:
        q = METRICS[name][0]
        if not samples or f"pred_{q}" not in samples[0]:
            continue
        out[name] = _finalize(name, sum(_sample_stats(name, s[f"pred_{q}"], s[f"label_{q}"]) for s in samples))
    return out


def bootstrap_ci(values: np.ndarray, subjects: Sequence[str], finalize: Callable[[np.ndarray], float], *,
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Per-subject (cluster) bootstrap confidence interval.

    values: [N, K] additive statistics of N samples; subjects: the subject of each sample;
    finalize: summed statistics [K] -> metric. Each replicate draws as many subjects as there are,
    with replacement, and sums the statistics of all samples of each drawn subject (a subject drawn
    twice counts twice); the interval is the percentile range of the replicate metrics (nan
    replicates dropped). Deterministic for a given seed.
    """
    subjects = [str(s) for s in subjects]
    uniq = sorted(set(subjects))
    per_subject = np.stack([values[[i for i, s in enumerate(subjects) if s == u]].sum(0) for u in uniq])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), (n_boot, len(uniq)))
    counts = np.stack([np.bincount(d, minlength=len(uniq)) for d in draws]).astype(np.float64)  # [B, S]
    reps = np.array([finalize(c @ per_subject) for c in counts])
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [a, 1.0 - a])
    return float(lo), float(hi)


def metrics_with_ci(samples: Sequence[Sample], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """`compute_metrics` plus `<metric>_ci95` = [lo, hi] (per-subject bootstrap, 95 %) and
    `n_samples`, `n_subjects`."""
    out: dict[str, Any] = {}
    subjects = [str(s["subject"]) for s in samples]
    for name, (q, _) in METRICS.items():
        if not samples or f"pred_{q}" not in samples[0]:
            continue
        stats = np.stack([_sample_stats(name, s[f"pred_{q}"], s[f"label_{q}"]) for s in samples])
        out[name] = _finalize(name, stats.sum(0))
        out[f"{name}_ci95"] = list(bootstrap_ci(stats, subjects, lambda st, n=name: _finalize(n, st),
                                                n_boot=n_boot, seed=seed))
    out["n_samples"] = len(samples)
    out["n_subjects"] = len(set(subjects))
    return out
