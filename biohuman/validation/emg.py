"""Muscle activations vs measured EMG: timing (on/off) agreement and correlation.

EMG amplitude is not comparable with activation (electrode placement, normalisation), so only
shape and timing are compared (CATALOG §1a). Method, identical for our activations and for
OpenSim's reference solution on the same muscles and window:

1. the EMG (`electromyography.sto`: band-passed, rectified, low-passed, each channel normalised
   to its trial maximum) is delayed by `EMD_S` (electromechanical delay: the EMG leads the
   force it causes) and interpolated onto the activation's times;
2. both signals are min-max normalised over the compared window;
3. a muscle is "on" where its normalised signal is >= `ON_THRESHOLD`;
4. per muscle: Pearson r of the two signals and on/off agreement = % of frames in the same state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.errors import InputFormatError

EMD_S = 0.05
"""Electromechanical delay (s) applied to the EMG: mid-range of the 10-100 ms reported for gait."""
ON_THRESHOLD = 0.25
"""A muscle is on where its min-max normalised signal (EMG or activation) is >= this."""

EMG_TO_18MUSC: dict[str, str] = {
    "soleus": "soleus_r", "gastrocnemius": "med_gas_r", "tibialis_anterior": "tib_ant_r",
    "medial_hamstrings": "semimem_r", "biceps_femoris": "bifemsh_r", "vastus_lateralis": "vas_int_r",
    "vastus_medius": "vas_int_r", "rectus_femoris": "rect_fem_r", "gluteus_maximus": "glut_max2_r",
}
"""EMG channel (right leg) -> muscle of the 18-muscle MocoInverse model (no gluteus medius there;
biceps femoris is only represented by its short head, the vasti by vastus intermedius)."""

EMG_TO_RAJAGOPAL: dict[str, str] = {
    "soleus": "soleus_r", "gastrocnemius": "gasmed_r", "tibialis_anterior": "tibant_r",
    "medial_hamstrings": "semimem_r", "biceps_femoris": "bflh_r", "vastus_lateralis": "vaslat_r",
    "vastus_medius": "vasmed_r", "rectus_femoris": "recfem_r", "gluteus_maximus": "glmax2_r",
    "gluteus_medius": "glmed2_r",
}
"""EMG channel -> the anatomically matching Rajagopal2015 muscle (80-muscle model)."""


def read_emg(path: str | Path) -> pd.DataFrame:
    """Processed EMG (time x channel, normalised 0-1) from an OpenSim .sto."""
    from biohuman.io.storage import read_storage

    table = read_storage(path).table
    if table.empty:
        raise InputFormatError("EMG file has no rows", path)
    return table


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.zeros_like(x) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def compare_emg(activation: pd.DataFrame, emg: pd.DataFrame, mapping: Mapping[str, str],
                window: tuple[float, float], *, delay_s: float = EMD_S, threshold: float = ON_THRESHOLD) -> dict:
    """Per EMG channel in `mapping` (channel -> activation column): r and on/off agreement (%)
    over the activation's frames inside `window` (s); see the module docstring. Also returns the
    on/off states (for plots) and the mean agreement and median r over channels."""
    t = activation.index.to_numpy(dtype=float)
    t = t[(t >= window[0] - 1e-9) & (t <= window[1] + 1e-9)]
    te = emg.index.to_numpy(dtype=float)
    if t[0] - delay_s < te[0] or t[-1] - delay_s > te[-1]:
        raise InputFormatError(f"EMG covers {te[0]:.3f}-{te[-1]:.3f} s, the window needs "
                               f"{t[0] - delay_s:.3f}-{t[-1] - delay_s:.3f} s")
    per: dict[str, dict] = {}
    states: dict[str, dict] = {}
    for ch, col in mapping.items():
        if ch not in emg.columns:
            raise InputFormatError(f"EMG has no channel {ch!r}")
        e = _minmax(np.interp(t - delay_s, te, emg[ch].to_numpy(dtype=float)))
        a = _minmax(np.interp(t, activation.index.to_numpy(dtype=float), activation[col].to_numpy(dtype=float)))
        on_e, on_a = e >= threshold, a >= threshold
        r = float(np.corrcoef(a, e)[0, 1]) if a.std() > 1e-12 and e.std() > 1e-12 else float("nan")
        per[ch] = {"muscle": col, "r": r, "on_off_agreement_pct": 100.0 * float(np.mean(on_e == on_a)),
                   "emg_on_pct": 100.0 * float(np.mean(on_e)), "activation_on_pct": 100.0 * float(np.mean(on_a))}
        states[ch] = {"time": t.tolist(), "emg_on": on_e.tolist(), "activation_on": on_a.tolist()}
    rs = [v["r"] if math.isfinite(v["r"]) else 0.0 for v in per.values()]
    return {"channels": per, "mean_agreement_pct": float(np.mean([v["on_off_agreement_pct"] for v in per.values()])),
            "median_r": float(np.median(rs)), "window_s": [float(t[0]), float(t[-1])], "frames": int(len(t)),
            "delay_s": delay_s, "threshold": threshold, "_states": states}


__all__ = ["EMD_S", "EMG_TO_18MUSC", "EMG_TO_RAJAGOPAL", "ON_THRESHOLD", "compare_emg", "read_emg"]
