"""Zero-lag Butterworth low-pass, Savitzky-Golay smoothing and the default cutoffs."""

from __future__ import annotations

import numpy as np
import pytest

from biohuman.dynamics.filters import (
    CUTOFF_BY_MOTION,
    DEFAULT_CUTOFF_HZ,
    FilterError,
    cutoff_for,
    lowpass,
    savgol_smooth,
    savgol_window_frames,
)
from biohuman.errors import BiohumanError


def _sine(freq: float, rate: float, seconds: float, phase: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(0.0, seconds, 1.0 / rate)
    return t, np.sin(2 * np.pi * freq * t + phase)


def test_lowpass_keeps_slow_removes_fast_without_lag() -> None:
    t, slow = _sine(2.0, 200.0, 4.0)
    _, fast = _sine(40.0, 200.0, 4.0)
    y = lowpass(slow + fast, 200.0, 10.0)
    core = slice(100, -100)  # away from the edges
    assert np.max(np.abs(y[core] - slow[core])) < 0.01
    # zero lag: the cross-correlation of output and slow input peaks at lag 0
    a, b = y[core], slow[core]
    lags = range(-5, 6)
    corr = [np.dot(np.roll(a, k), b) for k in lags]
    assert list(lags)[int(np.argmax(corr))] == 0


def test_lowpass_gain_at_cutoff_is_one_half() -> None:
    """filtfilt squares the Butterworth magnitude: |H(fc)|^2 = 1/2."""
    _, x = _sine(8.0, 500.0, 6.0)
    y = lowpass(x, 500.0, 8.0, order=4)
    amp = np.max(np.abs(y[1000:-1000]))
    assert amp == pytest.approx(0.5, abs=0.02)


def test_lowpass_multidimensional_and_short() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2, 3))
    y = lowpass(x, 100.0, 6.0)
    assert y.shape == x.shape
    # each channel filtered independently
    np.testing.assert_allclose(y[:, 1, 2], lowpass(x[:, 1, 2], 100.0, 6.0))
    short = lowpass(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 100.0, 6.0)
    assert short.shape == (5,) and np.all(np.isfinite(short))
    np.testing.assert_allclose(lowpass(np.array([[3.0, 4.0]]), 100.0, 6.0), [[3.0, 4.0]])
    # a constant and a straight line pass unchanged (odd padding)
    np.testing.assert_allclose(lowpass(np.full(30, 2.5), 100.0, 6.0), 2.5, atol=1e-9)
    line = np.linspace(0.0, 1.0, 40)
    np.testing.assert_allclose(lowpass(line, 100.0, 6.0), line, atol=1e-3)
    long_line = np.linspace(0.0, 1.0, 300)
    np.testing.assert_allclose(lowpass(long_line, 100.0, 6.0), long_line, atol=1e-5)


@pytest.mark.parametrize("cutoff", [50.0, 60.0, 0.0, -1.0])
def test_lowpass_rejects_bad_cutoff(cutoff: float) -> None:
    with pytest.raises(FilterError) as info:
        lowpass(np.zeros(100), 100.0, cutoff)
    assert isinstance(info.value, BiohumanError) and isinstance(info.value, ValueError)
    assert "Nyquist" in str(info.value)


def test_lowpass_rejects_nan() -> None:
    x = np.zeros(100)
    x[10] = np.nan
    with pytest.raises(FilterError):
        lowpass(x, 100.0, 6.0)


def test_savgol_window_conversion() -> None:
    assert savgol_window_frames(1000, 100.0, 0.2, 3) == 21  # 20 frames -> odd 21
    assert savgol_window_frames(1000, 100.0, 0.15, 3) == 15
    assert savgol_window_frames(10, 100.0, 0.5, 3) == 9  # clipped to the signal, kept odd
    assert savgol_window_frames(3, 100.0, 0.5, 3) == 0  # too short: no smoothing


def test_savgol_preserves_cubic_and_clips() -> None:
    t = np.linspace(0, 1, 101)
    cubic = 0.2 + 0.5 * t - 0.3 * t**2 + 0.4 * t**3
    np.testing.assert_allclose(savgol_smooth(cubic, 100.0, 0.2, polyorder=3), cubic, atol=1e-10)
    rng = np.random.default_rng(1)
    noisy = np.clip(0.5 + 0.6 * np.sin(6 * t)[:, None] + rng.normal(0, 0.05, (101, 4)), 0, 1)
    sm = savgol_smooth(noisy, 100.0, 0.2, clip=(0.01, 1.0))
    assert sm.shape == noisy.shape
    assert sm.min() >= 0.01 and sm.max() <= 1.0
    assert np.std(np.diff(sm, axis=0)) < np.std(np.diff(noisy, axis=0))
    short = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(savgol_smooth(short, 100.0, 0.5), short)


def test_savgol_keeps_each_muscle_within_its_control_bounds() -> None:
    """An activation that jumps off its floor makes Savitzky-Golay ring below the floor; the
    per-muscle bounds (min_control of each muscle) keep the smoothed label inside them."""
    from biohuman.osim.model import model_info

    t = np.arange(100) / 100.0
    floor = np.array([0.01, 0.02, 0.0])
    raw = np.where(t[:, None] < 0.5, floor, 0.8)
    free = savgol_smooth(raw, 100.0, 0.09)
    assert (free < floor - 1e-4).any(axis=0)[:2].all()  # ringing under the floor of the first two
    sm = savgol_smooth(raw, 100.0, 0.09, clip=(floor, np.ones(3)))
    assert np.all(sm >= floor) and np.all(sm <= 1.0)
    np.testing.assert_allclose(sm[:30], raw[:30])  # away from the jump nothing changes
    lo, hi = model_info(None).activation_bounds()  # Rajagopal2015: OpenSim's own bounds, read from the model
    assert len(lo) == 80 and np.allclose(lo, 0.01) and np.allclose(hi, 1.0)


def test_default_cutoffs() -> None:
    assert CUTOFF_BY_MOTION["walk"] == 6.0
    assert CUTOFF_BY_MOTION["run"] == 12.0
    assert CUTOFF_BY_MOTION["jump"] == 15.0
    for m in ("squat", "sit_to_stand", "lunge", "arm_raise"):
        assert CUTOFF_BY_MOTION[m] == 6.0
    assert cutoff_for("cartwheel") == DEFAULT_CUTOFF_HZ
