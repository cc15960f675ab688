"""Smooth joint-angle curves from keyframes: periodic (gait cycles) and discrete (one repetition)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline, PchipInterpolator


@dataclass(frozen=True)
class Periodic:
    """A cyclic curve: keyframes (phase in [0, 1), value) repeated every cycle.

    Evaluated with a periodic cubic spline, so value and slope are continuous across cycles.
    """

    keys: Sequence[tuple[float, float]]

    def __call__(self, phase: np.ndarray) -> np.ndarray:
        ph = np.array([k[0] for k in self.keys] + [self.keys[0][0] + 1.0])
        val = np.array([k[1] for k in self.keys] + [self.keys[0][1]])
        spline = CubicSpline(ph, val, bc_type="periodic")
        p = np.mod(np.asarray(phase, dtype=float) - ph[0], 1.0) + ph[0]
        return spline(p)


@dataclass(frozen=True)
class Keyframes:
    """A one-off curve: keyframes (time in s, value), shape-preserving (no overshoot), held flat
    before the first and after the last keyframe."""

    keys: Sequence[tuple[float, float]]

    def __call__(self, t: np.ndarray) -> np.ndarray:
        tk = np.array([k[0] for k in self.keys], dtype=float)
        vk = np.array([k[1] for k in self.keys], dtype=float)
        if len(tk) == 1:
            return np.full_like(np.asarray(t, dtype=float), vk[0])
        interp = PchipInterpolator(tk, vk, extrapolate=False)
        tt = np.clip(np.asarray(t, dtype=float), tk[0], tk[-1])
        return interp(tt)


def smoothstep(t: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """0 before t0, 1 after t1, a C2-continuous quintic ramp in between."""
    x = np.clip((np.asarray(t, dtype=float) - t0) / max(t1 - t0, 1e-9), 0.0, 1.0)
    return x * x * x * (10 - 15 * x + 6 * x * x)


def intervals_mask(t: np.ndarray, intervals: Sequence[tuple[float, float]]) -> np.ndarray:
    """Boolean mask of samples inside any [start, end) interval."""
    mask = np.zeros(np.shape(t), dtype=bool)
    for a, b in intervals:
        mask |= (t >= a) & (t < b)
    return mask


def periodic_intervals(
    on: float, off: float, period: float, t_start: float, t_end: float
) -> list[tuple[float, float]]:
    """Intervals [on + k*period, off + k*period) (phase fractions times period) covering a window.

    `on`/`off` are phases in cycles (off may exceed on by < 1; off < on wraps around).
    """
    if off < on:
        off += 1.0
    out = []
    k0 = int(np.floor(t_start / period)) - 2
    k1 = int(np.ceil(t_end / period)) + 1
    for k in range(k0, k1 + 1):
        a, b = (on + k) * period, (off + k) * period
        if b > t_start and a < t_end:
            out.append((max(a, t_start), min(b, t_end)))
    return out
