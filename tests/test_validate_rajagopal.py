"""Validation on OpenSim's Rajagopal walking trial (issue 6): IK, ID, estimated ground forces and
activations against OpenSim's reference results and EMG, solver-only and whole-chain.

One run of `validate_rajagopal` (about 3.5 min on 2 busy cores, most of it the one-off muscle
surrogate fit of our scaled model) feeds all the assertions. No reduced form: shorter windows put
the 6 Hz filter's edges into the comparison and save little (see `validate_rajagopal`).
Figures: docs/validation.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biohuman.validation.emg import compare_emg
from biohuman.validation.rajagopal import ID_COORDINATES, IK_COORDINATES, THRESHOLDS, validate_rajagopal
from biohuman.validation.report import _part_function, plot_rajagopal, to_json


@pytest.fixture(scope="module")
def result(external_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return validate_rajagopal(external_dir, tmp_path_factory.mktemp("validate_rajagopal"))


# ---- unit checks (no reference data) ---------------------------------------------------------


def test_emg_comparison_on_a_delayed_copy() -> None:
    """An activation that is the EMG delayed by the electromechanical delay agrees on every frame."""
    t_emg = np.arange(0.0, 2.0, 0.0005)
    burst = np.exp(-((t_emg - 0.6) / 0.08) ** 2) + 0.5 * np.exp(-((t_emg - 1.2) / 0.05) ** 2)
    emg = pd.DataFrame({"soleus": burst}, index=t_emg)
    t = np.arange(0.4, 1.5, 0.01)
    act = pd.DataFrame({"soleus_r": np.interp(t - 0.05, t_emg, burst)}, index=t)
    out = compare_emg(act, emg, {"soleus": "soleus_r"}, (0.4, 1.49), delay_s=0.05)
    assert out["channels"]["soleus"]["on_off_agreement_pct"] == pytest.approx(100.0)
    assert out["channels"]["soleus"]["r"] == pytest.approx(1.0, abs=1e-9)
    shifted = compare_emg(act, emg, {"soleus": "soleus_r"}, (0.4, 1.49), delay_s=0.0)
    assert shifted["channels"]["soleus"]["on_off_agreement_pct"] < 100.0


def test_missing_part_is_skipped() -> None:
    fn, why = _part_function("biohuman.validation.no_such_part", "validate")
    assert fn is None and "not available" in why


def test_to_json_drops_series_and_nan() -> None:
    out = to_json({"a": np.float64(np.nan), "b": np.arange(2), "_series": {"x": 1}, "c": np.bool_(True)})
    assert out == {"a": None, "b": [0, 1], "c": True}
    json.dumps(out, allow_nan=False)


# ---- reference checks ------------------------------------------------------------------------


@pytest.mark.slow
def test_ik_against_reference_coordinates(result: dict) -> None:
    """Hip flexion, knee and ankle within 3 deg RMSE of coordinates.sto, solver-only (the Rajagopal
    2016 pipeline's own scaled model, rebuilt from its applied ScaleSet and placed marker set:
    the model coordinates.sto's IK ran on) and whole-chain (our scaling + IK). IK on the shipped
    AddBiomechanics model is reported as a secondary figure: constant offsets (pelvis tilt, hip
    flexion ~6-8 deg), but within 3 deg once they are removed."""
    th = THRESHOLDS["ik_rmse_deg"]
    wc = result["whole_chain"]["ik"]["coordinates"]
    so = result["solver_only"]["ik"]["coordinates"]
    addb = result["solver_only"]["ik_addbiomechanics_model"]["coordinates"]
    for c in IK_COORDINATES:
        assert so[c]["rmse_deg"] <= th, (c, so[c])
        assert wc[c]["rmse_deg"] <= th, (c, wc[c])
        assert addb[c]["rmse_without_offset_deg"] <= th, (c, addb[c])
    assert result["acceptance"]["solver_only"]["ik_pass"]
    assert result["acceptance"]["whole_chain"]["ik_pass"]
    assert result["solver_only"]["original_model"]["markers"] > 30


@pytest.mark.slow
def test_id_solver_only_against_reference(result: dict) -> None:
    """nimble ID on the reference kinematics (6 Hz, as the reference) and force plates: RMSE <= 5 %
    of each coordinate's peak moment."""
    so = result["solver_only"]["id"]["coordinates"]
    for c in ID_COORDINATES:
        assert so[c]["rmse_pct_peak"] <= THRESHOLDS["id_rmse_pct_peak"], (c, so[c])
        assert so[c]["r"] > 0.99, (c, so[c])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="whole-chain ID differs from id_walk.sto by 6-28 % of peak (knee): "
                   "id_walk.sto pairs the AddBiomechanics model with the original pipeline's RRA kinematics; even "
                   "that pipeline's own model + marker IK differs from it by 4-15 % (see docs/validation.md)")
def test_id_whole_chain_acceptance(result: dict) -> None:
    assert result["acceptance"]["whole_chain"]["id_pass"]


@pytest.mark.slow
def test_estimated_ground_forces(result: dict) -> None:
    """Forces withheld: vertical GRF per foot within 10 % body weight RMSE; CoP error reported."""
    for part in ("solver_only", "whole_chain"):
        g = result[part]["grf"]
        assert g["vertical_rmse_pct_bw"] <= THRESHOLDS["grf_vertical_rmse_pct_bw"], (part, g)
        assert math.isfinite(g["cop_error_rms_cm"]) and g["cop_error_rms_cm"] > 0
        assert g["contact_agreement_pct"] > 90.0


@pytest.mark.slow
def test_activations_against_moco_inverse(result: dict) -> None:
    """Median per-muscle r >= 0.8 against MocoInverse's 18 muscles on 0.45-1.0 s."""
    for part in ("solver_only", "whole_chain"):
        a = result[part]["activation"]
        assert a["n_muscles_r"] >= 16, (part, a["n_muscles_r"])
        assert a["median_r"] >= THRESHOLDS["activation_median_r"], (part, a["median_r"])
        assert a["max_constraint_violation"] < 1e-4


@pytest.mark.slow
def test_emg_on_off_within_reference(result: dict) -> None:
    """On/off agreement with EMG within 10 points of OpenSim's reference solution's."""
    emg = result["emg"]
    ref = emg["reference_moco_inverse"]["mean_agreement_pct"]
    assert 50.0 < ref <= 100.0
    for key in ("solver_only_18musc", "whole_chain_same_muscles"):
        assert emg[key]["mean_agreement_pct"] >= ref - THRESHOLDS["emg_agreement_margin_pct"], (key, emg[key])
        assert set(emg[key]["channels"]) == set(emg["reference_moco_inverse"]["channels"])


@pytest.mark.slow
def test_report_json_and_plots(result: dict, tmp_path: Path) -> None:
    paths = plot_rajagopal(result, tmp_path)
    assert [p.name for p in paths] == ["ik.png", "id.png", "grf.png", "activation.png", "emg_onoff.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    text = json.dumps(to_json(result), allow_nan=False)
    assert "_series" not in text and "_states" not in text
