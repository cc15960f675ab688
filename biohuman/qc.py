"""Quality control of one trial's labels: IK marker errors, residual loads, reserves and static
optimization constraint violation, each compared with a published threshold.

A trial that fails a check is flagged (flag 1), never dropped; the dataset keeps it with its flags.

Default thresholds (QCConfig) and their sources:
- IK: "maximum marker error ... less than 2-4 cm, RMS under 2 cm" (OpenSim documentation,
  Getting Started with Inverse Kinematics / Simulation with OpenSim - Best Practices).
- Residual forces: peak < 5 % of the peak external force (Hicks, Uchida, Seth, Rajagopal & Delp
  2015, "Is my model good enough? Best practices for verification and validation of
  musculoskeletal models and simulations of movement", J Biomech Eng 137:020905). Here the
  reference force is body weight (about 0.8-0.9 of the peak external force in walking, so
  slightly stricter). RMS < half of that, following the ratio of the RMS and peak limits in
  OpenSim's residual guidance (RMS 5-10 N vs peak 10-20 N).
- Residual moments: peak < 75 N m (OpenSim documentation, Reserves and Residuals: "peak residual
  moments less than 75 Nm"); RMS < 1 % of COM height x peak external force (Hicks et al. 2015).
- Reserve actuators: peak < 10 % of the peak joint moment of the same coordinate (OpenSim
  documentation, Reserves and Residuals: "Peak reserve actuator torques should typically be less
  than 10% of the peak joint torque").
- Static optimization constraint violation (|muscle + reserve moment - ID moment|): peak
  < 0.01 N m, i.e. < 0.1 % of typical lower-limb joint moments; it catches failed solves, not
  round-off (float32 on GPU reaches ~1e-3 N m).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from biohuman.errors import InputFormatError, UnitsError

GRAVITY = 9.80665
"""Standard gravity (m/s^2) for body weight."""

FLAG_VALUES: tuple[int, int] = (0, 1)
FLAG_MEANINGS = "pass flagged"
"""CF flag_values / flag_meanings for the per-check flags stored in a trial's NetCDF."""


@dataclass(frozen=True)
class QCConfig:
    """QC thresholds (see module docstring for sources). Units: m, %, N m."""

    ik_marker_rmse_max_m: float = 0.02
    ik_marker_error_max_m: float = 0.04
    residual_force_max_pct_bw: float = 5.0
    residual_force_rms_pct_bw: float = 2.5
    residual_moment_max_nm: float = 75.0
    residual_moment_rms_pct: float = 1.0
    reserve_max_pct: float = 10.0
    reserve_floor_nm: float = 1.0
    """Joint moments below this (N m) count as this when forming the reserve percentage."""
    so_violation_max_nm: float = 0.01
    surrogate_extrapolated_max_pct: float = 0.0
    """Frames (%) whose pose leaves the muscle surrogate's sampled box (muscle geometry extrapolated)."""


@dataclass(frozen=True)
class QCCheck:
    """One check: the trial's value, the threshold it must not exceed, and the flag (0/1)."""

    name: str
    value: float
    threshold: float
    flag: int
    units: str
    long_name: str
    note: str = ""


@dataclass
class QCReport:
    """Result of run_qc: checks by name, repairs applied upstream, checks skipped for lack of data."""

    checks: dict[str, QCCheck]
    repairs: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    inputs: dict = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """"pass" when every check passes, else "flagged"."""
        return "flagged" if any(c.flag for c in self.checks.values()) else "pass"

    @property
    def flags(self) -> dict[str, int]:
        """Check name -> flag (0 pass, 1 fail)."""
        return {name: c.flag for name, c in self.checks.items()}

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of failed checks."""
        return tuple(name for name, c in self.checks.items() if c.flag)

    def as_dict(self) -> dict:
        """JSON-serialisable form (NaN stays float('nan'))."""
        return {
            "summary": self.summary,
            "checks": {name: asdict(c) for name, c in self.checks.items()},
            "repairs": list(self.repairs),
            "skipped": list(self.skipped),
            "inputs": dict(self.inputs),
        }


def _array(x: np.ndarray | None, name: str, ndim: int, last: int | None = None) -> np.ndarray | None:
    if x is None:
        return None
    a = np.asarray(x, dtype=float)
    if a.ndim == ndim - 1 and ndim == 2 and last is None:
        a = a[:, None]
    if a.ndim != ndim or (last is not None and a.shape[-1] != last) or a.shape[0] == 0:
        shape = "(T,)" if ndim == 1 else f"(T, {last if last is not None else 'K'})"
        raise InputFormatError(f"QC input {name} must have shape {shape}, got {a.shape}")
    return a


def _check(name: str, values: np.ndarray, reduce: str, threshold: float, units: str, long_name: str,
           scale: float = 1.0) -> QCCheck:
    """Reduce `values` (max, rms or mean over all entries) times `scale`, compare with threshold."""
    finite = np.isfinite(values)
    note = ""
    if not finite.all():
        note = f"{int((~finite).sum())} non-finite values"
    v = values[finite]
    if v.size == 0:
        value = float("nan")
    elif reduce == "max":
        value = float(np.max(v)) * scale
    elif reduce == "mean":
        value = float(np.mean(v)) * scale
    else:
        value = float(np.sqrt(np.mean(v**2))) * scale
    flag = int(not np.isfinite(value) or value > threshold or bool(note))
    return QCCheck(name=name, value=value, threshold=float(threshold), flag=flag, units=units,
                   long_name=long_name, note=note)


def run_qc(
    *,
    ik_rmse: np.ndarray | None = None,
    ik_max: np.ndarray | None = None,
    residual_force: np.ndarray | None = None,
    residual_moment: np.ndarray | None = None,
    reserve: np.ndarray | None = None,
    joint_moment: np.ndarray | None = None,
    so_violation: np.ndarray | None = None,
    body_mass_kg: float,
    com_height_m: float,
    config: QCConfig = QCConfig(),
    external_force: np.ndarray | None = None,
    repairs: Sequence[str] = (),
    extrapolated: np.ndarray | None = None,
) -> QCReport:
    """Run the QC checks that the given data allow; inputs left as None are skipped.

    ik_rmse (T,) m: per-frame RMS marker error; ik_max (T,) m: per-frame max marker error.
    residual_force (T, 3) N and residual_moment (T, 3) N m: pelvis residuals (their magnitude per
    frame is checked). reserve (T, K) N m and joint_moment (T, K) N m: reserve actuator moments and
    inverse-dynamics moments of the same K coordinates. so_violation (T,) N m: per-frame max
    |muscle + reserve moment - ID moment|. extrapolated (T,) bool: frames outside the batched
    solver's muscle-surrogate box (muscle geometry extrapolated). body_mass_kg, com_height_m: the subject (COM height in
    standing, m). external_force (T, 3) N: total ground reaction force; its peak magnitude is the
    reference force of the Hicks RMS residual-moment check (body weight when None).
    Non-finite values fail the check they enter. Returns a QCReport; `repairs` is passed through.
    """
    if not body_mass_kg > 0 or not com_height_m > 0:
        raise InputFormatError(f"body mass ({body_mass_kg} kg) and COM height ({com_height_m} m) must be > 0")
    bw = body_mass_kg * GRAVITY
    checks: dict[str, QCCheck] = {}
    skipped: list[str] = []

    ik_rmse = _array(ik_rmse, "ik_rmse", 1)
    ik_max = _array(ik_max, "ik_max", 1)
    for name, arr in (("ik_rmse", ik_rmse), ("ik_max", ik_max)):
        if arr is not None and np.nanmedian(arr) > 1.0:
            raise UnitsError(f"QC input {name} has median {np.nanmedian(arr):.3g}; expected metres (millimetres given?)")
    if ik_rmse is not None:
        checks["ik_marker_rmse_max"] = _check(
            "ik_marker_rmse_max", ik_rmse, "max", config.ik_marker_rmse_max_m, "m",
            "largest per-frame RMS marker error of inverse kinematics")
    else:
        skipped.append("ik_marker_rmse_max")
    if ik_max is not None:
        checks["ik_marker_error_max"] = _check(
            "ik_marker_error_max", ik_max, "max", config.ik_marker_error_max_m, "m",
            "largest marker error of inverse kinematics")
    else:
        skipped.append("ik_marker_error_max")

    residual_force = _array(residual_force, "residual_force", 2, 3)
    if residual_force is not None:
        mag = np.linalg.norm(residual_force, axis=1)
        checks["residual_force_max_pct_bw"] = _check(
            "residual_force_max_pct_bw", mag, "max", config.residual_force_max_pct_bw, "percent",
            "peak residual force magnitude, % body weight", 100.0 / bw)
        checks["residual_force_rms_pct_bw"] = _check(
            "residual_force_rms_pct_bw", mag, "rms", config.residual_force_rms_pct_bw, "percent",
            "RMS residual force magnitude, % body weight", 100.0 / bw)
    else:
        skipped += ["residual_force_max_pct_bw", "residual_force_rms_pct_bw"]

    residual_moment = _array(residual_moment, "residual_moment", 2, 3)
    ref_force = bw
    if external_force is not None:
        ef = _array(external_force, "external_force", 2, 3)
        peak = float(np.nanmax(np.linalg.norm(ef, axis=1)))
        if np.isfinite(peak) and peak > 0:
            ref_force = peak
    if residual_moment is not None:
        mag = np.linalg.norm(residual_moment, axis=1)
        checks["residual_moment_max_nm"] = _check(
            "residual_moment_max_nm", mag, "max", config.residual_moment_max_nm, "N m",
            "peak residual moment magnitude")
        checks["residual_moment_rms_pct"] = _check(
            "residual_moment_rms_pct", mag, "rms", config.residual_moment_rms_pct, "percent",
            "RMS residual moment, % of COM height x peak external force", 100.0 / (com_height_m * ref_force))
    else:
        skipped += ["residual_moment_max_nm", "residual_moment_rms_pct"]

    reserve = _array(reserve, "reserve", 2)
    joint_moment = _array(joint_moment, "joint_moment", 2)
    if reserve is not None and joint_moment is not None:
        if reserve.shape != joint_moment.shape:
            raise InputFormatError(f"reserve {reserve.shape} and joint_moment {joint_moment.shape} must have the same shape")
        peak_res = np.max(np.abs(reserve), axis=0)
        peak_id = np.maximum(np.max(np.abs(joint_moment), axis=0), config.reserve_floor_nm)
        pct = 100.0 * peak_res / peak_id  # (K,), NaN propagates into the check
        checks["reserve_max_pct"] = _check(
            "reserve_max_pct", pct, "max", config.reserve_max_pct, "percent",
            "largest peak reserve moment, % of the peak joint moment of its coordinate")
    else:
        skipped.append("reserve_max_pct")

    so_violation = _array(so_violation, "so_violation", 1)
    if so_violation is not None:
        checks["so_constraint_violation_max"] = _check(
            "so_constraint_violation_max", np.abs(so_violation), "max", config.so_violation_max_nm, "N m",
            "largest static-optimization moment-constraint violation")
    else:
        skipped.append("so_constraint_violation_max")

    if extrapolated is not None:
        ex = np.asarray(extrapolated, dtype=float).reshape(-1)
        checks["surrogate_extrapolated_pct"] = _check(
            "surrogate_extrapolated_pct", ex, "mean", config.surrogate_extrapolated_max_pct, "percent",
            "frames whose pose leaves the muscle-geometry surrogate's sampled box, %", 100.0)
    else:
        skipped.append("surrogate_extrapolated_pct")

    inputs = {"body_mass_kg": float(body_mass_kg), "com_height_m": float(com_height_m),
              "body_weight_n": bw, "reference_force_n": float(ref_force)}
    return QCReport(checks=checks, repairs=tuple(repairs), skipped=tuple(skipped), inputs=inputs)
