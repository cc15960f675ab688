"""Metrics of biohuman.train.metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biohuman.train import metrics as M


def test_pcc_hand_case_excludes_constant_labels_and_scores_constant_predictions_zero() -> None:
    # muscle 0: pred [1,2,3] vs label [1,2,4]: cov 3, var_p 2, var_y 14/3 -> r = 3 / sqrt(28/3)
    # muscle 1: label constant -> excluded; muscle 2: prediction constant, label varies -> 0
    pred = np.array([[1, 5, 0.3], [2, 6, 0.3], [3, 7, 0.3]], float)
    label = np.array([[1, 0.2, 0.0], [2, 0.2, 1.0], [4, 0.2, 0.0]], float)
    r0 = 3.0 / math.sqrt(28.0 / 3.0)
    assert M.pcc_sample(pred, label) == pytest.approx((r0 + 0.0) / 2)
    # averaged over samples: a perfect second sample
    assert M.pcc([pred, label], [label, label]) == pytest.approx(((r0 + 0.0) / 2 + 1.0) / 2)
    assert np.allclose(M.pcc_per_muscle([pred], [label]), [r0, np.nan, 0.0], equal_nan=True)


def test_rmse_nrmse_active_mae_hand_cases() -> None:
    pred = np.array([[0.1, 0.2], [0.3, 0.4]])
    zero = np.zeros((2, 2))
    assert M.rmse([pred], [zero]) == pytest.approx(math.sqrt((0.01 + 0.04 + 0.09 + 0.16) / 4))
    # nRMSE: muscle 0 label [0, 1] (SD 0.5), prediction 0 -> RMSE sqrt(0.5); muscle 1 constant -> excluded
    label = np.array([[0.0, 0.3], [1.0, 0.3]])
    assert M.nrmse([np.zeros((2, 2))], [label]) == pytest.approx(math.sqrt(0.5) / 0.5)
    # pooled over samples: label [0] and [1] in two samples pool to SD 0.5 as well
    assert M.nrmse([np.zeros((1, 1)), np.zeros((1, 1))], [np.zeros((1, 1)), np.ones((1, 1))]) == pytest.approx(
        math.sqrt(0.5) / 0.5)
    # Active-MAE: only labels > 0.10 count: |0.1-0.2| and |0.7-0.5|
    assert M.active_mae([np.array([[0.0], [0.1], [0.7]])], [np.array([[0.05], [0.2], [0.5]])]) == pytest.approx(0.15)
    assert math.isnan(M.active_mae([np.zeros((2, 1))], [np.full((2, 1), 0.1)]))  # 0.10 itself is not active


def test_joint_angle_rmse_in_degrees() -> None:
    assert M.joint_angle_rmse_deg([np.array([[3.0, -4.0]])], [np.zeros((1, 2))]) == pytest.approx(math.sqrt(12.5))


def test_mpjpe_is_root_relative_and_pa_mpjpe_removes_similarity() -> None:
    rng = np.random.default_rng(0)
    label = rng.normal(size=(4, 6, 3))
    # translation only: MPJPE 0
    assert M.mpjpe_mm([label + np.array([1.0, 2.0, 3.0])], [label]) == pytest.approx(0.0, abs=1e-9)
    # one joint (not the root) off by (0.003, 0.004, 0) m in every frame -> 5 mm on 1 of 6 joints
    off = label.copy()
    off[:, 2] += [0.003, 0.004, 0.0]
    assert M.mpjpe_mm([off], [label]) == pytest.approx(5.0 / 6.0)
    # scale 2, a rotation and a translation: PA-MPJPE 0, MPJPE not
    a = 0.7
    R = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    sim = 2.0 * label @ R.T + np.array([0.5, -1.0, 2.0])
    assert M.pa_mpjpe_mm([sim], [label]) == pytest.approx(0.0, abs=1e-6)
    assert M.mpjpe_mm([sim], [label]) > 100.0


def test_pa_mpjpe_hand_case() -> None:
    # label: a cross; prediction squashes the y arm to the origin. The best similarity is the
    # identity (cross-covariance diag(2,0,0), scale 2/2): errors 0, 0, 1, 1 m -> 500 mm.
    label = np.array([[[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]]])
    pred = np.array([[[1.0, 0, 0], [-1, 0, 0], [0, 0, 0], [0, 0, 0]]])
    assert M.pa_mpjpe_mm([pred], [label]) == pytest.approx(500.0)
    # a mirrored prediction is not undone (reflections excluded)
    chiral = np.array([[[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]])
    assert M.pa_mpjpe_mm([chiral * np.array([1.0, 1.0, -1.0])], [chiral]) > 1.0


def test_compute_metrics_matches_the_direct_definitions() -> None:
    rng = np.random.default_rng(1)
    samples = []
    for i in range(5):
        T = 20 + i
        samples.append({"subject": f"s{i % 3}",
                        "pred_activation": rng.uniform(size=(T, 4)), "label_activation": rng.uniform(size=(T, 4)),
                        "pred_coords_deg": rng.normal(size=(T, 3)), "label_coords_deg": rng.normal(size=(T, 3)),
                        "pred_joints": rng.normal(size=(T, 5, 3)), "label_joints": rng.normal(size=(T, 5, 3))})
    got = M.compute_metrics(samples)
    for name, (q, fn) in M.METRICS.items():
        want = fn([s[f"pred_{q}"] for s in samples], [s[f"label_{q}"] for s in samples])
        assert got[name] == pytest.approx(want, rel=1e-9), name
    # a method without pose predictions has no pose metrics
    act_only = [{k: v for k, v in s.items() if "activation" in k or k == "subject"} for s in samples]
    assert set(M.compute_metrics(act_only)) == {"pcc", "rmse", "nrmse", "active_mae"}


def test_per_subject_bootstrap_hand_case() -> None:
    # subject A errs 0.1 everywhere, B 0.3 (same frame counts). Replicates: AA -> 0.1 (p 1/4),
    # AB/BA -> sqrt(0.05) (p 1/2), BB -> 0.3 (p 1/4): the 95 % interval is [0.1, 0.3].
    y = np.zeros((10, 2))
    samples = [{"subject": "A", "pred_activation": y + 0.1, "label_activation": y},
               {"subject": "B", "pred_activation": y + 0.3, "label_activation": y}]
    out = M.metrics_with_ci(samples, n_boot=2000, seed=3)
    assert out["rmse"] == pytest.approx(math.sqrt(0.05))
    assert out["rmse_ci95"] == pytest.approx([0.1, 0.3])
    assert out["n_subjects"] == 2 and out["n_samples"] == 2
    # two samples of one subject always travel together: identical subjects give a zero-width CI
    same = [{"subject": "A", "pred_activation": y + 0.1, "label_activation": y},
            {"subject": "B", "pred_activation": y + 0.1, "label_activation": y}]
    lo, hi = M.metrics_with_ci(same, n_boot=200, seed=0)["rmse_ci95"]
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    # deterministic for a seed
    assert repr(M.metrics_with_ci(samples, n_boot=300, seed=5)) == repr(M.metrics_with_ci(samples, n_boot=300, seed=5))
