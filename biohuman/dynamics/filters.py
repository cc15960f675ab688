"""Zero-lag low-pass filtering of kinematics and forces, and Savitzky-Golay smoothing of activations.

Rule used throughout biohuman: kinematics and the forces used with them in inverse dynamics are
low-passed with the SAME cutoff (Kristianslund, Krosshaug & van den Bogert 2012, J Biomech 45:666,
"Effects of low pass filtering on joint moments from inverse dynamics: implications for injury
prevention"). Different cutoffs create artificial impact peaks in joint moments.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from biohuman.errors import ConfigError

# Default low-pass cutoffs (Hz) per motion type. Walking and slow motions: 6 Hz (Winter 2009,
# "Biomechanics and Motor Control of Human Movement", 4th ed., ch. 3: 6 Hz keeps the kinematics of
# gait; also the cutoff of OpenSim's Rajagopal/Moco walking examples). Running and jumping have
# faster content and impacts: 12-15 Hz (e.g. Hamner et al. 2010 ran at 15 Hz for markers; Kristianslund
# et al. 2012 for cutting manoeuvres). The same cutoff applies to kinematics and estimated forces.
CUTOFF_BY_MOTION: dict[str, float] = {
    "walk": 6.0,
    "run": 12.0,
    "jump": 15.0,
    "squat": 6.0,
    "sit_to_stand": 6.0,
    "lunge": 6.0,
    "arm_raise": 6.0,
}
DEFAULT_CUTOFF_HZ = 6.0
"""Cutoff for motions not listed in CUTOFF_BY_MOTION."""


class FilterError(ConfigError, ValueError):
    """A filter setting is impossible for the signal (e.g. cutoff at or above the Nyquist rate)."""


def cutoff_for(motion: str) -> float:
    """Default low-pass cutoff (Hz) for a motion type; DEFAULT_CUTOFF_HZ when it is not listed."""
    return CUTOFF_BY_MOTION.get(motion, DEFAULT_CUTOFF_HZ)


def lowpass(x: np.ndarray, rate_hz: float, cutoff_hz: float, order: int = 4) -> np.ndarray:
    """Zero-lag Butterworth low-pass along axis 0.

    x: (T, ...) samples at `rate_hz`; returns an array of the same shape (float64).
    The filter runs forward and backward (scipy `sosfiltfilt`), so there is no phase lag and the
    effective order is 2 * `order` (default 4 -> 8th order); the gain at `cutoff_hz` is 1/2
    (-6 dB) instead of the single pass's 1/sqrt(2). Edges: odd extension by 3 * rate/cutoff samples
    (at most T - 1), which keeps constants and straight lines exact but pulls second derivatives
    towards zero within about 1/cutoff s of each end (trim or pad trials where accelerations there
    matter). A signal of fewer than 2 samples is returned as is.
    NaNs are not allowed (they would spread over the whole signal).

    Raises FilterError (a ConfigError and ValueError) when cutoff_hz <= 0 or >= rate_hz / 2.
    """
    x = np.asarray(x, dtype=float)
    nyquist = 0.5 * float(rate_hz)
    if rate_hz <= 0 or not (0.0 < cutoff_hz < nyquist):
        raise FilterError(
            f"low-pass cutoff {cutoff_hz} Hz must lie in (0, Nyquist = {nyquist} Hz) for data at {rate_hz} Hz"
        )
    if order < 1:
        raise FilterError(f"filter order must be >= 1, got {order}")
    if x.shape[0] < 2:
        return x.copy()
    if not np.all(np.isfinite(x)):
        raise FilterError("cannot low-pass a signal containing NaN or inf; fill gaps first")
    sos = signal.butter(order, cutoff_hz / nyquist, btype="low", output="sos")
    # Pad (odd extension) by about three filter time constants so that the start-up transient dies
    # out before the data; scipy's default (~3 x filter length) is far too short at low cutoffs.
    padlen = min(max(3 * (2 * len(sos) + 1), 3 * int(math.ceil(rate_hz / cutoff_hz))), x.shape[0] - 1)
    return signal.sosfiltfilt(sos, x, axis=0, padlen=padlen)


def savgol_window_frames(n_frames: int, rate_hz: float, window_s: float, polyorder: int) -> int:
    """Odd Savitzky-Golay window (frames) for `window_s` seconds, > polyorder and <= n_frames.

    Returns 0 when the signal is too short for any window longer than polyorder (no smoothing).
    """
    w = int(round(window_s * rate_hz))
    w = max(w, polyorder + 1)
    if w % 2 == 0:
        w += 1
    if w > n_frames:
        w = n_frames if n_frames % 2 == 1 else n_frames - 1
    return w if w > polyorder else 0


def savgol_smooth(
    x: np.ndarray,
    rate_hz: float,
    window_s: float,
    polyorder: int = 3,
    clip: tuple[float | np.ndarray, float | np.ndarray] | None = None,
) -> np.ndarray:
    """Savitzky-Golay smoothing along axis 0 (time), e.g. of muscle activations.

    x: (T, ...) at `rate_hz`. The window `window_s` (s) becomes an odd number of frames, at least
    polyorder + 1 and at most T; signals too short for that are returned unsmoothed. `clip`
    (lo, hi) clips the result afterwards, e.g. (min_activation, 1.0) for activations; lo and hi may
    be arrays over the trailing axis (per-muscle control bounds).
    Returns float64 of the same shape.
    """
    x = np.asarray(x, dtype=float)
    if rate_hz <= 0 or window_s <= 0:
        raise FilterError(f"Savitzky-Golay needs rate_hz > 0 and window_s > 0, got {rate_hz}, {window_s}")
    if polyorder < 0:
        raise FilterError(f"polyorder must be >= 0, got {polyorder}")
    w = savgol_window_frames(x.shape[0], rate_hz, window_s, polyorder)
    out = x.copy() if w == 0 else signal.savgol_filter(x, w, polyorder, axis=0, mode="interp")
    if clip is not None:
        out = np.clip(out, clip[0], clip[1])
    return out
