"""QC checks on hand-built arrays: each check passes on good data and fails on bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biohuman.errors import InputFormatError, UnitsError
from biohuman.qc import FLAG_MEANINGS, FLAG_VALUES, QCConfig, run_qc

T = 100
MASS = 75.0
BW = MASS * 9.80665
COM_H = 0.95


def _good() -> dict:
    t = np.linspace(0, 1, T)
    joint = np.column_stack([80 * np.sin(2 * np.pi * t), 40 * np.cos(2 * np.pi * t), 0.2 * np.sin(t)])
    return dict(
        ik_rmse=np.full(T, 0.012),
        ik_max=np.full(T, 0.03),
        residual_force=np.column_stack([np.full(T, 10.0), np.full(T, 5.0), np.zeros(T)]),  # 11 N ~ 1.5 % BW
        residual_moment=np.column_stack([np.full(T, 4.0), np.zeros(T), np.full(T, 3.0)]),  # 5 N m
        reserve=0.02 * joint,  # 2 % of each joint's moment
        joint_moment=joint,
        so_violation=np.full(T, 1e-4),
        body_mass_kg=MASS,
        com_height_m=COM_H,
    )


def test_all_checks_pass_on_good_data() -> None:
    report = run_qc(**_good(), repairs=("filled 3-frame gap in RHEE",))
    assert report.summary == "pass"
    assert set(report.checks) == {
        "ik_marker_rmse_max", "ik_marker_error_max", "residual_force_max_pct_bw", "residual_force_rms_pct_bw",
        "residual_moment_max_nm", "residual_moment_rms_pct", "reserve_max_pct", "so_constraint_violation_max",
    }
    assert all(c.flag == 0 for c in report.checks.values())
    assert report.repairs == ("filled 3-frame gap in RHEE",)
    c = report.checks["residual_force_max_pct_bw"]
    assert c.value == pytest.approx(100 * np.hypot(10, 5) / BW)
    assert c.units == "percent" and c.threshold == 5.0
    assert report.checks["reserve_max_pct"].value == pytest.approx(2.0, rel=1e-6)
    json.dumps(report.as_dict())  # serialisable
    assert FLAG_VALUES == (0, 1) and FLAG_MEANINGS == "pass flagged"


@pytest.mark.parametrize(
    ("field", "value", "check"),
    [
        ("ik_rmse", lambda g: np.r_[g["ik_rmse"][:-1], 0.025], "ik_marker_rmse_max"),
        ("ik_max", lambda g: np.r_[g["ik_max"][:-1], 0.05], "ik_marker_error_max"),
        ("residual_force", lambda g: g["residual_force"] + [[0, 0.06 * BW, 0]] * (np.arange(T)[:, None] == 5),
         "residual_force_max_pct_bw"),
        ("residual_force", lambda g: np.tile([0.0, 0.03 * BW, 0.0], (T, 1)), "residual_force_rms_pct_bw"),
        ("residual_moment", lambda g: [[80.0, 0, 0]] * (np.arange(T)[:, None] == 7), "residual_moment_max_nm"),
        ("residual_moment", lambda g: np.tile([0.0, 0.0, 0.012 * COM_H * BW], (T, 1)), "residual_moment_rms_pct"),
        ("reserve", lambda g: g["reserve"] * 6.0, "reserve_max_pct"),
        ("so_violation", lambda g: np.r_[g["so_violation"][:-1], 0.05], "so_constraint_violation_max"),
    ],
)
def test_each_check_fails_on_bad_data(field: str, value, check: str) -> None:
    inputs = _good()
    inputs[field] = np.asarray(value(inputs), dtype=float)
    # peak external force 1.3 BW (walking): a single 80 N m frame then stays within the Hicks RMS limit
    ext = np.tile([0.0, 1.3 * BW, 0.0], (T, 1))
    report = run_qc(**inputs, external_force=ext if check != "residual_moment_rms_pct" else None)
    assert report.checks[check].flag == 1
    assert report.summary == "flagged"
    assert report.failed == (check,)


def test_tiny_joint_moments_use_the_floor() -> None:
    """A 0.05 N m reserve on a coordinate whose moment never exceeds 0.2 N m is 5 % of the 1 N m floor."""
    inputs = _good()
    inputs["reserve"] = np.zeros((T, 3))
    inputs["reserve"][:, 2] = 0.05
    report = run_qc(**inputs)
    assert report.checks["reserve_max_pct"].value == pytest.approx(5.0)
    assert report.checks["reserve_max_pct"].flag == 0


def test_external_force_sets_the_hicks_reference() -> None:
    inputs = _good()
    inputs["residual_moment"] = np.tile([0.0, 0.0, 0.012 * COM_H * BW], (T, 1))  # 1.2 % with BW
    ext = np.tile([0.0, 1.3 * BW, 0.0], (T, 1))  # peak external force 1.3 BW -> 0.92 %
    report = run_qc(**inputs, external_force=ext)
    assert report.checks["residual_moment_rms_pct"].flag == 0
    assert report.inputs["reference_force_n"] == pytest.approx(1.3 * BW)


def test_nonfinite_values_are_flagged_not_dropped() -> None:
    inputs = _good()
    inputs["ik_max"] = inputs["ik_max"].copy()
    inputs["ik_max"][3] = np.nan
    report = run_qc(**inputs)
    c = report.checks["ik_marker_error_max"]
    assert c.flag == 1 and "non-finite" in c.note
    assert report.summary == "flagged"


def test_missing_inputs_are_skipped() -> None:
    report = run_qc(residual_force=np.zeros((T, 3)), residual_moment=np.zeros((T, 3)), body_mass_kg=MASS,
                    com_height_m=COM_H)
    assert report.summary == "pass"
    assert set(report.skipped) == {"ik_marker_rmse_max", "ik_marker_error_max", "reserve_max_pct",
                                   "so_constraint_violation_max", "surrogate_extrapolated_pct"}


def test_surrogate_extrapolation_is_flagged_as_a_percentage_of_frames() -> None:
    inputs = _good()
    ex = np.zeros(T, dtype=bool)
    assert run_qc(**inputs, extrapolated=ex).checks["surrogate_extrapolated_pct"].flag == 0
    ex[:3] = True  # 3 of T frames leave the sampled box
    c = run_qc(**inputs, extrapolated=ex).checks["surrogate_extrapolated_pct"]
    assert c.value == pytest.approx(300.0 / T) and c.flag == 1 and c.units == "percent"
    loose = QCConfig(surrogate_extrapolated_max_pct=100.0)
    assert run_qc(**{**inputs, "config": loose}, extrapolated=ex).checks["surrogate_extrapolated_pct"].flag == 0


def test_bad_inputs_raise() -> None:
    inputs = _good()
    inputs["ik_max"] = inputs["ik_max"] * 1000.0  # millimetres
    with pytest.raises(UnitsError):
        run_qc(**inputs)
    inputs = _good()
    inputs["residual_force"] = np.zeros((T, 2))
    with pytest.raises(InputFormatError):
        run_qc(**inputs)
    inputs = _good()
    inputs["reserve"] = inputs["reserve"][:, :2]
    with pytest.raises(InputFormatError):
        run_qc(**inputs)
    with pytest.raises(InputFormatError):
        run_qc(**{**_good(), "body_mass_kg": 0.0})


def test_config_overrides() -> None:
    report = run_qc(**_good(), config=QCConfig(ik_marker_error_max_m=0.02))
    assert report.failed == ("ik_marker_error_max",)
